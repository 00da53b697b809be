package bench

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// CPUReportSchema names the JSON layout of `bench cpu`; it changes only
// when a field is removed or changes meaning (fields may be added).
const CPUReportSchema = "mqmesh.bench.cpu/v1"

// CPUReport is the outcome of `bench cpu`.
type CPUReport struct {
	Schema string    `json:"schema"`
	Config CPUConfig `json:"config"`
	// HostCPUBeforeRun is the host's CPU usage (0..1) over one second
	// before anything started: load from outside the benchmark.
	HostCPUBeforeRun float64   `json:"host_cpu_before_run"`
	Modes            []CPUMode `json:"modes"`
	// Bursts are the burst drains (--burst), one per mode.
	Bursts []CPUBurst `json:"bursts,omitempty"`
	// Ratio is throttle on / off; absent unless both modes measured a hog.
	Ratio *CPURatio `json:"ratio,omitempty"`
	// OK is true when every mode ran to its end.
	OK    bool     `json:"ok"`
	Notes []string `json:"notes"`
}

// CPUConfig is what both modes ran, and the CPU throttle's defaults.
type CPUConfig struct {
	RatePerS     float64 `json:"rate_per_s"`
	SizeBytes    int     `json:"size_bytes"`
	Durability   string  `json:"durability"`
	BurnMs       float64 `json:"burn_ms"`      // CPU per task on an idle core
	BurnIters    int64   `json:"burn_iters"`   // the same, as calibrated work
	HandlerLoad  float64 `json:"handler_load"` // share of the host's CPU the handlers need at RatePerS
	Slots        int     `json:"slots"`
	Hogs         int     `json:"hogs"`
	HogSession   string  `json:"hog_session"` // shared with the node and pool, or own
	Burst        int     `json:"burst"`       // tasks of the burst drain (0: steady phases)
	Signal       string  `json:"cpu_signal"`  // the CPU throttle's signal: starvation or host
	MaxDelayMs   float64 `json:"cpu_max_delay_ms"`
	WarmupS      float64 `json:"warmup_s"`
	BeforeS      float64 `json:"before_s"`
	HogS         float64 `json:"hog_s"`
	AfterS       float64 `json:"after_s"`
	SampleS      float64 `json:"sample_s"`
	CallTimeoutS float64 `json:"call_timeout_s"`
	Ceiling      float64 `json:"cpu_ceiling"`
	IntervalS    float64 `json:"cpu_interval_s"`
	MinRate      float64 `json:"cpu_min_rate"`
	Decrease     float64 `json:"cpu_decrease"`
	Increase     float64 `json:"cpu_increase"`
	CPUs         int     `json:"cpus"`
	GoVersion    string  `json:"go_version"`
	Platform     string  `json:"platform"`
}

// CPUMode is one run of the host with the CPU throttle on or off.
type CPUMode struct {
	Throttle string      `json:"throttle"` // "on" or "off"
	Phases   []CPUPhase  `json:"phases"`
	Samples  []CPUSample `json:"samples"`
	Error    string      `json:"error,omitempty"`
}

// CPUPhase is one measured phase of a mode: before, hog or after.
type CPUPhase struct {
	Phase         string  `json:"phase"`
	DurationS     float64 `json:"duration_s"`
	Enqueues      int     `json:"enqueues"` // calls started in the phase
	EnqueueErrors int     `json:"enqueue_errors"`
	EnqueueP50Ms  float64 `json:"enqueue_p50_ms"`
	EnqueueP99Ms  float64 `json:"enqueue_p99_ms"`
	EnqueueP999Ms float64 `json:"enqueue_p999_ms"`
	EnqueueMaxMs  float64 `json:"enqueue_max_ms"`
	DispatchPerS  float64 `json:"dispatch_per_s"`
	BacklogEnd    uint64  `json:"backlog_end"`
	HostCPU       float64 `json:"host_cpu"` // 0..1 of all cores
	// Cores used on average by each process, and by everything else.
	NodeCores   float64 `json:"node_cores"`
	WorkerCores float64 `json:"worker_cores"`
	HogCores    float64 `json:"hog_cores"`
	BenchCores  float64 `json:"bench_cores"`
	OtherCores  float64 `json:"other_cores"`
	// The node's CPU throttle over the phase's samples.
	ThrottleActive   float64 `json:"throttle_active"` // share of samples
	ThrottleLimitMin float64 `json:"throttle_limit_min"`
	ThrottleLimitMax float64 `json:"throttle_limit_max"`
	ThrottleReason   string  `json:"throttle_reason"` // the last
}

