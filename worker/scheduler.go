package worker

import (
	"math/rand/v2"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
)

// SchedulerConfig configures a Scheduler.
type SchedulerConfig struct {
	IDC  string // the pool's IDC
	Node string // the pool's own node ("" on a worker-only host)
	// Policy: the zero value of a field means its default.
	Policy PolicyConfig
	// Rand is the scheduler's random source (jitter, weighted choices).
	Rand *rand.Rand
	// Decide replaces the policy (tests and experiments; nil: Decide).
	Decide func(Situation, PolicyConfig, *rand.Rand) Decision
}

// Action is one thing a fetch loop must do: a pull (Where != Nowhere) with
// Slots reserved slots, or idle for Wait and give the Slots back.
type Action struct {
	Decision
	Queue string
	// ID matches the PullResult of a pull to its action.
	ID uint64
	// Slots are the reserved slots this action holds: a pull gives back
	// what it did not fill, an idle gives them all back.
	Slots int
	// Parked: a pull of the own node that would have long-polled, made
	// without a wait because a remote pull is out.
	Parked bool
}

// PullResult is what became of a pull action.
type PullResult struct {
	Action
	// Got is the number of tasks the pull returned.
	Got int
	// Err is set when the pull failed.
	Err error
	// ReadyAfter is the node's ready count after the pull.
	ReadyAfter uint64
	// Throttled > 0: the node held tasks back for its overload protection
	// for about this long.
	Throttled time.Duration
}

// Scheduler is the deterministic core of a pool's fetch loops: it owns all
// of their state — per queue whether the own node came back short
// (drained), whether the last remote pull found work (helping), whether a
// remote pull is in flight, pending pauses; per node the failure backoff
// (avoid) and per (node, queue) the throttle pauses — and decides every
// step with the policy (Decide). No goroutine, no clock, no I/O: the
// caller passes the time, the backlog view and the free slots to Next,
// carries out the actions, and reports each pull's outcome to Observe. The
// worker's fetch loop is that caller over NATS; the simulator's scale
// model is another, in virtual time. Not safe for concurrent use (the
// fetch loops of a pool share one under a mutex).
//
// Next takes the queue too: a pool's queues share the avoid table.
type Scheduler struct {
	cfg     SchedulerConfig
	queues  map[string]*queueSched
	avoided map[Origin]avoidance
	paused  map[pausedKey]time.Time
	nextID  uint64
	// localBatch, when > 0, replaces the policy's LocalBatch (SetLocalBatch).
	localBatch int
	// last is the queue of the previous lookup (a pool's queues are few
	// and its fetch loops ask in turn).
	last  *queueSched
	lastQ string
}

type queueSched struct {
	drained, helping bool
	remoteBusy       bool
	// park: a local pull made while a remote pull was out came back empty:
	// idle briefly (the shell wakes early when the remote pull ends).
	park bool
	// retryAt: the own node's pull failed; try again then.
	retryAt time.Time
	health  health
}

type avoidance struct {
	until   time.Time
	backoff time.Duration
}

type pausedKey struct {
	o     Origin
	queue string
}

// Timings of the fetch loop's own pauses.
const (
	// parkWait is the idle after an empty local pull while a remote pull
	// is out (the shell wakes early when it ends).
	parkWait = 20 * time.Millisecond
	// localRetry is the pause after a failed pull from the own node.
	localRetry = 100 * time.Millisecond
	// minThrottlePause is the least time a pool leaves alone a node whose
	// pull came back empty because a throttle held its tasks back.
	minThrottlePause = 250 * time.Millisecond
)

// NewScheduler returns a scheduler with no history.
func NewScheduler(cfg SchedulerConfig) *Scheduler {
	cfg.Policy = cfg.Policy.WithDefaults()
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewPCG(1, 2))
	}
	if cfg.Decide == nil {
		cfg.Decide = Decide
	}
	return &Scheduler{cfg: cfg, queues: map[string]*queueSched{}, avoided: map[Origin]avoidance{}, paused: map[pausedKey]time.Time{}}
}

func (s *Scheduler) queue(q string) *queueSched {
	if s.last != nil && s.lastQ == q {
		return s.last
	}
	qs := s.queues[q]
	if qs == nil {
		qs = &queueSched{}
		s.queues[q] = qs
	}
	s.last, s.lastQ = qs, q
	return qs
}

