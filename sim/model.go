package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/worker"
)

// The scale model: a discrete-event run, in virtual time, of meshes far
// larger than one machine can host for real (1,000 to 10,000 hosts). It
// drives the very structs the real components wrap:
//
//   - every pool's fetch loop is a worker.Scheduler (the fetch loop's
//     core: drained, helping, the remote pull in flight, pauses, avoid
//     backoff) fed by the model's shell as the worker's fetch loop feeds
//     it: Next with the free slots, the pull, Observe with the reply; each
//     pool has its own backlog.View (the real table, with a virtual clock),
//     corrected from pull replies;
//   - every node's publisher is a backlog.Planner ticked every poll
//     (20 ms) with the node's level, as under Publisher.Tick; sync requests
//     go to it when pools start;
//   - notices reach the pools whose filter (backlog.Filters.Resolve, the
//     built-in filter files) subscribes to their subject, after a network
//     delay, and go through View.Apply (MinBacklog, MaxRate, ordering,
//     tiers). Node heartbeats are counted per pool but applied only with
//     ApplyHeartbeats: they change no entry, only the rate caps, and at
//     10,000 hosts they are most of the traffic.
//
// Each pool's backlog.View is real; the model keeps beside it a copy of
// what View.Entries() returns (viewCache), checked against it, so a
// decision does not copy and sort hundreds of entries.
//
// What is modelled rather than run: the node (a FIFO of enqueue times per
// host; a pull takes the oldest), the network (a fixed delay by distance),
// the handler (service time from the scenario's lognormal, × an IDC's
// slowdown), arrivals (Poisson per host), and a pool's death (its leased
// tasks come back to their nodes LeaseRelease later, when gossip has
// declared it dead).

// ModelConfig is one run of the scale model.
type ModelConfig struct {
	// Hosts is the number of hosts, each with a node and a pool, spread
	// evenly over the IDCs.
	Hosts int `json:"hosts"`
	// IDCs names the data centres.
	IDCs []string `json:"idcs"`
	// Slots per pool.
	Slots int `json:"slots"`
	// WorkerOnly is the share of each IDC's hosts that run a pool and no
	// node (at least one host per IDC keeps a node). Default 0.
	WorkerOnly float64 `json:"worker_only"`
	// Rate is the tasks/s enqueued on every host's node: Poisson arrivals
	// (FixedRate: evenly spaced).
	Rate      float64 `json:"rate"`
	FixedRate bool    `json:"fixed_rate"`
	// Duration of the load; after it every fault is restored and the model
	// runs until the backlog is drained, at most Drain.
	Duration time.Duration `json:"duration"`
	Drain    time.Duration `json:"drain"`
	// Handler: latency (lognormal median/p99), error rate and per-IDC
	// slowdown and error rate. A failed task is ready again on its node
	// RetryBackoff later.
	Handler Handler `json:"-"`
	// Filter is the built-in filter every pool uses (local-only,
	// local-idc, everything, noisy-neighbour).
	Filter string `json:"filter"`
	// Filters, when set, replaces the built-in filter named by Filter
	// (experiments: other tiers, thresholds or rate caps).
	Filters *backlog.Filters `json:"-"`
	// Policy is the pools' scheduler configuration (worker.Scheduler).
	Policy worker.PolicyConfig `json:"-"`
	// Publisher is each node's per-tier policy (zero entries: defaults).
	Publisher [backlog.NumTiers]backlog.TierPolicy `json:"-"`
	// Poll is the publishers' observation period. Default 20ms.
	Poll time.Duration `json:"-"`
	// Net is the network: pull round trips and notice delays.
	Net ModelNet `json:"-"`
	// RetryBackoff is how long a failed task waits before it is ready
	// again on its node (the node's first backoff). Default 1s.
	RetryBackoff time.Duration `json:"-"`
	// LeaseRelease is how long after a pool dies its leased tasks are
	// ready again on their nodes (gossip declares it failed). Default 5s.
	LeaseRelease time.Duration `json:"-"`
	// ApplyHeartbeats delivers node heartbeats to every subscribed view
	// (they then count against the tiers' MaxRate, as in the real
	// watcher). Off by default: heartbeats are counted as deliveries but
	// not applied, which keeps 10,000-host runs small (see the report).
	ApplyHeartbeats bool `json:"apply_heartbeats"`
	// Timeline of IDC-level faults: normal, degrade (slowdown only),
	// restore, kill-pools, restore-pools, restore-all.
	Timeline []Event `json:"-"`
	// CheckViews compares a pool's copy of its view's entries with
	// View.Entries() every CheckViews decisions (0: never; see viewCache).
	// Default 1000.
	CheckViews int `json:"-"`
	// SummaryK is the most nodes per queue an IDC's summary names
	// (backlog.SummaryConfig.K; its shards are sized to the IDC). Default 8.
	SummaryK int `json:"summary_k"`
	// Sample is the period of backlog sampling. Default 100ms.
	Sample time.Duration `json:"-"`
	Seed   uint64        `json:"seed"`

	hooks *modelHooks
}

