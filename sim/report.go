package sim

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"
)

// Report is the outcome of a scenario in every mode.
type Report struct {
	Scenario string       `json:"scenario"`
	Seed     uint64       `json:"seed"`
	Modes    []ModeReport `json:"modes"`
}

// ModeReport is one mode's outcome.
type ModeReport struct {
	Mode      string        `json:"mode"`
	Phases    []PhaseReport `json:"phases"`
	Enqueued  int           `json:"enqueued"`
	Completed int           `json:"completed"` // distinct tasks completed
	// Lost counts tasks enqueued and never completed that no node holds at
	// the end: not on a dead node (Stranded), not in a live node's queue
	// (StillQueued: the drain timed out) or dead letter queue. Nodes hold
	// only the simulation's tasks, so this is counted, not matched by id.
	Lost     int `json:"lost"`
	Stranded int `json:"stranded"` // on a node still down at the end
	// OnLostDisk counts the tasks enqueued on hosts lose-host took, and
	// LostOnLostDisk those of them never completed and held by no node.
	OnLostDisk     int `json:"on_lost_disk,omitempty"`
	LostOnLostDisk int `json:"lost_on_lost_disk,omitempty"`
	StillQueued    int `json:"still_queued"` // in a live node's queue at the end
	Duplicates     int `json:"duplicate_deliveries"`
	// DeadLettered is how many tasks sit in the dead letter queues at the
	// end (not lost: kept with a reason, e.g. a corrupt record).
	DeadLettered uint64 `json:"dead_lettered"`
	// Drained says the backlog reached zero after the load; DrainedAfterS
	// is how long after the end of the load.
	Drained       bool    `json:"drained"`
	DrainedAfterS float64 `json:"drained_after_s"`
	PeakBacklog   uint64  `json:"peak_backlog"`
	// Attempts counts executions, Retries those with Attempt > 1, Calls
	// the backend calls they reported; RetriesDeferred is the retries the
	// nodes' retry gates deferred (a deferred retry is not lost: it waits
	// on disk).
	Attempts        int    `json:"attempts"`
	Retries         int    `json:"retries"`
	Calls           int    `json:"backend_calls"`
	RetriesDeferred uint64 `json:"retries_deferred"`
	// Outages are the backend's outages (backend-fail to backend-recover)
	// and how this mode came back from each.
	Outages []Outage `json:"outages,omitempty"`
	// Budget is how the mesh-wide call rate held to the handler backend's
	// budget, when it has one.
	Budget *BudgetReport `json:"budget,omitempty"`
	// Metrics are the run's totals under the Prometheus names a node's and
	// a pool's --http endpoint export, summed over the live nodes and
	// pools at the end (see prom.go).
	Metrics map[string]float64 `json:"metrics"`
	// Deploy is what bad deploys and replays did (replay.go), if any.
	Deploy *DeployReport `json:"deploy,omitempty"`
	Series []Sample      `json:"-"`
}

// PhaseReport is one phase of the timeline in one mode.
type PhaseReport struct {
	Name        string  `json:"name"`
	StartS      float64 `json:"start_s"`
	EndS        float64 `json:"end_s"`
	Completed   int     `json:"completed"`
	Throughput  float64 `json:"throughput"` // completions/s
	P50Ms       float64 `json:"p50_ms"`     // enqueue → done
	P99Ms       float64 `json:"p99_ms"`
	P999Ms      float64 `json:"p999_ms"`
	PeakBacklog uint64  `json:"peak_backlog"`
	EndBacklog  uint64  `json:"end_backlog"`
	// DrainS is how long after the phase's start the backlog was back to
	// its normal level (the first phase's peak, at least 10 tasks) after
	// the phase's peak; -1 if it never was by the end of the run.
	DrainS   float64 `json:"drain_s"`
	Local    float64 `json:"local_share"`
	SameIDC  float64 `json:"same_idc_share"`
	OtherIDC float64 `json:"other_idc_share"`
	// NoticesPerWorker is backlog notices accepted per worker per second.
	NoticesPerWorker float64 `json:"notices_per_worker_per_s"`
	// AttemptsPerS is executions/s; RetriesPerS those with Attempt > 1;
	// CallsPerS the backend calls/s they made, mesh-wide; DeferredPerS the
	// retries/s the retry gates deferred. (Successes/s: Throughput.)
	AttemptsPerS float64 `json:"attempts_per_s"`
	RetriesPerS  float64 `json:"retries_per_s"`
	CallsPerS    float64 `json:"backend_calls_per_s"`
	DeferredPerS float64 `json:"retries_deferred_per_s"`
	// EnqueueP50Ms and EnqueueP99Ms time the producers' Enqueue calls
	// (one per host every 20 ms, carrying what the rate owes).
	EnqueueP50Ms float64 `json:"enqueue_p50_ms"`
	EnqueueP99Ms float64 `json:"enqueue_p99_ms"`
	// MinNodeShare is the least progress of a node: min over the nodes that
	// had received tasks of (completions of its tasks) / (completions per
	// node on average). 1 = every node equal; 0 = a node made none.
	MinNodeShare float64 `json:"min_node_share"`
	// CPU is the mean CPU usage (0..1) over the phase's samples, as the
	// CPU throttle's sampler reads it (Sample.CPU); CPULimit the mean sum
	// of the nodes' CPU dispatch limits while any was active (tasks/s; 0:
	// none was).
	CPU      float64 `json:"cpu"`
	CPULimit float64 `json:"cpu_limit"`
}

