package backlog

import (
	"math"
	"time"

	"github.com/mqmesh/mqmesh/backlog/backlogpb"
	"github.com/mqmesh/mqmesh/mqnode"
)

// PlannerConfig configures a node's publishing decisions.
type PlannerConfig struct {
	IDC, Node  string
	NATSClient string
	// Incarnation orders the node's restarts (the publisher's start time).
	Incarnation uint64
	// Policies per tier; the zero value of an entry means its default.
	Policies [NumTiers]TierPolicy
}

// Notice is one notice the planner decided to send, and on which tier.
type Notice struct {
	Tier Tier
	Msg  *backlogpb.Notice
}

// Planner is the deterministic core of a node's backlog publisher: all of
// its state (per tier and queue: in the backlog state or not, the level
// last sent, when; sync requests; node heartbeats; the sequence number;
// arrival and drain rates) and every decision, with no goroutine, no clock
// and no I/O. The caller observes the node and hands the levels and the
// time to Tick, and sends what Tick returns. Publisher is that caller over
// NATS; the simulator's scale model is another, in virtual time. Not safe
// for concurrent use.
type Planner struct {
	cfg    PlannerConfig
	seq    uint64
	tick   uint64
	queues map[string]*plannerQueue
	// last is the queue of the previous lookup (most nodes have one).
	last     *plannerQueue
	lastQ    string
	hb       [NumTiers]time.Time
	hbSent   [NumTiers]bool
	syncReq  [NumTiers]bool
	lastSync [NumTiers]time.Time
	synced   [NumTiers]bool
	out      []Notice
}

// NewPlanner returns a planner; cfg.Policies are completed with defaults
// (validate them with ValidatePolicies).
func NewPlanner(cfg PlannerConfig) *Planner {
	for _, t := range Tiers {
		if cfg.Policies[t] == (TierPolicy{}) {
			cfg.Policies[t] = DefaultPolicies[t]
		}
	}
	return &Planner{cfg: cfg, queues: map[string]*plannerQueue{}}
}

// RequestSync asks for the current state of every queue in the backlog
// state on tier t at the next Tick (at most once per the tier's
// MinInterval): a watcher subscribed and does not want to wait for the
// heartbeats.
func (p *Planner) RequestSync(t Tier) { p.syncReq[t] = true }

// Tick observes the node's queues at now and returns the notices to send,
// in order. The slice is reused by the next Tick.
func (p *Planner) Tick(levels []mqnode.QueueLevel, now time.Time) []Notice {
	p.out = p.out[:0]
	p.tick++
	var sync [NumTiers]bool
	for _, tier := range Tiers {
		// Sync requests are answered at most once per MinInterval.
		if p.syncReq[tier] && (!p.synced[tier] || now.Sub(p.lastSync[tier]) >= p.cfg.Policies[tier].MinInterval) {
			p.syncReq[tier], p.synced[tier], p.lastSync[tier] = false, true, now
			sync[tier] = true
		}
	}
	seen := 0 // distinct queues seen (levels name each queue once)
	for i := range levels {
		ql := &levels[i]
		pq := p.last
		if pq == nil || p.lastQ != ql.Queue {
			if pq = p.queues[ql.Queue]; pq == nil {
				pq = &plannerQueue{}
				p.queues[ql.Queue] = pq
			}
			p.last, p.lastQ = pq, ql.Queue
		}
		if pq.tick != p.tick {
			seen++
		}
		pq.tick = p.tick
		r := &pq.rates
		r.observe(ql, now)
		for _, tier := range Tiers {
			pol := &p.cfg.Policies[tier]
			if pol.Off {
				continue
			}
			st := &pq.st[tier]
			// A predicted wait escalates one tier at a time: to a wider
			// tier only once the nearer one has been announced for twice its
			// MinInterval and did not bring the wait down. A stall (no
			// consumer at all) goes to every tier at once.
			var nearer *QueueState
			var settle time.Duration
			if tier > TierHost && !p.cfg.Policies[tier-1].Off {
				nearer, settle = &pq.st[tier-1], 2*p.cfg.Policies[tier-1].MinInterval
			}
			st.urgent = r.urgent(pol, ql.Ready, now, nearer, settle)
			send, level, hb := pol.Decide(st, ql.Ready, ql.OldestReady, now)
			if !send && sync[tier] && st.in {
				send, level = true, st.sentLevel
			}
			if send {
				p.emit(tier, ql, r, level, hb, now)
			}
		}
	}
	for _, tier := range Tiers {
		pol := &p.cfg.Policies[tier]
		if pol.Off {
			continue
		}
		if pol.NodeHeartbeat && (!p.hbSent[tier] || now.Sub(p.hb[tier]) >= pol.Heartbeat) {
			p.hb[tier], p.hbSent[tier] = now, true
			p.emit(tier, &mqnode.QueueLevel{Queue: HeartbeatQueue}, nil, 0, true, now)
		}
	}
	// Forget queues no longer seen (only walk the map when some are).
	if len(p.queues) > seen {
		for q, pq := range p.queues {
			if pq.tick != p.tick {
				delete(p.queues, q)
				if pq == p.last {
					p.last = nil
				}
			}
		}
	}
	return p.out
}