// ModelNet is the model's network: pull round trips by distance, and the
// delay of a notice from its node to a pool.
type ModelNet struct {
	PullLocal, PullSameIDC, PullCrossIDC       time.Duration
	NoticeLocal, NoticeSameIDC, NoticeCrossIDC time.Duration
}

// DefaultModelNet: a pull's round trip is 0.2 ms on the host, 1 ms in the
// IDC and 20 ms across IDCs; notices take 0.2 ms / 1 ms / 20 ms.
var DefaultModelNet = ModelNet{
	PullLocal: 200 * time.Microsecond, PullSameIDC: time.Millisecond, PullCrossIDC: 20 * time.Millisecond,
	NoticeLocal: 200 * time.Microsecond, NoticeSameIDC: time.Millisecond, NoticeCrossIDC: 20 * time.Millisecond,
}

// modelHooks let tests watch (or replace) the decisions the model makes.
type modelHooks struct {
	// decide replaces worker.Decide (nil: worker.Decide).
	decide func(worker.Situation, worker.PolicyConfig, *rand.Rand) worker.Decision
	// onDecide sees every pool decision with the pool's random state
	// (rand.PCG.MarshalBinary) just before it was made.
	onDecide func(pool string, s worker.Situation, rngState []byte, d worker.Decision)
	// onPull sees every pull as the node serves it.
	onPull func(pool string, a worker.Action, decidedAt, arrivedAt time.Duration)
	// onPublish sees every notice a node's planner sends.
	onPublish func(node string, n backlog.Notice)
}

// Model faults (ModelFault).
const (
	FaultPoolsLost = "pools-lost"
	FaultDegrade   = "degrade"
	FaultNone      = "none"
)

// ModelFaults lists the default faults the CLI offers.
var ModelFaults = []string{FaultPoolsLost, FaultDegrade, FaultNone}

// ModelFromScenario builds a model run of hosts hosts in idcs IDCs from a
// scenario: its handler, the first IDC's slots, its filter and seed. The
// IDCs take the scenario's names, then idc4, idc5, ... The timeline is
// the default fault on the first IDC for the middle third of the load:
// pools-lost (its pools die, then come back), degrade (its handlers get
// 20× slower) or none.
func ModelFromScenario(s Scenario, hosts, idcs int, duration time.Duration, rate float64, fault string) (ModelConfig, error) {
	return ModelFromScenarioWith(s, hosts, idcs, duration, rate, fault, ModelExtras{})
}

// ModelExtras are the faults a model run adds to its measured fault.
type ModelExtras struct {
	// ErrorRate of every handler (tasks retried after the backoff), when
	// the scenario sets none.
	ErrorRate float64
	// WorkerOnly share of hosts (ModelConfig.WorkerOnly).
	WorkerOnly float64
	// Crashes: CrashShare of the second IDC's nodes (its summarizer
	// first) crash at 3/4 of the load and restart at 9/10; SlowLink is
	// added each way on the last IDC's links during the measured fault.
	CrashShare float64
	SlowLink   time.Duration
}

// DefaultModelExtras: 1% handler errors, 10% worker-only hosts, 5% of an
// IDC's nodes crashing, a 20 ms slower link.
var DefaultModelExtras = ModelExtras{ErrorRate: 0.01, WorkerOnly: 0.1, CrashShare: 0.05, SlowLink: 20 * time.Millisecond}

