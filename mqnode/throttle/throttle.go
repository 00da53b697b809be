package throttle

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// Calls is a count of backend calls that a handler reported for one task.
type Calls struct {
	Backend string
	N       uint64
}

// State describes one throttle for stats: what it limits, how far, why.
type State struct {
	// Kind is "retry" (per queue), "cpu" (the node's dispatch) or
	// "budget" (a backend's mesh-wide budget, per queue that calls it).
	Kind    string
	Backend string
	// Active says whether the limit holds dispatch back now.
	Active bool
	// Limit is in retries/s (retry), tasks/s (cpu) or calls/s (budget);
	// 0 = none.
	Limit  float64
	Reason string
	Since  time.Time
	// Deferred counts tasks held back by this throttle: retries put back
	// (retry), or tasks a pull could have had, summed over dispatch
	// attempts (cpu, budget: a task waiting through several pulls counts
	// at each).
	Deferred uint64
}

// BackendState is one backend's usage and budget as this node sees it.
type BackendState struct {
	Backend string
	// Budget is the mesh-wide calls/s (0 = no budget, usage only).
	Budget float64
	// NodeUsage is the calls/s of tasks this node dispatched; MeshUsage
	// the sum over every node that reported; Share this node's part of
	// the budget; Nodes how many nodes share it.
	NodeUsage, MeshUsage, Share float64
	Nodes                       int
	Constrained                 bool
	Deferred                    uint64
}

// maxBackends caps the distinct backend names a node tracks, so reports
// with made-up names cannot grow its memory without bound.
const maxBackends = 256

// Throttle is one node's overload protection. All methods are safe for
// concurrent use.
type Throttle struct {
	cfg  Config
	self string
	now  func() int64

	mu       sync.Mutex
	queues   map[string]*queueState
	cpu      cpuControl
	lastCPU  int64
	budgets  map[string]*budget
	observed map[string]*window // usage of backends without a budget
}

type queueState struct {
	retry *retryGate
	// known: a task of the queue was settled since the node started, so
	// cost holds what its handlers report (see Dispatch).
	known bool
	probe bucket
	// cost is the mean calls per task to each backend the queue's
	// handlers reported, an exponential moving average over settlements.
	cost map[string]float64
}

const costAlpha = 0.1

// New returns the throttle of node self (a unique id in the mesh). cfg must
// be defaulted and valid; now is the clock (unix ms).
func New(cfg Config, self string, now func() int64) *Throttle {
	t := &Throttle{cfg: cfg, self: self, now: now, queues: map[string]*queueState{},
		budgets: map[string]*budget{}, observed: map[string]*window{}}
	t.cpu.cfg = cfg.CPU
	t.cpu.cfg.Disabled = cfg.CPU.Disabled || cfg.Disabled
	t.cfg.Retry.Disabled = cfg.Retry.Disabled || cfg.Disabled
	for name, b := range cfg.Backends {
		t.budgets[name] = newBudget(name, b.Budget, cfg.UsageWindow.Milliseconds())
	}
	return t
}

// Config returns the throttle's configuration.
func (t *Throttle) Config() Config { return t.cfg }

func (t *Throttle) queueLocked(q string) *queueState {
	qs := t.queues[q]
	if qs == nil {
		qs = &queueState{retry: newRetryGate(t.cfg.Retry), cost: map[string]float64{}}
		t.queues[q] = qs
	}
	return qs
}

// Forget drops a queue's state (the queue was deleted).
func (t *Throttle) Forget(q string) {
	t.mu.Lock()
	delete(t.queues, q)
	t.mu.Unlock()
}

