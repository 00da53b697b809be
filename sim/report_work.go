package sim

import (
	"fmt"
	"io"
	"math"
	"text/tabwriter"
)

// What the throttles act on: executions, retries, backend calls, enqueue
// latency and each node's progress, per phase and per mode.

// rateWindow is the span over which the report judges a rate at a point
// of the time series (recovery, budget convergence): a forward window of
// one second.
const rateWindow = 1.0

// Outage is one outage of the backend (backend-fail until backend-recover,
// or until the end of the load) and what it did in one mode.
type Outage struct {
	DownS float64 `json:"down_s"` // seconds since the load started
	UpS   float64 `json:"up_s"`
	// BeforePerS is the successful throughput before the outage:
	// completions/s over the 5 s before it (at most since the load started).
	BeforePerS float64 `json:"before_per_s"`
	// AttemptsPerS and RetriesPerS are executions/s and retries/s (Attempt
	// > 1) while the backend was down; RetryRatio is RetriesPerS /
	// BeforePerS.
	AttemptsPerS float64 `json:"attempts_per_s"`
	RetriesPerS  float64 `json:"retries_per_s"`
	RetryRatio   float64 `json:"retry_ratio"`
	// LaterRetriesPerS is the retries/s from one second after the backend
	// went down to its return: once the retry gates had time to close.
	LaterRetriesPerS float64 `json:"later_retries_per_s"`
	// RecoveredAfterS is the time from the backend's return to the start of
	// the first second with completions at 90% of BeforePerS or more (to
	// the sample period); -1 if none came by the end of the run.
	RecoveredAfterS float64 `json:"recovered_after_s"`
	// ClearedAfterS is the time from the backend's return until the backlog
	// was back to its normal level (the first phase's peak, at least 10
	// tasks): the failed tasks are done; -1 if never.
	ClearedAfterS float64 `json:"cleared_after_s"`
}

// BudgetReport is how the mesh-wide call rate to the handler's backend held
// to its budget in one mode.
type BudgetReport struct {
	Backend string  `json:"backend"`
	Budget  float64 `json:"budget"` // calls/s, mesh-wide
	// ConvergedS is the time after the load started from which the call
	// rate of every one-second window up to the end of the load is within
	// ±10% of Budget; -1 if it never settled so.
	ConvergedS float64 `json:"converged_s"`
	// CallsPerS is the mean call rate from ConvergedS (from the start when
	// it never converged) to the end of the load, and MinNodeShare the
	// least progress of a node over the same span (see PhaseReport).
	CallsPerS    float64 `json:"calls_per_s"`
	MinNodeShare float64 `json:"min_node_share"`
}

// addWork fills the phase's work figures from its accumulator and its
// first and last samples (m is locked).
func (pr *PhaseReport) addWork(p *phaseAcc, m *metrics, first, last *Sample) {
	if d := (p.end - p.start).Seconds(); d > 0 {
		pr.AttemptsPerS = float64(p.attempts) / d
		pr.RetriesPerS = float64(p.retries) / d
		pr.CallsPerS = float64(p.calls) / d
	}
	pr.EnqueueP50Ms, pr.EnqueueP99Ms = ms(percentile(p.enqueueLat, 0.5)), ms(percentile(p.enqueueLat, 0.99))
	if first != nil && last != nil && last.T > first.T && last.Deferred >= first.Deferred {
		pr.DeferredPerS = float64(last.Deferred-first.Deferred) / (last.T - first.T)
	}
	var nodes []string
	for n, at := range m.origins {
		if at < p.end {
			nodes = append(nodes, n)
		}
	}
	pr.MinNodeShare = minShare(nodes, func(n string) int { return p.doneBy[n] })
}

// minShare is min over nodes of done(node) / mean done per node; 0 when
// nothing was done.
func minShare(nodes []string, done func(string) int) float64 {
	total, least := 0, math.MaxInt
	for _, n := range nodes {
		d := done(n)
		total += d
		least = min(least, d)
	}
	if total == 0 {
		return 0
	}
	return float64(least) * float64(len(nodes)) / float64(total)
}