// Next decides what queue's fetch loop does with free reserved slots at
// now, given the backlog view's entries (read only). It returns one
// action; the slice leaves room for a loop that batches.
func (s *Scheduler) Next(now time.Time, queue string, view []backlog.Entry, free int) []Action {
	qs := s.queue(queue)
	idle := func(wait time.Duration) []Action {
		return []Action{{Decision: Decision{Where: Nowhere, Wait: wait}, Queue: queue, Slots: free}}
	}
	if now.Before(qs.retryAt) {
		return idle(qs.retryAt.Sub(now))
	}
	if qs.park {
		qs.park = false
		return idle(parkWait)
	}
	if qs.health.degraded && s.cfg.Node != "" && !s.unhelped(view, queue, now) {
		// Yield: while others keep the own node's oldest task young, take
		// none of its work and help nobody (the node's backlog escalates
		// to healthy pools); once its oldest task has waited yieldAge,
		// nobody else is taking it: work as usual. A probe task every
		// yieldProbe (soon again after a good one) tells it when its
		// handlers are well again.
		if now.Sub(qs.health.probedAt) < qs.health.probeEvery() {
			return idle(yieldWait)
		}
		qs.health.probedAt = now
		s.nextID++
		return []Action{{Decision: Decision{Where: Local, IDC: s.cfg.IDC, Node: s.cfg.Node, MaxTasks: 1}, Queue: queue, ID: s.nextID, Slots: free}}
	}
	var entries []backlog.Entry
	if !qs.remoteBusy {
		entries = s.usable(view, queue, now)
	}
	pol := s.cfg.Policy
	if s.localBatch > 0 {
		pol.LocalBatch = s.localBatch
	}
	d := s.cfg.Decide(Situation{IDC: s.cfg.IDC, Node: s.cfg.Node, Queue: queue, Free: free,
		LocalDrained: qs.drained, Helping: qs.helping, Entries: entries, Now: now}, pol, s.cfg.Rand)
	if d.Where == Nowhere {
		return idle(d.Wait)
	}
	s.nextID++
	a := Action{Decision: d, Queue: queue, ID: s.nextID, Slots: free}
	if d.Where != Local {
		qs.remoteBusy = true
		qs.drained = false // back to the own node first
		return []Action{a}
	}
	// While a remote pull is out, do not park on the own node: look at it
	// at once, and again when the remote pull ends (or soon).
	if d.Wait > 0 && qs.remoteBusy {
		a.Wait, a.Parked = 0, true
	}
	return []Action{a}
}

// SetLocalBatch makes pulls of the own node ask for up to n tasks instead
// of the policy's LocalBatch (0: the policy's again). The worker's fetch
// loop sizes it by the measured round trip of its pulls and its handlers'
// rate, so a pool across a slow link asks for more per pull.
func (s *Scheduler) SetLocalBatch(n int) { s.localBatch = n }

// Observe records what became of a pull action at now. For a failed pull
// from another node it returns how long that node is avoided.
func (s *Scheduler) Observe(r PullResult, now time.Time) (avoidFor time.Duration) {
	qs := s.queue(r.Queue)
	if r.Where == Local {
		// Short means drained, unless the pull got tasks and the node says
		// more are ready (it hands out what its ready window holds; with
		// pipelined pulls a short one is not the end of the backlog).
		qs.drained = r.Err == nil && r.Got < r.MaxTasks && !(r.Got > 0 && r.ReadyAfter > 0 && r.Throttled == 0)
		if r.Wait > 0 {
			qs.helping = false // a long poll: nobody needed help
		}
		if r.Err != nil {
			qs.retryAt = now.Add(localRetry)
		} else if r.Parked && r.Got == 0 {
			qs.park = true
		}
		return 0
	}
	qs.remoteBusy = false
	qs.helping = r.Err == nil && r.Got > 0
	o := Origin{IDC: r.IDC, Node: r.Node}
	if r.Err != nil {
		a := s.avoided[o]
		a.backoff = min(max(2*a.backoff, time.Second), s.cfg.Policy.MaxAvoid)
		a.until = now.Add(a.backoff)
		s.avoided[o] = a
		return a.backoff
	}
	delete(s.avoided, o)
	if r.Got == 0 && r.Throttled > 0 {
		// Its backlog is held back by its overload protection: helping
		// cannot speed it up. Look elsewhere until its throttle may open.
		for k, until := range s.paused {
			if now.After(until) {
				delete(s.paused, k)
			}
		}
		s.paused[pausedKey{o, r.Queue}] = now.Add(min(max(r.Throttled, minThrottlePause), s.cfg.Policy.MaxAvoid))
	}
	return 0
}

// unhelped says whether the own node's entry (host tier) shows a task of
// queue waiting yieldAge or more: nobody else is taking its work.
func (s *Scheduler) unhelped(view []backlog.Entry, queue string, now time.Time) bool {
	for i := range view {
		e := &view[i]
		if e.Queue == queue && e.Node == s.cfg.Node && e.IDC == s.cfg.IDC && e.Ready > 0 {
			return e.OldestReady+now.Sub(e.Updated) >= yieldAge
		}
	}
	return false
}

// ObserveTask records a handler's outcome on queue (ok: done) and how long
// it ran: the pool's health, by which a degraded pool yields.
func (s *Scheduler) ObserveTask(queue string, ok bool, took time.Duration) {
	s.queue(queue).health.observe(ok, took)
}

// Degraded says whether the pool yields queue (see health).
func (s *Scheduler) Degraded(queue string) bool { return s.queue(queue).health.degraded }

// RemoteBusy says whether a remote pull of queue is in flight.
func (s *Scheduler) RemoteBusy(queue string) bool { return s.queue(queue).remoteBusy }

// usable drops the entries of other queues, of nodes being avoided and of
// queues paused on a node. It returns view itself when nothing is dropped
// but other queues (the policy skips those).
func (s *Scheduler) usable(view []backlog.Entry, queue string, now time.Time) []backlog.Entry {
	if len(s.avoided) == 0 && len(s.paused) == 0 {
		return view
	}
	out := make([]backlog.Entry, 0, len(view))
	for _, e := range view {
		o := Origin{IDC: e.IDC, Node: e.Node}
		if a, ok := s.avoided[o]; ok && now.Before(a.until) {
			continue
		}
		if until, ok := s.paused[pausedKey{o, e.Queue}]; ok && now.Before(until) {
			continue
		}
		out = append(out, e)
	}
	return out
}