// Dispatch asks to deliver n ready tasks of queue q. It grants up to n at
// once (taking their tokens from the CPU limit and from the budget of every
// backend q's tasks call) and, when it grants none, says how long until
// one fits. Tokens of granted tasks that end up not delivered go back with
// Refund. by names the throttle that held tasks back ("cpu",
// "budget:<backend>"), if any.
//
// While budgets exist and a queue's calls per task are not known yet (its
// first task has not been settled since the node started), the queue goes
// at probeRate tasks/s, so a restart cannot flood a budgeted backend.
func (t *Throttle) Dispatch(q string, n int) (granted int, wait time.Duration, by string) {
	if n <= 0 {
		return 0, 0, ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	qs := t.queueLocked(q)
	granted = min(n, t.cpu.bucket.room(now, 1))
	probing := t.probingLocked(qs)
	if probing {
		if qs.probe.rate == 0 {
			qs.probe.set(now, probeRate, 1)
			qs.probe.tokens = 1
		}
		granted = min(granted, qs.probe.room(now, 1))
	}
	if !t.cfg.Disabled {
		for name, c := range qs.cost {
			if b := t.budgets[name]; b != nil {
				granted = min(granted, b.bucket.room(now, c))
			}
		}
	}
	granted = max(granted, 0)
	if held := n - granted; held > 0 {
		if t.cpu.bucket.room(now, 1) < n {
			t.cpu.deferred += uint64(held)
			if w := t.cpu.bucket.wait(now); w >= wait {
				wait, by = w, "cpu"
			}
		}
		if probing && qs.probe.room(now, 1) < n {
			if w := qs.probe.wait(now); w >= wait {
				wait, by = w, "budget:learning"
			}
		}
		for name, c := range qs.cost {
			if b := t.budgets[name]; b != nil && !t.cfg.Disabled && b.bucket.room(now, c) < n {
				b.heldBack = true
				b.deferred += uint64(held)
				if w := b.bucket.wait(now); w >= wait {
					wait, by = w, "budget:"+name
				}
			}
		}
	}
	t.takeLocked(qs, granted, probing)
	if granted > 0 {
		wait = 0
	}
	return granted, wait, by
}

// probeRate is the dispatch rate of a queue whose cost is being learnt.
const probeRate = 10.0

func (t *Throttle) takeLocked(qs *queueState, n int, probing bool) {
	t.cpu.bucket.take(n, 1)
	t.cpu.dispatched = max(t.cpu.dispatched+float64(n), 0)
	if t.cfg.Disabled {
		return
	}
	if probing {
		qs.probe.take(n, 1)
	}
	for name, c := range qs.cost {
		if b := t.budgets[name]; b != nil {
			b.bucket.take(n, c)
		}
	}
}

// Refund gives back the tokens of n granted tasks that were not delivered.
func (t *Throttle) Refund(q string, n int) {
	if n <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	qs := t.queueLocked(q)
	t.takeLocked(qs, -n, t.probingLocked(qs))
}

// probingLocked says whether qs's calls per task are still being learnt
// while budgets exist (see Dispatch).
func (t *Throttle) probingLocked(qs *queueState) bool {
	return !t.cfg.Disabled && len(t.budgets) > 0 && !qs.known
}

// AdmitRetry says whether a retry (a delivery after the first) of queue q
// may go now; if not, deferFor is how long to put it back.
func (t *Throttle) AdmitRetry(q string) (ok bool, deferFor time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	g, now := t.queueLocked(q).retry, t.now()
	if g.admit(now) {
		return true, 0
	}
	return false, g.deferDelay(now)
}

// Result is how a handler settled a task.
type Result int

const (
	// Succeeded: acked.
	Succeeded Result = iota
	// Failed: nacked (to be retried).
	Failed
	// GaveUp: sent to the dead letter queue by the handler; neither a
	// success nor a failure of the backend.
	GaveUp
)

// Outcome records one execution of a task of queue q that ended without a
// settlement: a lease that expired is a failure. (Settled records the
// outcome of the others.)
func (t *Throttle) Outcome(q string, success bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.queueLocked(q).retry.observe(t.now(), success)
}

// minCost: a queue's mean calls per task to a backend below this is taken
// as "does not call it" (the entry is dropped).
const minCost = 0.01

// Settled records one settled task of queue q (every ack, nack or
// give-up, with or without calls): its outcome for the retry gate, and the
// backend calls its handler reported, to learn each queue's calls per task
// and each backend's usage. A task that did not succeed and reported no
// call to a backend does not lower the queue's mean for it (it may have
// failed before the call). Invalid backend names must be dropped by the
// caller.
func (t *Throttle) Settled(q string, calls []Calls, r Result) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	qs := t.queueLocked(q)
	if r != GaveUp {
		qs.retry.observe(now, r == Succeeded)
	}
	success := r == Succeeded
	qs.known = true
	for name, c := range qs.cost {
		var n uint64
		for _, x := range calls {
			if x.Backend == name {
				n += x.N
			}
		}
		if n == 0 && !success {
			continue
		}
		c += costAlpha * (float64(n) - c)
		if c < minCost {
			delete(qs.cost, name)
			continue
		}
		qs.cost[name] = c
	}
	for _, x := range calls {
		if x.N == 0 {
			continue
		}
		b := t.budgets[x.Backend]
		if _, ok := qs.cost[x.Backend]; !ok && (b != nil || len(qs.cost) < maxBackends) {
			qs.cost[x.Backend] = float64(x.N) // first sighting: start at it
		}
		if b != nil {
			b.calls.add(now, float64(x.N), 0)
			continue
		}
		w := t.observed[x.Backend]
		if w == nil {
			if len(t.observed) >= maxBackends {
				continue // bounded: further names are not tracked
			}
			w = newWindowMs(t.cfg.UsageWindow.Milliseconds(), 8)
			t.observed[x.Backend] = w
		}
		w.add(now, float64(x.N), 0)
	}
}