// addWork fills the mode's totals, outages and budget figures (m is
// locked).
func (mr *ModeReport) addWork(s Scenario, m *metrics) {
	mr.Attempts, mr.Retries, mr.Calls = m.attempts, m.retries, m.calls
	ss := m.series
	if len(ss) > 0 {
		mr.RetriesDeferred = ss[len(ss)-1].Deferred
	}
	loadEnd := s.Load.Duration.D().Seconds()
	done := func(x Sample) float64 { return float64(x.Done) }
	for _, o := range m.outages {
		up := o.up.Seconds()
		if o.up < 0 {
			up = loadEnd
		}
		out := Outage{DownS: o.down.Seconds(), UpS: up, RecoveredAfterS: -1, ClearedAfterS: -1}
		out.BeforePerS = rateOver(ss, max(0, out.DownS-5), out.DownS, done)
		out.AttemptsPerS = rateOver(ss, out.DownS, up, func(x Sample) float64 { return float64(x.Attempts) })
		retries := func(x Sample) float64 { return float64(x.Retries) }
		out.RetriesPerS = rateOver(ss, out.DownS, up, retries)
		out.LaterRetriesPerS = rateOver(ss, out.DownS+1, up, retries)
		if out.BeforePerS > 0 {
			out.RetryRatio = out.RetriesPerS / out.BeforePerS
		}
		for i, x := range ss {
			if x.T >= up && windowRate(ss, i, done) >= 0.9*out.BeforePerS {
				out.RecoveredAfterS = x.T - up
				break
			}
		}
		level := normalLevel(m)
		for _, x := range ss {
			if x.T >= up && x.Total <= level {
				out.ClearedAfterS = x.T - up
				break
			}
		}
		mr.Outages = append(mr.Outages, out)
	}
	name, budget := s.Budget()
	if budget <= 0 {
		return
	}
	b := &BudgetReport{Backend: name, Budget: budget, ConvergedS: -1}
	calls := func(x Sample) float64 { return float64(x.Calls) }
	// Walk back from the last window that ends by the end of the load.
	for i := len(ss) - 1; i >= 0; i-- {
		j := windowEnd(ss, i)
		if j < 0 || ss[j].T > loadEnd+0.05 {
			continue
		}
		if r := windowRate(ss, i, calls); r < 0.9*budget || r > 1.1*budget {
			break
		}
		b.ConvergedS = ss[i].T
	}
	from := max(b.ConvergedS, 0)
	b.CallsPerS = rateOver(ss, from, loadEnd, calls)
	a, z := sampleAt(ss, from), sampleAt(ss, loadEnd)
	if a >= 0 && z > a {
		nodes := make([]string, 0, len(m.origins))
		for n := range m.origins {
			nodes = append(nodes, n)
		}
		b.MinNodeShare = minShare(nodes, func(n string) int { return ss[z].NodeDone[n] - ss[a].NodeDone[n] })
	}
	mr.Budget = b
}

// sampleAt is the index of the first sample at or after t (-1: none).
func sampleAt(ss []Sample, t float64) int {
	for i, x := range ss {
		if x.T >= t {
			return i
		}
	}
	return -1
}

// rateOver is the rate of f between the first samples at or after from
// and to (to: the last sample if none).
func rateOver(ss []Sample, from, to float64, f func(Sample) float64) float64 {
	a, z := sampleAt(ss, from), sampleAt(ss, to)
	if z < 0 {
		z = len(ss) - 1
	}
	if a < 0 || z <= a || ss[z].T <= ss[a].T {
		return 0
	}
	return (f(ss[z]) - f(ss[a])) / (ss[z].T - ss[a].T)
}

// windowEnd is the first sample at least rateWindow after sample i (-1:
// none).
func windowEnd(ss []Sample, i int) int {
	for j := i + 1; j < len(ss); j++ {
		if ss[j].T >= ss[i].T+rateWindow-0.001 {
			return j
		}
	}
	return -1
}

// windowRate is the rate of f over the window starting at sample i (-1:
// the series ends first).
func windowRate(ss []Sample, i int, f func(Sample) float64) float64 {
	j := windowEnd(ss, i)
	if j < 0 {
		return -1
	}
	return (f(ss[j]) - f(ss[i])) / (ss[j].T - ss[i].T)
}

// writeWork prints the work table and each mode's outage and budget lines.
func (rep *Report) writeWork(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tphase\ttime s\tattempts/s\tretries/s\tdone/s\tbackend calls/s\tretries deferred/s\tenqueue p50 ms\tenqueue p99 ms\tmin node share\tcpu\tcpu limit/s\t")
	for _, m := range rep.Modes {
		for _, p := range m.Phases {
			fmt.Fprintf(tw, "%s\t%s\t%.1f-%.1f\t%.0f\t%.1f\t%.0f\t%.0f\t%.1f\t%.1f\t%.1f\t%.2f\t%.0f%%\t%s\t\n", m.Mode, p.Name, p.StartS, p.EndS,
				p.AttemptsPerS, p.RetriesPerS, p.Throughput, p.CallsPerS, p.DeferredPerS, p.EnqueueP50Ms, p.EnqueueP99Ms, p.MinNodeShare, 100*p.CPU, limitText(p.CPULimit))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, m := range rep.Modes {
		for _, o := range m.Outages {
			fmt.Fprintf(w, "%s: backend down %.1f-%.1fs: %.0f done/s before; while down %.0f attempts/s, %.1f retries/s (%.2fx the throughput before; %.1f/s after its first second); %s\n",
				m.Mode, o.DownS, o.UpS, o.BeforePerS, o.AttemptsPerS, o.RetriesPerS, o.RetryRatio, o.LaterRetriesPerS, recoveredText(o))
		}
		if b := m.Budget; b != nil {
			conv := "never within ±10% to the end of the load"
			if b.ConvergedS >= 0 {
				conv = fmt.Sprintf("within ±10%% from %.1fs after the load started (every 1 s window to its end)", b.ConvergedS)
			}
			fmt.Fprintf(w, "%s: budget %s %.0f calls/s: %s; %.0f calls/s mean since; least node progress %.2f of the mean\n",
				m.Mode, b.Backend, b.Budget, conv, b.CallsPerS, b.MinNodeShare)
		}
	}
	return nil
}

func limitText(l float64) string {
	if l <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", l)
}

func recoveredText(o Outage) string {
	after := func(s float64) string {
		if s < 0 {
			return "never"
		}
		return fmt.Sprintf("%.2fs after the backend came back", s)
	}
	return fmt.Sprintf("back to 90%% of it %s, failed tasks cleared %s", after(o.RecoveredAfterS), after(o.ClearedAfterS))
}