// Run plays the scenario in each of its modes, one after the other.
func Run(ctx context.Context, s Scenario, opt Options) (*Report, error) {
	rep := &Report{Scenario: s.Name, Seed: s.Seed}
	for _, mode := range s.Modes {
		mr, err := runMode(ctx, s, mode, opt)
		if err != nil {
			return rep, fmt.Errorf("%s mode: %w", mode, err)
		}
		rep.Modes = append(rep.Modes, *mr)
	}
	return rep, nil
}

func runMode(ctx context.Context, s Scenario, mode string, opt Options) (*ModeReport, error) {
	r, err := newRun(s, mode, opt)
	if err != nil {
		return nil, err
	}
	defer r.teardown()
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	after, drained, err := r.play(ctx)
	if err != nil {
		return nil, err
	}
	mr := r.summarize(after, drained)
	mr.Metrics = r.operatorView()
	return mr, nil
}

func (r *run) summarize(after time.Duration, drained bool) *ModeReport {
	held := r.nodes()
	dead := held.dead
	m := r.metrics
	m.mu.Lock()
	defer m.mu.Unlock()
	mr := &ModeReport{Mode: r.mode, Enqueued: len(m.enqueued), Drained: drained, DrainedAfterS: after.Seconds(), Series: slices.Clone(m.series), DeadLettered: dead}
	down := map[string]bool{}
	for _, h := range r.hosts {
		if !h.workerOnly && !h.nodeUp.Load() {
			down[h.name] = true
		}
	}
	var unfinished []string
	wipedLeft := 0
	for id, host := range m.enqueued {
		n := m.completions[id]
		if m.wiped[host] {
			mr.OnLostDisk++
		}
		switch {
		case n > 0:
			mr.Completed++
			mr.Duplicates += n - 1
		case m.wiped[host]:
			// Its disk is gone: lost unless another node holds it.
			unfinished = append(unfinished, id)
			wipedLeft++
		case down[host]:
			mr.Stranded++
		default:
			unfinished = append(unfinished, id)
		}
	}
	mr.StillQueued = min(len(unfinished), int(held.total))
	mr.Lost = max(0, len(unfinished)-int(held.total+held.dead))
	mr.LostOnLostDisk = min(mr.Lost, wipedLeft)
	mr.Deploy = r.deploy.report(m.completions)
	if mr.Lost > 0 {
		r.log.Error("tasks never completed and not held by any node", "mode", r.mode, "lost", mr.Lost, "some", unfinished[:min(5, len(unfinished))])
	}
	for _, s := range m.series {
		mr.PeakBacklog = max(mr.PeakBacklog, s.Total)
	}
	for _, p := range m.phases {
		if p.name == "end" {
			continue
		}
		pr := PhaseReport{Name: p.name, StartS: p.start.Seconds(), EndS: p.end.Seconds(), Completed: p.done}
		if d := (p.end - p.start).Seconds(); d > 0 {
			pr.Throughput = float64(p.done) / d
		}
		pr.P50Ms, pr.P99Ms, pr.P999Ms = ms(percentile(p.latencies, 0.5)), ms(percentile(p.latencies, 0.99)), ms(percentile(p.latencies, 0.999))
		if p.done > 0 {
			pr.Local = float64(p.where[0]) / float64(p.done)
			pr.SameIDC = float64(p.where[1]) / float64(p.done)
			pr.OtherIDC = float64(p.where[2]) / float64(p.done)
		}
		var first, last *Sample
		var n, limited int
		for i := range m.series {
			s := &m.series[i]
			if s.T < pr.StartS || s.T > pr.EndS {
				continue
			}
			if first == nil {
				first = s
			}
			last = s
			pr.PeakBacklog = max(pr.PeakBacklog, s.Total)
			n++
			pr.CPU += s.CPU
			if s.CPULimit > 0 {
				limited++
				pr.CPULimit += s.CPULimit
			}
		}
		pr.CPU /= float64(max(n, 1))
		pr.CPULimit /= float64(max(limited, 1))
		pr.DrainS = drainTime(m.series, pr.StartS, pr.EndS, normalLevel(m))
		if last != nil {
			pr.EndBacklog = last.Total
			if dt := last.T - first.T; dt > 0 && last.Workers > 0 {
				pr.NoticesPerWorker = float64(last.Notices-first.Notices) / dt / float64(last.Workers)
			}
		}
		pr.addWork(p, m, first, last)
		mr.Phases = append(mr.Phases, pr)
	}
	mr.addWork(r.s, m)
	return mr
}

// normalLevel is the backlog a run counts as drained: the first phase's
// peak, at least 10 tasks.
func normalLevel(m *metrics) uint64 {
	level := uint64(10)
	if len(m.phases) > 0 {
		end := m.phases[0].end.Seconds()
		for _, s := range m.series {
			if s.T <= end {
				level = max(level, s.Total)
			}
		}
	}
	return level
}