// CPUSample is one reading of the node's stats and the host's CPU.
type CPUSample struct {
	T              float64 `json:"t_s"`   // since the mode started
	Phase          string  `json:"phase"` // warmup, before, hog, after; "-" between phases
	HostCPU        float64 `json:"host_cpu"`
	DispatchPerS   float64 `json:"dispatch_per_s"`
	Backlog        uint64  `json:"backlog"`
	ThrottleActive bool    `json:"throttle_active"`
	ThrottleLimit  float64 `json:"throttle_limit"`
	ThrottleReason string  `json:"throttle_reason"`
}

// CPURatio is throttle on / off during the hog (and the enqueue p99
// before it, for reference).
type CPURatio struct {
	HogEnqueueP50    float64 `json:"hog_enqueue_p50"`
	HogEnqueueP99    float64 `json:"hog_enqueue_p99"`
	HogEnqueueP999   float64 `json:"hog_enqueue_p999"`
	HogDispatchPerS  float64 `json:"hog_dispatch_per_s"`
	HogWorkerCores   float64 `json:"hog_worker_cores"`
	BeforeEnqueueP99 float64 `json:"before_enqueue_p99"`
}

// summarize turns a phase's snapshots, calls and samples into a CPUPhase.
func (r *cpuRun) summarize(name string, s0, s1 cpuSnap, usage float64) CPUPhase {
	secs := s1.at.Sub(s0.at).Seconds()
	p := CPUPhase{Phase: name, DurationS: secs, HostCPU: usage, BacklogEnd: s1.backlog,
		DispatchPerS: float64(int64(s1.delivered)-int64(s0.delivered)) / secs}
	var lat []time.Duration
	r.mu.Lock()
	for _, c := range r.calls {
		if c.start.Before(s0.at) || !c.start.Before(s1.at) {
			continue
		}
		p.Enqueues++
		if c.err {
			p.EnqueueErrors++
		} else {
			lat = append(lat, c.took)
		}
	}
	var active, n int
	p.ThrottleLimitMin = math.Inf(1)
	for _, s := range r.samples {
		if s.Phase != name {
			continue
		}
		n++
		p.ThrottleReason = s.ThrottleReason
		if s.ThrottleActive {
			active++
			p.ThrottleLimitMin = min(p.ThrottleLimitMin, s.ThrottleLimit)
			p.ThrottleLimitMax = max(p.ThrottleLimitMax, s.ThrottleLimit)
		}
	}
	r.mu.Unlock()
	if active == 0 {
		p.ThrottleLimitMin = 0
	}
	if n > 0 {
		p.ThrottleActive = float64(active) / float64(n)
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		p.EnqueueP50Ms, p.EnqueueP99Ms = ms(rank(lat, 0.5)), ms(rank(lat, 0.99))
		p.EnqueueP999Ms, p.EnqueueMaxMs = ms(rank(lat, 0.999)), ms(lat[len(lat)-1])
	}
	cores := func(a, b time.Duration) float64 { return (b - a).Seconds() / secs }
	p.NodeCores, p.WorkerCores = cores(s0.node, s1.node), cores(s0.worker, s1.worker)
	p.HogCores, p.BenchCores = cores(s0.hogs, s1.hogs), cores(s0.self, s1.self)
	p.OtherCores = max(0, usage*float64(runtime.NumCPU())-p.NodeCores-p.WorkerCores-p.HogCores-p.BenchCores)
	return p
}