// SampleCPU feeds one host CPU sample (0..1 since the previous one), for
// cpu.signal host.
func (t *Throttle) SampleCPU(usage float64) {
	t.sampleCPU(t.cfg.CPU.hostReading(usage))
}

// SampleStarvation feeds one sample of the node's own scheduling delay
// (see ProcessStarvation), for cpu.signal starvation.
func (t *Throttle) SampleStarvation(d time.Duration) {
	t.sampleCPU(t.cfg.CPU.starvationReading(d))
}

func (t *Throttle) sampleCPU(r cpuReading) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	elapsed := now - t.lastCPU
	if t.lastCPU == 0 {
		elapsed = t.cfg.CPU.Interval.Milliseconds()
	}
	t.lastCPU = now
	t.cpu.tick(now, r, elapsed)
}

// Share recomputes this node's budget shares from the latest reports and
// returns this node's usage of each budgeted backend, for the mesh. It
// returns nothing when no budgeted backend is in use here.
func (t *Throttle) Share() []PeerUsage {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cfg.Disabled {
		return nil
	}
	now := t.now()
	var out []PeerUsage
	for _, name := range slices.Sorted(maps.Keys(t.budgets)) {
		b := t.budgets[name]
		own := b.own(now)
		b.reshare(now, t.self, t.cfg.PeerTTL.Milliseconds())
		if own.Usage > 0 || own.Want == Unbounded {
			out = append(out, own)
		}
	}
	return out
}

// Peer records a usage report of another node.
func (t *Throttle) Peer(node string, usage []PeerUsage) {
	if node == t.self {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for _, u := range usage {
		if b := t.budgets[u.Backend]; b != nil {
			b.peers[node] = peer{usage: u.Usage, want: u.Want, at: now}
		}
	}
}

// QueueStates returns the throttles that apply to queue q.
func (t *Throttle) QueueStates(q string) []State {
	t.mu.Lock()
	defer t.mu.Unlock()
	qs := t.queues[q]
	if qs == nil {
		return nil
	}
	g := qs.retry
	now := t.now()
	g.update(now)
	limit := 0.0
	if g.throttled {
		limit = g.limit
	}
	out := []State{{Kind: "retry", Active: g.throttled, Limit: limit,
		Reason: g.describe(now), Since: msTime(g.since), Deferred: g.deferred}}
	for _, name := range slices.Sorted(maps.Keys(qs.cost)) {
		b := t.budgets[name]
		if b == nil {
			continue
		}
		out = append(out, State{Kind: "budget", Backend: name, Active: b.holding(), Limit: b.share,
			Reason: fmt.Sprintf("%.2f calls per task; %s", qs.cost[name], b.reason), Since: msTime(b.since), Deferred: b.deferred})
	}
	return out
}

// NodeStates returns the node-wide throttles (CPU).
func (t *Throttle) NodeStates() []State {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := &t.cpu
	reason := c.reason
	if reason == "" || c.limit == 0 {
		reason = c.last
	}
	if reason == "" {
		reason = "no " + c.cfg.Signal + " sample yet"
	}
	if c.cfg.Disabled {
		reason = "disabled"
	}
	return []State{{Kind: "cpu", Active: c.limit > 0, Limit: c.limit, Reason: reason, Since: msTime(c.since), Deferred: c.deferred}}
}

// Backends returns every backend this node has seen or has a budget for.
func (t *Throttle) Backends() []BackendState {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var out []BackendState
	for _, name := range slices.Sorted(maps.Keys(t.budgets)) {
		b := t.budgets[name]
		out = append(out, BackendState{Backend: name, Budget: b.budget, NodeUsage: b.calls.rate(now),
			MeshUsage: b.meshUsage, Share: b.share, Nodes: b.nodes, Constrained: b.holding(), Deferred: b.deferred})
	}
	for _, name := range slices.Sorted(maps.Keys(t.observed)) {
		u := t.observed[name].rate(now)
		out = append(out, BackendState{Backend: name, NodeUsage: u, MeshUsage: u, Nodes: 1})
	}
	return out
}

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