// ModelFromScenarioWith is ModelFromScenario with extra faults.
func ModelFromScenarioWith(s Scenario, hosts, idcs int, duration time.Duration, rate float64, fault string, x ModelExtras) (ModelConfig, error) {
	if idcs < 1 || idcs > 64 {
		return ModelConfig{}, fmt.Errorf("idcs %d: want 1..64", idcs)
	}
	names := s.IDCNames()
	if len(names) > idcs {
		names = names[:idcs]
	}
	for i := len(names); i < idcs; i++ {
		name := fmt.Sprintf("idc%d", i+1)
		for slices.Contains(names, name) {
			name += "x"
		}
		names = append(names, name)
	}
	slots := 8
	if len(s.Topology.IDCs) > 0 {
		slots = s.Topology.IDCs[0].Slots
	}
	c := ModelConfig{
		Hosts: hosts, IDCs: names, Slots: slots, Rate: rate, Duration: duration,
		Handler: s.Handler, Filter: s.Filter, Seed: s.Seed,
	}
	c.Handler.PerIDC = maps.Clone(c.Handler.PerIDC)
	first, start, end := names[0], Duration(duration/3), Duration(2*duration/3)
	c.Timeline = []Event{{At: 0, Phase: "normal", Action: "normal"}}
	switch fault {
	case FaultPoolsLost:
		c.Timeline = append(c.Timeline,
			Event{At: start, Phase: first + " pools lost", Action: "kill-pools", IDC: first},
			Event{At: end, Phase: "recovery", Action: "restore-pools", IDC: first})
	case FaultDegrade:
		c.Timeline = append(c.Timeline,
			Event{At: start, Phase: first + " degraded", Action: "degrade", IDC: first, Slowdown: 20, ErrorRate: 0.5},
			Event{At: end, Phase: "recovery", Action: "restore", IDC: first})
	case FaultNone, "":
	default:
		return ModelConfig{}, fmt.Errorf("fault %q: want one of %v", fault, ModelFaults)
	}
	if c.Handler.ErrorRate == 0 {
		c.Handler.ErrorRate = x.ErrorRate
	}
	c.WorkerOnly = x.WorkerOnly
	last := names[len(names)-1]
	if x.SlowLink > 0 && len(names) > 1 {
		c.Timeline = append(c.Timeline,
			Event{At: start, Action: "slow-link", IDC: last, Latency: Duration(x.SlowLink)},
			Event{At: end, Action: "heal", IDC: last})
	}
	if x.CrashShare > 0 && len(names) > 1 {
		c.Timeline = append(c.Timeline,
			Event{At: Duration(3 * duration / 4), Phase: names[1] + " nodes crashed", Action: "kill-nodes", IDC: names[1], Share: x.CrashShare},
			Event{At: Duration(9 * duration / 10), Phase: names[1] + " nodes back", Action: "restart-nodes", IDC: names[1]})
	}
	slices.SortStableFunc(c.Timeline, func(a, b Event) int { return cmp.Compare(a.At, b.At) })
	return c.withDefaults(), nil
}

func (c ModelConfig) withDefaults() ModelConfig {
	if c.Slots == 0 {
		c.Slots = 8
	}
	if c.Drain == 0 {
		c.Drain = 30 * time.Second
	}
	if c.Handler.Median == 0 || c.Filter == "" {
		def := Default() // the default scenario's handler and filter
		if c.Handler.Median == 0 {
			c.Handler = def.Handler
		}
		if c.Filter == "" {
			c.Filter = def.Filter
		}
	}
	c.Policy = c.Policy.WithDefaults()
	for _, t := range backlog.Tiers {
		if c.Publisher[t] == (backlog.TierPolicy{}) {
			c.Publisher[t] = backlog.DefaultPolicies[t]
		}
	}
	if c.Poll <= 0 {
		c.Poll = backlog.DefaultPoll
	}
	if c.Net == (ModelNet{}) {
		c.Net = DefaultModelNet
	}
	if c.LeaseRelease <= 0 {
		c.LeaseRelease = 5 * time.Second
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = mqnode.DefaultBackoffBase
	}
	if c.CheckViews == 0 {
		c.CheckViews = 1000
	} else if c.CheckViews < 0 {
		c.CheckViews = 0
	}
	if c.Sample <= 0 {
		c.Sample = 100 * time.Millisecond
	}
	if c.SummaryK <= 0 {
		c.SummaryK = backlog.DefaultSummaryK
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	return c
}

// Validate checks a model configuration (after defaults).
func (c ModelConfig) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("model %s: %s", field, fmt.Sprintf(format, a...)))
	}
	if len(c.IDCs) == 0 {
		bad("idcs", "at least one IDC is needed")
	}
	if c.Hosts < len(c.IDCs) || c.Hosts > 100_000 {
		bad("hosts", "%d: want one per IDC at least (%d) and at most 100000", c.Hosts, len(c.IDCs))
	}
	if c.WorkerOnly < 0 || c.WorkerOnly >= 1 {
		bad("worker_only", "%v: want 0 <= share < 1", c.WorkerOnly)
	}
	if c.Slots < 1 || c.Slots > 1024 {
		bad("slots", "%d: want 1..1024", c.Slots)
	}
	if c.Rate < 0 || c.Rate > 100_000 {
		bad("rate", "%v tasks/s per host: want 0..100000", c.Rate)
	}
	if c.Duration <= 0 || c.Duration > 24*time.Hour || c.Drain <= 0 {
		bad("duration", "%s (drain %s): want 0 < duration <= 24h and drain > 0", c.Duration, c.Drain)
	}
	if c.Handler.Median.D() <= 0 || c.Handler.P99 < c.Handler.Median {
		bad("handler", "need 0 < median <= p99")
	}
	if c.Handler.ErrorRate < 0 || c.Handler.ErrorRate >= 1 {
		bad("handler.error_rate", "%v: want 0 <= rate < 1", c.Handler.ErrorRate)
	}
	for name, b := range c.Handler.PerIDC {
		if !slices.Contains(c.IDCs, name) {
			bad("handler.per_idc."+name, "no such IDC")
		}
		if b.Slowdown < 0 || b.ErrorRate < 0 || b.ErrorRate >= 1 {
			bad("handler.per_idc."+name, "want slowdown >= 0 and 0 <= error rate < 1")
		}
	}
	if _, err := filterFor(c.Filter); err != nil && c.Filters == nil {
		bad("filter", "%v", err)
	}
	if err := backlog.ValidatePolicies(c.Publisher); err != nil {
		bad("publisher", "%v", err)
	}
	var last Duration
	for i, ev := range c.Timeline {
		f := fmt.Sprintf("timeline[%d]", i)
		if ev.At < last || ev.At.D() > c.Duration {
			bad(f+".at", "%s: want events in time order within the load (%s)", ev.At.D(), c.Duration)
		}
		last = ev.At
		switch ev.Action {
		case "normal", "restore-all":
		case "degrade":
			if ev.Slowdown < 1 || ev.ErrorRate < 0 || ev.ErrorRate >= 1 {
				bad(f, "degrade needs slowdown >= 1 and 0 <= error rate < 1")
			}
			fallthrough
		case "kill-nodes":
			if ev.Action == "kill-nodes" && (ev.Share <= 0 || ev.Share > 1) {
				bad(f+".share", "%v: kill-nodes needs 0 < share <= 1", ev.Share)
			}
			fallthrough
		case "slow-link":
			if ev.Action == "slow-link" && ev.Latency <= 0 {
				bad(f+".latency", "slow-link needs a latency > 0")
			}
			fallthrough
		case "restore", "kill-pools", "restore-pools", "restart-nodes", "heal":
			if !slices.Contains(c.IDCs, ev.IDC) {
				bad(f+".idc", "%q: no such IDC", ev.IDC)
			}
		default:
			bad(f+".action", "%q: the model knows normal, degrade, restore, kill-pools, restore-pools, kill-nodes, restart-nodes, slow-link, heal, restore-all", ev.Action)
		}
	}
	return errors.Join(errs...)
}