// drainTime finds, after the peak of [start, end], the first sample at or
// below level, and returns its time since start (-1: never).
func drainTime(series []Sample, start, end float64, level uint64) float64 {
	peakAt, peak := -1, uint64(0)
	for i, s := range series {
		if s.T >= start && s.T <= end && (peakAt < 0 || s.Total > peak) {
			peakAt, peak = i, s.Total
		}
	}
	if peakAt < 0 {
		return -1
	}
	for _, s := range series[peakAt:] {
		if s.Total <= level {
			return max(s.T-start, 0)
		}
	}
	return -1
}

// WriteTable prints the phase table of every mode, each mode's totals,
// then the work table (attempts, retries, successes, backend calls,
// deferred retries, enqueue latency, least node progress per phase) and
// each mode's backend outages and budget.
func (rep *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "scenario %s (seed %d)\n", rep.Scenario, rep.Seed)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tphase\ttime s\tdone/s\tp50 ms\tp99 ms\tp999 ms\tpeak backlog\tend backlog\tdrained after s\tlocal\tsame IDC\tother IDC\tnotices/worker/s\t")
	for _, m := range rep.Modes {
		for _, p := range m.Phases {
			drain := "never"
			if p.DrainS >= 0 {
				drain = fmt.Sprintf("%.1f", p.DrainS)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.1f-%.1f\t%.0f\t%.1f\t%.1f\t%.1f\t%d\t%d\t%s\t%.1f%%\t%.1f%%\t%.1f%%\t%.2f\t\n",
				m.Mode, p.Name, p.StartS, p.EndS, p.Throughput, p.P50Ms, p.P99Ms, p.P999Ms, p.PeakBacklog, p.EndBacklog, drain,
				100*p.Local, 100*p.SameIDC, 100*p.OtherIDC, p.NoticesPerWorker)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, m := range rep.Modes {
		drain := fmt.Sprintf("drained %.1fs after the load", m.DrainedAfterS)
		if !m.Drained {
			drain = fmt.Sprintf("NOT drained %.1fs after the load", m.DrainedAfterS)
		}
		queued := ""
		if m.StillQueued > 0 {
			queued = fmt.Sprintf(", %d still queued", m.StillQueued)
		}
		lostDisk := ""
		if m.OnLostDisk > 0 {
			lostDisk = fmt.Sprintf(" (%d of the %d enqueued on hosts lost with their disks)", m.LostOnLostDisk, m.OnLostDisk)
		}
		fmt.Fprintf(w, "%s: %d enqueued, %d completed, %d lost%s, %d stranded on dead nodes%s, %d dead-lettered, %d duplicate deliveries; peak backlog %d; %s\n",
			m.Mode, m.Enqueued, m.Completed, m.Lost, lostDisk, m.Stranded, queued, m.DeadLettered, m.Duplicates, m.PeakBacklog, drain)
		writeDeploy(w, m.Mode, m.Deploy)
	}
	fmt.Fprintln(w)
	return rep.writeWork(w)
}

// WriteCSV writes the time series of every mode. Counts (done, attempts,
// retries, backend calls, retries deferred, notices) are running totals:
// rates are their differences over t_s.
func (rep *Report) WriteCSV(w io.Writer, idcs []string) error {
	cw := csv.NewWriter(w)
	head := []string{"mode", "t_s", "phase", "total_backlog"}
	for _, idc := range idcs {
		head = append(head, "backlog_"+idc)
	}
	head = append(head, "done", "done_local", "done_same_idc", "done_other_idc", "p99_ms", "notices", "workers", "attempts", "retries", "backend_calls", "retries_deferred", "retry_gates", "cpu", "cpu_limit")
	if err := cw.Write(head); err != nil {
		return err
	}
	for _, m := range rep.Modes {
		for _, s := range m.Series {
			row := []string{m.Mode, strconv.FormatFloat(s.T, 'f', 3, 64), s.Phase, strconv.FormatUint(s.Total, 10)}
			for _, idc := range idcs {
				row = append(row, strconv.FormatUint(s.Backlog[idc], 10))
			}
			row = append(row, strconv.Itoa(s.Done), strconv.Itoa(s.Where[0]), strconv.Itoa(s.Where[1]), strconv.Itoa(s.Where[2]),
				strconv.FormatFloat(s.P99Ms, 'f', 2, 64), strconv.FormatUint(s.Notices, 10), strconv.Itoa(s.Workers),
				strconv.Itoa(s.Attempts), strconv.Itoa(s.Retries), strconv.Itoa(s.Calls), strconv.FormatUint(s.Deferred, 10), strconv.Itoa(s.RetryGates),
				strconv.FormatFloat(s.CPU, 'f', 3, 64), strconv.FormatFloat(s.CPULimit, 'f', 1, 64))
			if err := cw.Write(row); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

// IDCNames lists the scenario's IDCs in order.
func (s Scenario) IDCNames() []string {
	var out []string
	for _, idc := range s.Topology.IDCs {
		out = append(out, idc.Name)
	}
	return out
}
