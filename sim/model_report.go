package sim

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/mqmesh/mqmesh/backlog"
)

// ModelResult is the outcome of one model run (one size).
type ModelResult struct {
	Hosts int `json:"hosts"`
	// Tasks: enqueued, completed, still ready or leased at the end
	// (stranded) and unaccounted for (lost: always 0 unless the model is
	// wrong).
	Enqueued  int64 `json:"enqueued"`
	Completed int64 `json:"completed"`
	Stranded  int64 `json:"stranded"`
	Lost      int64 `json:"lost"`
	// Retries: handler failures put back on their node (error rates).
	Retries int64 `json:"retries"`
	// Crashed nodes (kill-nodes), summarizer Elections after the first,
	// Refused enqueues (arrivals at a crashed node), Summaries published.
	Crashed   int64  `json:"crashed"`
	Elections int64  `json:"elections"`
	Refused   int64  `json:"refused"`
	Summaries uint64 `json:"summaries"`
	// WorkerOnly pools (no node of their own).
	WorkerOnly int `json:"worker_only_pools"`
	// Drained says the backlog reached zero after the load; DrainedAfterS
	// is when the last task finished, after the end of the load.
	Drained       bool    `json:"drained"`
	DrainedAfterS float64 `json:"drained_after_s"`
	PeakBacklog   uint64  `json:"peak_backlog"`
	P50Ms         float64 `json:"p50_ms"` // enqueue → done, whole run
	P99Ms         float64 `json:"p99_ms"`
	// Locality of the whole run: own host, same IDC, other IDC.
	Local    float64 `json:"local_share"`
	SameIDC  float64 `json:"same_idc_share"`
	OtherIDC float64 `json:"other_idc_share"`
	// Notices per tier; NoticesPerWorker is the sum per worker per second.
	Notices          []ModelTier `json:"notices"`
	NoticesPerWorker float64     `json:"notices_per_worker_per_s"`
	// Fault is the first kill-pools or degrade of the timeline.
	Fault  *ModelFaultResult `json:"fault,omitempty"`
	Phases []ModelPhase      `json:"phases"`
	// Work done by the model.
	VirtualS  float64 `json:"virtual_s"`
	Events    uint64  `json:"events"`
	Decisions uint64  `json:"decisions"`
	Pulls     uint64  `json:"pulls"`
	// ViewChecks compared a pool's copy of its view with View.Entries();
	// ViewMismatches must be 0. StaleNotices (out of order) must be 0 too.
	ViewChecks     uint64 `json:"view_checks"`
	ViewMismatches uint64 `json:"view_mismatches"`
	StaleNotices   uint64 `json:"stale_notices"`
}

// ModelTier is one tier's notices.
type ModelTier struct {
	Tier string `json:"tier"`
	// Subscribed: the filter hears the tier; MaxRate is its cap per worker.
	Subscribed bool    `json:"subscribed"`
	MaxRate    float64 `json:"max_rate"`
	// Published by all nodes; Delivered to pools (queue notices and node
	// heartbeats); PerWorkerPerS = delivered / pool-seconds alive;
	// HeartbeatPerWorkerPerS is the heartbeats' part.
	Published              uint64  `json:"published"`
	Delivered              uint64  `json:"delivered"`
	Heartbeats             uint64  `json:"heartbeats_delivered"`
	PerWorkerPerS          float64 `json:"per_worker_per_s"`
	HeartbeatPerWorkerPerS float64 `json:"heartbeat_per_worker_per_s"`
	// Accepted and Dropped (over MaxRate) by the views (View.Stats) of the
	// notices applied to them.
	Accepted uint64 `json:"accepted"`
	Dropped  uint64 `json:"dropped"`
}

// ModelFaultResult measures the help a faulted IDC got.
type ModelFaultResult struct {
	Action string  `json:"action"`
	IDC    string  `json:"idc"`
	StartS float64 `json:"start_s"`
	EndS   float64 `json:"end_s"`
	// FirstHelpS: from the start of the fault to the first task of the
	// IDC's nodes started by a pool of another IDC (-1: never).
	FirstHelpS float64 `json:"first_help_s"`
	// HalfHelpedS: until half the IDC's nodes had been helped (-1: never);
	// NodesHelped of Nodes were helped at all during the fault.
	HalfHelpedS float64 `json:"half_nodes_helped_s"`
	NodesHelped int     `json:"nodes_helped"`
	Nodes       int     `json:"nodes"`
	// Helpers: pools that ran tasks of the IDC during the fault, of
	// Candidates (the pools of the other IDCs); tasks helped per helper:
	// max, mean, and their ratio (1 = perfectly even).
	Helpers       int     `json:"helpers"`
	Candidates    int     `json:"candidates"`
	HelpedTasks   int64   `json:"helped_tasks"`
	HelperMax     int64   `json:"helper_max"`
	HelperMean    float64 `json:"helper_mean"`
	HelperMaxMean float64 `json:"helper_max_over_mean"`
	// PeakBacklog of the IDC during the fault.
	PeakBacklog uint64 `json:"peak_backlog"`
}