// ModelReport is the outcome of the model at every size.
type ModelReport struct {
	Seed    uint64        `json:"seed"`
	IDCs    []string      `json:"idcs"`
	Slots   int           `json:"slots"`
	Rate    float64       `json:"rate_per_host"`
	Filter  string        `json:"filter"`
	Handler string        `json:"handler"`
	Fault   string        `json:"fault"`
	Sizes   []int         `json:"sizes_run"`
	Runs    []ModelResult `json:"runs"`
}

// ModelProgress is reported while a size runs.
type ModelProgress struct {
	Hosts    int
	VirtualS float64
	Phase    string
	Backlog  uint64
	Done     int64
	Events   uint64
	// Finished: the run of this size is over (the last report of it).
	Finished bool
}

// RunModel runs one configuration.
func RunModel(ctx context.Context, c ModelConfig, progress func(ModelProgress)) (*ModelResult, error) {
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	m, err := newModel(c)
	if err != nil {
		return nil, err
	}
	m.progress = progress
	if err := m.run(ctx); err != nil {
		return nil, err
	}
	r := m.result()
	if progress != nil {
		progress(ModelProgress{Hosts: r.Hosts, VirtualS: r.VirtualS, Phase: "end", Done: r.Completed, Events: r.Events, Finished: true})
	}
	return r, nil
}

// RunModels runs base at each size (number of hosts), smallest first.
func RunModels(ctx context.Context, base ModelConfig, sizes []int, progress func(ModelProgress)) (*ModelReport, error) {
	base = base.withDefaults()
	sizes = slices.Clone(sizes)
	slices.Sort(sizes)
	sizes = slices.Compact(sizes)
	rep := &ModelReport{
		Seed: base.Seed, IDCs: base.IDCs, Slots: base.Slots, Rate: base.Rate, Filter: base.Filter, Fault: describeFault(base),
		Handler: fmt.Sprintf("lognormal %s median, %s p99", base.Handler.Median.D(), base.Handler.P99.D()),
	}
	for _, n := range sizes {
		c := base
		c.Hosts = n
		res, err := RunModel(ctx, c, progress)
		if err != nil {
			return rep, fmt.Errorf("%d hosts: %w", n, err)
		}
		rep.Sizes = append(rep.Sizes, n)
		rep.Runs = append(rep.Runs, *res)
	}
	return rep, nil
}