// rank is the q-quantile of sorted by nearest rank.
func rank(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// newCPURatio compares the hog phases of throttle on and off.
func newCPURatio(modes []CPUMode) *CPURatio {
	var on, off map[string]CPUPhase
	for _, m := range modes {
		ph := map[string]CPUPhase{}
		for _, p := range m.Phases {
			ph[p.Phase] = p
		}
		switch m.Throttle {
		case throttleOn:
			on = ph
		case throttleOff:
			off = ph
		}
	}
	a, ok1 := on["hog"]
	b, ok2 := off["hog"]
	if !ok1 || !ok2 {
		return nil
	}
	return &CPURatio{
		HogEnqueueP50: ratio(a.EnqueueP50Ms, b.EnqueueP50Ms), HogEnqueueP99: ratio(a.EnqueueP99Ms, b.EnqueueP99Ms),
		HogEnqueueP999: ratio(a.EnqueueP999Ms, b.EnqueueP999Ms), HogDispatchPerS: ratio(a.DispatchPerS, b.DispatchPerS),
		HogWorkerCores:   ratio(a.WorkerCores, b.WorkerCores),
		BeforeEnqueueP99: ratio(on["before"].EnqueueP99Ms, off["before"].EnqueueP99Ms),
	}
}

// writeCPUTable prints r for people.
func writeCPUTable(w io.Writer, r *CPUReport) error {
	c := r.Config
	var b strings.Builder
	fmt.Fprintf(&b, "mqmesh bench cpu: %s enqueues/s of %d B (durability %s); worker pool of %d slots burning %.2f ms CPU per task\n"+
		"(%.0f%% of the host's %d CPUs at that rate); hog: %d busy processes for %.0fs, session %s; %s %s\n",
		thousands(c.RatePerS), c.SizeBytes, c.Durability, c.Slots, c.BurnMs, 100*c.HandlerLoad, c.CPUs, c.Hogs, c.HogS, c.HogSession,
		c.GoVersion, c.Platform)
	fmt.Fprintf(&b, "CPU throttle on = defaults: signal %s (node scheduling delay over %.1f ms; host signal: ceiling %.0f%%), every %.1fs, x%.2f down (floor %.0f tasks/s), x%.2f up; off = disabled\n",
		c.Signal, c.MaxDelayMs, 100*c.Ceiling, c.IntervalS, c.Decrease, c.MinRate, c.Increase)
	fmt.Fprintf(&b, "host CPU before the run (load from outside the benchmark): %.0f%%\n\n", 100*r.HostCPUBeforeRun)
	if len(r.Bursts) > 0 {
		writeCPUBursts(&b, c, r.Bursts)
		_, err := io.WriteString(w, b.String())
		return err
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "throttle\tphase\ts\tenqueues\terrors\tp50 ms\tp99 ms\tp99.9 ms\tmax ms\tdispatch/s\tbacklog\thost cpu\tnode\tworker\thogs\tbench\tother\tthrottled\tlimit/s\t")
	for _, m := range r.Modes {
		for _, p := range m.Phases {
			limit := "-"
			if p.ThrottleActive > 0 {
				limit = fmt.Sprintf("%.0f..%.0f", p.ThrottleLimitMin, p.ThrottleLimitMax)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\t%d\t%.2f\t%.2f\t%.2f\t%.1f\t%.0f\t%s\t%.0f%%\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f%%\t%s\t\n",
				m.Throttle, p.Phase, p.DurationS, thousands(float64(p.Enqueues)), p.EnqueueErrors, p.EnqueueP50Ms, p.EnqueueP99Ms,
				p.EnqueueP999Ms, p.EnqueueMaxMs, p.DispatchPerS, thousands(float64(p.BacklogEnd)), 100*p.HostCPU, p.NodeCores,
				p.WorkerCores, p.HogCores, p.BenchCores, p.OtherCores, 100*p.ThrottleActive, limit)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if q := r.Ratio; q != nil {
		fmt.Fprintf(&b, "\nratio on/off during the hog: enqueue p50 %.2fx, p99 %.2fx, p99.9 %.2fx; dispatch/s %.2fx; worker cores %.2fx\n"+
			"(before the hog: enqueue p99 %.2fx)\n",
			q.HogEnqueueP50, q.HogEnqueueP99, q.HogEnqueueP999, q.HogDispatchPerS, q.HogWorkerCores, q.BeforeEnqueueP99)
	}
	b.WriteString("\nthe CPU throttle's last reason per phase:\n")
	for _, m := range r.Modes {
		for _, p := range m.Phases {
			fmt.Fprintf(&b, "- %s %s: %s\n", m.Throttle, p.Phase, p.ThrottleReason)
		}
		if m.Error != "" {
			fmt.Fprintf(&b, "error: throttle %s: %s\n", m.Throttle, m.Error)
		}
	}
	b.WriteString("\nnotes:\n")
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
