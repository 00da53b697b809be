package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// BroadcastSchema names the JSON layout of `bench backlog`; it changes
// only when a field is removed or changes meaning (fields may be added).
const BroadcastSchema = "mqmesh.bench.backlog/v1"

// BroadcastReport is the outcome of `bench backlog`: what the backlog
// broadcast costs each worker, per filter config, in steady state and
// during a backlog event, and how fast a backlog reaches the workers of
// each tier.
type BroadcastReport struct {
	Schema string          `json:"schema"`
	Config BroadcastConfig `json:"config"`
	// Filters has one entry per filter config, in the order given.
	Filters []FilterNotices `json:"filters"`
	// Latency has one entry per tier and filter config that hears it:
	// from the enqueue that crosses the tier's threshold being acknowledged
	// to the backlog being in the worker's view.
	Latency []TierLatency `json:"latency"`
	// Bursts are the backlog events, one per round.
	Bursts []BurstRound `json:"bursts"`
	// OK is true when every phase ran, every worker that should have seen a
	// burst saw it and none that should not did.
	OK    bool     `json:"ok"`
	Error string   `json:"error,omitempty"`
	Notes []string `json:"notes"`
}

// BroadcastConfig is the setting of the run.
type BroadcastConfig struct {
	IDCs        int `json:"idcs"`
	NodesPerIDC int `json:"nodes_per_idc"`
	// WorkersPerFilter is one per node.
	WorkersPerFilter int     `json:"workers_per_filter"`
	SteadyS          float64 `json:"steady_s"`
	WarmupS          float64 `json:"warmup_s"`
	// RatePerNode is the steady load, tasks/s enqueued on (and drained
	// from) every node.
	RatePerNode float64 `json:"rate_per_node"`
	Burst       int     `json:"burst"`       // tasks per burst
	BurstBatch  int     `json:"burst_batch"` // tasks per enqueue request of a burst
	BurstHoldS  float64 `json:"burst_hold_s"`
	Rounds      int     `json:"rounds"`
	PollMs      float64 `json:"poll_ms"` // how often the views are polled
	// Policies are the publishers' (the defaults), nearest tier first.
	Policies  []TierPolicyJSON `json:"policies"`
	CPUs      int              `json:"cpus"`
	GoVersion string           `json:"go_version"`
	Platform  string           `json:"platform"`
}

// TierPolicyJSON is one tier of the publishers' policy.
type TierPolicyJSON struct {
	Tier         string  `json:"tier"`
	High         uint64  `json:"high"`
	Low          uint64  `json:"low"`
	AgeS         float64 `json:"age_s"`
	MinIntervalS float64 `json:"min_interval_s"`
	HeartbeatS   float64 `json:"heartbeat_s"`
}

// FilterNotices is what one filter config costs its workers.
type FilterNotices struct {
	Filter  string   `json:"filter"` // file name
	Tiers   []string `json:"tiers"`  // subscribed tiers
	Workers int      `json:"workers"`
	// HeartbeatFloorPerWorkerPerS is the node heartbeats per second a
	// worker of this config hears by its subscriptions, mean over workers:
	// what it receives when nothing waits anywhere.
	HeartbeatFloorPerWorkerPerS float64 `json:"heartbeat_floor_per_worker_per_s"`
	Steady                      Notices `json:"steady"`
	// Event covers the bursts, from the first enqueue of a burst until
	// every view that had it dropped it (or the settle bound), with the
	// steady load still running.
	Event Notices `json:"event"`
	// ExtraPerWorkerPerEvent is the notices a worker received during a
	// burst beyond its steady rate, mean over workers and rounds.
	ExtraPerWorkerPerEvent float64 `json:"extra_per_worker_per_event"`
}

// Notices are notice rates over a window: received = accepted by the view
// + dropped by the filter's max_rate; heartbeats included.
type Notices struct {
	Seconds float64 `json:"seconds"`
	// PerWorkerPerS is received notices per worker per second, mean over
	// the workers; MaxWorkerPerS the busiest worker's.
	PerWorkerPerS float64 `json:"per_worker_per_s"`
	MaxWorkerPerS float64 `json:"max_worker_per_s"`
	// ByTier splits PerWorkerPerS by tier.
	ByTier                TierFigures `json:"by_tier"`
	AcceptedPerWorkerPerS float64     `json:"accepted_per_worker_per_s"`
	DroppedPerWorkerPerS  float64     `json:"dropped_per_worker_per_s"`
}

// TierFigures is one figure per tier.
type TierFigures struct {
	Local  float64 `json:"local"`
	IDC    float64 `json:"idc"`
	Global float64 `json:"global"`
}

// TierLatency is crossing → view latency for the workers of one filter
// config that hear a burst through one tier.
type TierLatency struct {
	Tier   string `json:"tier"`   // local, idc, global
	Where  string `json:"where"`  // the workers' place relative to the burst node
	Filter string `json:"filter"` // filter config
	// Samples is how many workers saw a burst (one per worker and round);
	// Missed how many that should have did not.
	Samples  int       `json:"samples"`
	Missed   int       `json:"missed"`
	MinMs    float64   `json:"min_ms"`
	MedianMs float64   `json:"median_ms"`
	MaxMs    float64   `json:"max_ms"`
	AllMs    []float64 `json:"all_ms"`
}