func (p *Planner) emit(tier Tier, ql *mqnode.QueueLevel, r *queueRates, level uint32, hb bool, now time.Time) {
	p.seq++
	enq, drain := ql.EnqueueRate, ql.DrainRate
	if r != nil && r.known {
		enq, drain = r.arrival, r.drain
	}
	p.out = append(p.out, Notice{Tier: tier, Msg: &backlogpb.Notice{
		Idc: p.cfg.IDC, Node: p.cfg.Node, Queue: ql.Queue, Ready: ql.Ready,
		OldestReadyAgeMs: ql.OldestReady.Milliseconds(), EnqueueRate: enq, DrainRate: drain,
		Seq: p.seq, Incarnation: p.cfg.Incarnation, Level: level, Heartbeat: hb, SentUnixMs: now.UnixMilli(),
		NatsClient: p.cfg.NATSClient,
	}})
}

// plannerQueue is the planner's memory of one queue: its rates and its
// state per tier; tick is the last Tick that saw it.
type plannerQueue struct {
	tick  uint64
	rates queueRates
	st    [NumTiers]QueueState
}

// queueRates estimates a queue's arrival and drain rates from successive
// observations: arrivals from EnqueuedTotal, drain as what left the ready
// set (ready before + arrivals − ready now), each a moving average over
// about RateWindow. It also remembers when the queue last drained at all.
type queueRates struct {
	known                bool
	at                   time.Time
	total, ready         uint64
	arrival, drain       float64
	lastDrain, waitingAt time.Time
}

// RateWindow is the time constant of the planner's arrival and drain rate
// estimates.
const RateWindow = 500 * time.Millisecond

func (r *queueRates) observe(ql *mqnode.QueueLevel, now time.Time) {
	if !r.known || ql.EnqueuedTotal < r.total {
		*r = queueRates{known: true, at: now, total: ql.EnqueuedTotal, ready: ql.Ready, lastDrain: now,
			arrival: ql.EnqueueRate, drain: ql.DrainRate}
		if ql.Ready > 0 {
			r.waitingAt = now
		}
		return
	}
	dt := now.Sub(r.at).Seconds()
	if dt <= 0 {
		return
	}
	in := ql.EnqueuedTotal - r.total
	out := int64(r.ready) + int64(in) - int64(ql.Ready)
	if out > 0 {
		r.lastDrain = now
	}
	a := 1 - math.Exp(-dt/RateWindow.Seconds())
	r.arrival += a * (float64(in)/dt - r.arrival)
	r.drain += a * (float64(max(out, 0))/dt - r.drain)
	switch {
	case ql.Ready == 0:
		r.waitingAt = time.Time{}
	case r.waitingAt.IsZero():
		r.waitingAt = now
	}
	r.at, r.total, r.ready = now, ql.EnqueuedTotal, ql.Ready
}

// urgent says whether, by tier policy pol, the queue should be announced
// now whatever its size: its predicted wait (ready ÷ drain rate) passes
// the tier's Wait target while the backlog does not shrink (and the nearer
// tier, announced for settle, did not help enough), or nobody has taken a task for Stall while tasks
// waited (the node's own consumers are gone).
func (r *queueRates) urgent(pol *TierPolicy, ready uint64, now time.Time, nearer *QueueState, settle time.Duration) bool {
	if pol.Wait <= 0 || ready == 0 || !r.known {
		return false
	}
	if pol.Stall > 0 && !r.waitingAt.IsZero() && now.Sub(r.waitingAt) >= pol.Stall && now.Sub(r.lastDrain) >= pol.Stall {
		return true
	}
	if ready < pol.WaitMin {
		return false
	}
	if nearer != nil && (!nearer.in || now.Sub(nearer.since) < settle) {
		return false
	}
	if r.drain > r.arrival {
		return false // the backlog shrinks: its wait is coming down
	}
	return float64(ready) > r.drain*pol.Wait.Seconds()
}

// PredictedWait is ready ÷ drain (an hour when nothing drains).
func PredictedWait(ready uint64, drain float64) time.Duration {
	if ready == 0 {
		return 0
	}
	if drain <= 0 {
		return time.Hour
	}
	return min(time.Duration(float64(ready)/drain*float64(time.Second)), time.Hour)
}