// ModelPhase is one phase of the timeline (plus "drain" after the load).
type ModelPhase struct {
	Name       string  `json:"name"`
	StartS     float64 `json:"start_s"`
	EndS       float64 `json:"end_s"`
	Completed  int64   `json:"completed"`
	Throughput float64 `json:"throughput"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	Local      float64 `json:"local_share"`
	SameIDC    float64 `json:"same_idc_share"`
	OtherIDC   float64 `json:"other_idc_share"`
	// PeakBacklog: the largest sampled total of ready tasks.
	PeakBacklog uint64 `json:"peak_backlog"`
	// Retries: handler failures in the phase, put back on their node.
	Retries int64 `json:"retries"`
	// NoticesPerWorker per tier (local, idc, global) per second.
	NoticesPerWorker [backlog.NumTiers]float64 `json:"notices_per_worker_per_s"`
}

func secs(ns int64) float64 { return math.Round(float64(ns)/1e6) / 1e3 }

func share(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func (m *model) result() *ModelResult {
	r := &ModelResult{
		Hosts: len(m.pools), Enqueued: m.enqueued, Completed: m.completed, Drained: m.drained,
		DrainedAfterS: secs(m.drainedAfter), PeakBacklog: m.peak, VirtualS: secs(m.now),
		Events: m.events, Decisions: m.decisions, Pulls: m.pulls,
		ViewChecks: m.viewChecks, ViewMismatches: m.viewMismatches, StaleNotices: m.stale,
	}
	r.Stranded = m.readyTotal + m.inNet + m.requeued
	r.Lost = r.Enqueued - r.Completed - r.Stranded
	r.Retries = m.retries
	r.Crashed, r.Elections, r.Refused, r.Summaries = m.crashed, m.elections, m.refused, m.summaries
	r.WorkerOnly = len(m.pools) - len(m.nodes)
	var all latHist
	var where [3]int64
	var poolNs float64
	for _, p := range m.phases {
		all.merge(&p.hist)
		for i := range where {
			where[i] += p.where[i]
		}
		poolNs += p.poolNs
		mp := ModelPhase{
			Name: p.name, StartS: secs(p.start), EndS: secs(p.end), Completed: p.done, Retries: p.retries,
			P50Ms: p.hist.quantileMs(0.5), P99Ms: p.hist.quantileMs(0.99), PeakBacklog: p.peak,
			Local: share(p.where[0], p.done), SameIDC: share(p.where[1], p.done), OtherIDC: share(p.where[2], p.done),
		}
		if d := p.end - p.start; d > 0 {
			mp.Throughput = math.Round(float64(p.done)/(float64(d)/1e9)*10) / 10
		}
		for t := range mp.NoticesPerWorker {
			if p.poolNs > 0 {
				mp.NoticesPerWorker[t] = round3(float64(p.delivered[t]) / (p.poolNs / 1e9))
			}
		}
		mp.Local, mp.SameIDC, mp.OtherIDC = round4(mp.Local), round4(mp.SameIDC), round4(mp.OtherIDC)
		r.Phases = append(r.Phases, mp)
	}
	r.P50Ms, r.P99Ms = all.quantileMs(0.5), all.quantileMs(0.99)
	r.Local, r.SameIDC, r.OtherIDC = round4(share(where[0], m.completed)), round4(share(where[1], m.completed)), round4(share(where[2], m.completed))
	for _, t := range backlog.Tiers {
		mt := ModelTier{
			Tier: t.String(), Subscribed: m.subscribed[t], MaxRate: m.maxRate[t], Published: m.published[t],
			Delivered: m.deliveredQ[t] + m.deliveredHB[t], Heartbeats: m.deliveredHB[t],
			Accepted: m.accepted[t], Dropped: m.dropped[t],
		}
		if poolNs > 0 {
			mt.PerWorkerPerS = round3(float64(mt.Delivered) / (poolNs / 1e9))
			mt.HeartbeatPerWorkerPerS = round3(float64(mt.Heartbeats) / (poolNs / 1e9))
		}
		r.NoticesPerWorker += mt.PerWorkerPerS
		r.Notices = append(r.Notices, mt)
	}
	r.NoticesPerWorker = round3(r.NoticesPerWorker)
	if m.faultIdx >= 0 {
		ev := m.cfg.Timeline[m.faultIdx]
		f := &ModelFaultResult{
			Action: ev.Action, IDC: ev.IDC, StartS: secs(m.faultStart), EndS: secs(m.faultEnd),
			FirstHelpS: -1, HalfHelpedS: -1, Nodes: len(m.idcNodes[m.faultIDC]), PeakBacklog: m.faultPeak,
		}
		if m.firstHelp != never {
			f.FirstHelpS = secs(m.firstHelp - m.faultStart)
		}
		var helped []int64
		for _, n := range m.idcNodes[m.faultIDC] {
			if n.firstHelp != never {
				helped = append(helped, n.firstHelp)
			}
		}
		slices.Sort(helped)
		f.NodesHelped = len(helped)
		if half := (f.Nodes + 1) / 2; len(helped) >= half && half > 0 {
			f.HalfHelpedS = secs(helped[half-1] - m.faultStart)
		}
		for i, pools := range m.idcPools {
			if i == m.faultIDC {
				continue
			}
			f.Candidates += len(pools)
			for _, p := range pools {
				if p.helped > 0 {
					f.Helpers++
					f.HelpedTasks += p.helped
					f.HelperMax = max(f.HelperMax, p.helped)
				}
			}
		}
		if f.Helpers > 0 {
			f.HelperMean = round3(float64(f.HelpedTasks) / float64(f.Helpers))
			f.HelperMaxMean = round3(float64(f.HelperMax) / f.HelperMean)
		}
		r.Fault = f
	}
	return r
}

func round3(x float64) float64 { return math.Round(x*1e3) / 1e3 }
func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }

// WriteTable prints one row per size, then each size's phases. The output
// depends only on the configuration and seed (no wall-clock figures).
func (rep *ModelReport) WriteTable(w io.Writer) error {
	sizes := make([]string, len(rep.Sizes))
	for i, n := range rep.Sizes {
		sizes[i] = fmt.Sprint(n)
	}
	fmt.Fprintf(w, "scale model (seed %d): %d IDCs (%s), %d slots per host, %.0f tasks/s per host (Poisson), handler %s, filter %s, fault %s\n",
		rep.Seed, len(rep.IDCs), strings.Join(rep.IDCs, ", "), rep.Slots, rep.Rate, rep.Handler, rep.Filter, rep.Fault)
	fmt.Fprintf(w, "sizes run: %s hosts\n", strings.Join(sizes, ", "))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "hosts\ttasks\tnotices/worker/s\tlocal\tidc\tglobal\theartbeats\tcap-dropped\tlocal\tsame IDC\tother IDC\tfirst help s\thalf helped s\tnodes helped\thelpers\thelper max/mean\tpeak backlog\tp99 ms\tdrain s\t")
	for _, r := range rep.Runs {
		var hb, acc, drop float64
		for _, t := range r.Notices {
			hb += t.HeartbeatPerWorkerPerS
			acc += float64(t.Accepted)
			drop += float64(t.Dropped)
		}
		first, half, nodes, helpers, bal := "-", "-", "-", "-", "-"
		if f := r.Fault; f != nil {
			first, half = optS(f.FirstHelpS), optS(f.HalfHelpedS)
			nodes = fmt.Sprintf("%.0f%%", 100*share(int64(f.NodesHelped), int64(f.Nodes)))
			helpers = fmt.Sprintf("%d/%d", f.Helpers, f.Candidates)
			if f.Helpers > 0 {
				bal = fmt.Sprintf("%.1f", f.HelperMaxMean)
			}
		}
		drain := fmt.Sprintf("%.2f", r.DrainedAfterS)
		if !r.Drained {
			drain = "NOT " + drain
		}
		fmt.Fprintf(tw, "%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f%%\t%.2f%%\t%.2f%%\t%.2f%%\t%s\t%s\t%s\t%s\t%s\t%d\t%.1f\t%s\t\n",
			r.Hosts, r.Enqueued, r.NoticesPerWorker, r.Notices[0].PerWorkerPerS, r.Notices[1].PerWorkerPerS, r.Notices[2].PerWorkerPerS, hb,
			100*share(int64(drop), int64(acc+drop)), 100*r.Local, 100*r.SameIDC, 100*r.OtherIDC,
			first, half, nodes, helpers, bal, r.PeakBacklog, r.P99Ms, drain)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprint(w, `notices/worker/s: delivered to each pool per second, in all, per tier, and the node heartbeats among them
  (counted, not applied to the views); cap-dropped: share of the notices applied to views that a tier's max_rate
  dropped; local/same IDC/other IDC: where tasks ran; first help: from the fault to the first task of the faulted
  IDC run by another IDC; half helped: until half its nodes had been helped; nodes helped: share ever helped during
  the fault; helpers: pools that helped / pools of the other IDCs; helper max/mean: tasks helped by the busiest
  helper over the mean; drain: after the load, until the last task finished.

`)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "hosts\tphase\ttime s\tdone/s\tp50 ms\tp99 ms\tpeak backlog\tlocal\tsame IDC\tother IDC\tnotices/worker/s local\tidc\tglobal\t")
	for _, r := range rep.Runs {
		for _, p := range r.Phases {
			notices := "-\t-\t-" // a phase under a second: a heartbeat round would read as a rate
			if p.EndS-p.StartS >= 1 {
				notices = fmt.Sprintf("%.2f\t%.2f\t%.2f", p.NoticesPerWorker[0], p.NoticesPerWorker[1], p.NoticesPerWorker[2])
			}
			fmt.Fprintf(tw, "%d\t%s\t%.1f-%.1f\t%.0f\t%.1f\t%.1f\t%d\t%.2f%%\t%.2f%%\t%.2f%%\t%s\t\n",
				r.Hosts, p.Name, p.StartS, p.EndS, p.Throughput, p.P50Ms, p.P99Ms, p.PeakBacklog,
				100*p.Local, 100*p.SameIDC, 100*p.OtherIDC, notices)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rep.Runs {
		fmt.Fprintf(w, "%d hosts (%d worker-only): %d enqueued, %d completed, %d stranded, %d lost, %d retries, %d nodes crashed, %d enqueues refused by them, %d summaries, %d summarizer elections; %d events, %d decisions, %d pulls in %.1fs of virtual time; views checked %d times, %d mismatches\n",
			r.Hosts, r.WorkerOnly, r.Enqueued, r.Completed, r.Stranded, r.Lost, r.Retries, r.Crashed, r.Refused, r.Summaries, r.Elections, r.Events, r.Decisions, r.Pulls, r.VirtualS, r.ViewChecks, r.ViewMismatches)
	}
	return nil
}

// describeFault tells the first fault of a timeline and when it ends.
func describeFault(c ModelConfig) string {
	for i, ev := range c.Timeline {
		if ev.Action != "kill-pools" && ev.Action != "degrade" {
			continue
		}
		what := "pools lost"
		if ev.Action == "degrade" {
			what = fmt.Sprintf("handlers %gx slower", ev.Slowdown)
		}
		end := c.Duration
		for _, later := range c.Timeline[i+1:] {
			if later.Action == "restore-all" || (later.Action == "restore" || later.Action == "restore-pools") && later.IDC == ev.IDC {
				end = later.At.D()
				break
			}
		}
		return fmt.Sprintf("%s %s %s-%s of %s", ev.IDC, what, ev.At.D(), end, c.Duration) + describeExtras(c)
	}
	return fmt.Sprintf("none (%s of load)", c.Duration) + describeExtras(c)
}

// describeExtras names the faults besides the measured one.
func describeExtras(c ModelConfig) string {
	var out []string
	if c.Handler.ErrorRate > 0 {
		out = append(out, fmt.Sprintf("%g%% handler errors", 100*c.Handler.ErrorRate))
	}
	if c.WorkerOnly > 0 {
		out = append(out, fmt.Sprintf("%g%% worker-only hosts", 100*c.WorkerOnly))
	}
	for _, ev := range c.Timeline {
		switch ev.Action {
		case "slow-link":
			out = append(out, fmt.Sprintf("%s link +%s each way from %s", ev.IDC, ev.Latency.D(), ev.At.D()))
		case "kill-nodes":
			out = append(out, fmt.Sprintf("%g%% of %s's nodes crash at %s", 100*ev.Share, ev.IDC, ev.At.D()))
		case "restart-nodes":
			out = append(out, fmt.Sprintf("restart at %s", ev.At.D()))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "; " + strings.Join(out, ", ")
}

func optS(s float64) string {
	if s < 0 {
		return "never"
	}
	return fmt.Sprintf("%.2f", s)
}