// BurstRound is one backlog event.
type BurstRound struct {
	Round int    `json:"round"`
	IDC   string `json:"idc"`
	Node  string `json:"node"`
	Queue string `json:"queue"`
	Tasks int    `json:"tasks"`
	// EnqueueMs is how long the burst's enqueues took.
	EnqueueMs float64 `json:"enqueue_ms"`
	// CrossedMs is when, after the burst's first enqueue was sent, the
	// enqueue crossing each tier's threshold was acknowledged.
	CrossedMs TierFigures `json:"crossed_ms"`
	// DrainMs is how long the drain took once the hold ended.
	DrainMs float64 `json:"drain_ms"`
	// EventS is the event window (burst start to the last view cleared).
	EventS float64 `json:"event_s"`
	// ClearedMs is from the drain's start until the last view that had the
	// burst dropped it (-1: not all did); NotCleared views still had it at
	// the settle bound.
	ClearedMs  float64 `json:"cleared_ms"`
	NotCleared int     `json:"not_cleared"`
	// Missed: workers that should have seen the burst and did not;
	// Unexpected: workers whose filter excludes it and that saw it.
	Missed     int `json:"missed"`
	Unexpected int `json:"unexpected"`
}

// writeBroadcastTable prints r for people.
func writeBroadcastTable(w io.Writer, r *BroadcastReport) error {
	c := r.Config
	var b strings.Builder
	fmt.Fprintf(&b, "mqmesh bench backlog: %d IDCs x %d nodes on loopback, one worker per node per filter; steady %.0fs at %.0f tasks/s per node;\n"+
		"%d bursts of %s tasks held %.0fs; %d CPUs, %s\n\n",
		c.IDCs, c.NodesPerIDC, c.SteadyS, c.RatePerNode, c.Rounds, thousands(float64(c.Burst)), c.BurstHoldS, c.CPUs, c.GoVersion)
	b.WriteString("notices received per worker per second (accepted + dropped by max_rate; heartbeats included; extra/event:\n" +
		"notices per worker per burst beyond its steady rate):\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "filter\ttiers\theartbeat floor\tsteady\tlocal\tidc\tglobal\tmax worker\tevent\tlocal\tidc\tglobal\tmax worker\tdropped\textra/event\t")
	for _, f := range r.Filters {
		s, e := f.Steady, f.Event
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t\n", f.Filter, strings.Join(f.Tiers, ","),
			f.HeartbeatFloorPerWorkerPerS, s.PerWorkerPerS, s.ByTier.Local, s.ByTier.IDC, s.ByTier.Global, s.MaxWorkerPerS,
			e.PerWorkerPerS, e.ByTier.Local, e.ByTier.IDC, e.ByTier.Global, e.MaxWorkerPerS, e.DroppedPerWorkerPerS, f.ExtraPerWorkerPerEvent)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b.WriteString("\ncrossing -> in the worker's view (the enqueue crossing the tier's threshold acknowledged -> the view has the backlog), ms:\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tier\twhere\tfilter\tsamples\tmissed\tmin\tmedian\tmax\t")
	for _, l := range r.Latency {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%.1f\t%.1f\t%.1f\t\n", l.Tier, l.Where, l.Filter, l.Samples, l.Missed, l.MinMs, l.MedianMs, l.MaxMs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b.WriteString("\nbursts:\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tnode\tqueue\ttasks\tenqueue ms\tcrossed local/idc/global ms\tdrain ms\tevent s\tviews cleared ms (from drain start)\tnot cleared\tmissed\tunexpected\t")
	for _, br := range r.Bursts {
		fmt.Fprintf(tw, "%d\t%s/%s\t%s\t%d\t%.1f\t%.1f / %.1f / %.1f\t%.1f\t%.2f\t%.1f\t%d\t%d\t%d\t\n", br.Round, br.IDC, br.Node, br.Queue, br.Tasks,
			br.EnqueueMs, br.CrossedMs.Local, br.CrossedMs.IDC, br.CrossedMs.Global, br.DrainMs, br.EventS, br.ClearedMs,
			br.NotCleared, br.Missed, br.Unexpected)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "\nerror: %s\n", r.Error)
	}
	if len(r.Notes) > 0 {
		b.WriteString("\nnotes:\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// summarize fills min, median and max from AllMs.
func (l *TierLatency) summarize() {
	l.Samples = len(l.AllMs)
	if l.Samples == 0 {
		return
	}
	s := slices.Sorted(slices.Values(l.AllMs))
	l.MinMs, l.MaxMs = s[0], s[len(s)-1]
	if len(s)%2 == 1 {
		l.MedianMs = s[len(s)/2]
	} else {
		l.MedianMs = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
}
