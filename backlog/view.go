package backlog

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mqmesh/mqmesh/backlog/backlogpb"
)

// Entry is what a worker knows of one queue on one node.
type Entry struct {
	IDC, Node, Queue string
	// Tier the freshest notice came on.
	Tier        Tier
	Ready       uint64
	OldestReady time.Duration
	EnqueueRate float64
	DrainRate   float64
	Level       uint32
	NATSClient  string
	// Updated is when this worker last learned about the entry (its clock).
	Updated time.Time
	// Corrected is set when a pull reply, not a notice, set Ready last.
	Corrected bool

	inc, seq uint64
}

// Age is how old the entry is at now.
func (e Entry) Age(now time.Time) time.Duration { return now.Sub(e.Updated) }

type nodeKey struct{ idc, node string }

type entryKey struct{ idc, node, queue string }

type nodeSeen struct {
	heard    time.Time
	inc, seq uint64
}

// TierFilter is the worker-side filter of one tier: which notices are
// worth hearing and how many per second.
type TierFilter struct {
	// MinBacklog: a notice with fewer ready tasks counts as no backlog.
	MinBacklog uint64
	// MaxRate caps accepted notices per second on the tier (0 = no cap);
	// excess notices are dropped and counted.
	MaxRate float64
	// StaleAfter expires entries (and nodes) not heard of for this long.
	StaleAfter time.Duration
}

// View is a worker's table of node backlogs: a plain data structure with an
// injectable clock, safe for concurrent use, with no I/O. The scheduler
// reads it; a Watcher (or the simulator) feeds it.
type View struct {
	mu      sync.Mutex
	now     func() time.Time
	filters [NumTiers]*TierFilter
	buckets [NumTiers]tokenBucket
	entries map[entryKey]*Entry
	nodes   map[nodeKey]*nodeSeen
	stats   ViewStats
	// subscribed, once set (SubscribeTiers), says which tiers the view is
	// fed from; notices of other tiers are ignored. Unset: every tier.
	subscribed *[NumTiers]bool
	// summaries: the last summary applied per tier and IDC (ApplySummary).
	summaries map[summaryKey]summaryMark
}

// ViewStats counts what a view received.
type ViewStats struct {
	Accepted  [NumTiers]uint64
	Dropped   [NumTiers]uint64 // over MaxRate
	Stale     uint64           // out-of-order notices ignored
	Expired   uint64           // entries expired for staleness
	Forgotten uint64           // entries removed because their node left
	// Unsubscribed counts entries removed because their tier was no longer
	// subscribed, and late notices of such tiers ignored.
	Unsubscribed uint64
	// Summaries counts summaries applied (their notices are not counted
	// in Accepted: a summary is one message).
	Summaries uint64
}

// NewView returns an empty view using clock now (nil: time.Now).
func NewView(now func() time.Time) *View {
	if now == nil {
		now = time.Now
	}
	return &View{now: now, entries: map[entryKey]*Entry{}, nodes: map[nodeKey]*nodeSeen{}}
}

// SetFilter sets (nil: removes) the filter of a tier. Notices of a tier
// without a filter are still accepted (the subscription decides).
func (v *View) SetFilter(t Tier, f *TierFilter) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.filters[t] = f
	v.buckets[t] = tokenBucket{}
}

// AllowTiers adds tiers to those the view accepts notices of, without
// removing anything: a subscriber calls it before it subscribes to new
// tiers, so their first notices are not ignored.
func (v *View) AllowTiers(tiers ...Tier) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.subscribed == nil {
		return // every tier accepted already
	}
	for _, t := range tiers {
		v.subscribed[t] = true
	}
}

// SubscribeTiers makes filters (nil: not subscribed) the tiers the view is
// fed from, with their filters. Entries learnt on a tier no longer
// subscribed leave the view at once, and late notices of it (in flight when
// the subscription changed) are ignored: a filter switch takes full effect
// immediately instead of when those entries would have gone stale.
func (v *View) SubscribeTiers(filters [NumTiers]*TierFilter) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var sub [NumTiers]bool
	for t, f := range filters {
		sub[t] = f != nil
		if f != v.filters[t] {
			v.buckets[t] = tokenBucket{}
		}
		v.filters[t] = f
	}
	v.subscribed = &sub
	for k, e := range v.entries {
		if !sub[e.Tier] {
			delete(v.entries, k)
			v.stats.Unsubscribed++
		}
	}
}

// Apply records a notice received on tier t. It returns false when the
// notice was dropped (rate cap) or is older than what the view has.
//
// The rate cap (TierFilter.MaxRate) only drops notices that would not
// change what the view knows exists: refreshes, heartbeats and level
// changes of a node already in the view. A node that starts or ends a
// backlog always gets through, so a cap never hides a node that needs help
// nor keeps a drained one; many workers reading the same burst of notices
// then still see every node that needs help.
func (v *View) Apply(t Tier, n *backlogpb.Notice) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.subscribed != nil && !v.subscribed[t] {
		v.stats.Unsubscribed++
		return false
	}
	now := v.now()
	if f := v.filters[t]; f != nil && f.MaxRate > 0 && !v.changesPresenceLocked(n) && !v.buckets[t].take(now, f.MaxRate) {
		v.stats.Dropped[t]++
		return false
	}
	if !v.applyLocked(t, n, now) {
		return false
	}
	v.stats.Accepted[t]++
	return true
}

// applyLocked records notice n of tier t at now; false: out of order.
func (v *View) applyLocked(t Tier, n *backlogpb.Notice, now time.Time) bool {
	nk := nodeKey{n.Idc, n.Node}
	ns := v.nodes[nk]
	if ns == nil {
		ns = &nodeSeen{}
		v.nodes[nk] = ns
	}
	if n.Incarnation < ns.inc {
		v.stats.Stale++
		return false
	}
	if n.Incarnation > ns.inc {
		// The node restarted: what we knew of it is void.
		v.forgetLocked(nk)
		ns = &nodeSeen{inc: n.Incarnation}
		v.nodes[nk] = ns
	}
	ns.heard = now
	ns.seq = max(ns.seq, n.Seq)
	if n.Queue == HeartbeatQueue {
		return true
	}
	k := entryKey{n.Idc, n.Node, n.Queue}
	e := v.entries[k]
	if e != nil && e.inc == n.Incarnation && e.seq > n.Seq {
		v.stats.Stale++
		return false
	}
	// A notice is the node's ready count; level 0 says "below this tier's
	// threshold", and MinBacklog says what this worker cares to hear.
	ready := n.Ready
	if f := v.filters[t]; n.Level == 0 || f != nil && ready < f.MinBacklog {
		ready = 0
	}
	if ready == 0 {
		// Drop the entry unless a nearer (more precise) tier owns it and
		// the node still has tasks.
		if e != nil && (e.Tier >= t || n.Ready == 0) {
			delete(v.entries, k)
		} else if e != nil {
			e.Ready = n.Ready
		}
		return true
	}
	if e == nil {
		e = &Entry{IDC: n.Idc, Node: n.Node, Queue: n.Queue}
		v.entries[k] = e
	}
	e.Tier, e.Ready, e.Level = t, ready, n.Level
	e.OldestReady = time.Duration(n.OldestReadyAgeMs) * time.Millisecond
	e.EnqueueRate, e.DrainRate, e.NATSClient = n.EnqueueRate, n.DrainRate, n.NatsClient
	e.Updated, e.Corrected, e.inc, e.seq = now, false, n.Incarnation, n.Seq
	return true
}

// changesPresenceLocked reports whether a notice would add or remove an
// entry: a backlog the view does not know of, or the end of one it does.
func (v *View) changesPresenceLocked(n *backlogpb.Notice) bool {
	if n.Queue == HeartbeatQueue {
		return false
	}
	_, known := v.entries[entryKey{n.Idc, n.Node, n.Queue}]
	has := n.Level > 0 && n.Ready > 0
	return has != known
}

// Correct records what a pull reply said: the node's ready count after the
// pull. A short or empty reply thus fixes an optimistic broadcast at once.
// An entry corrected to zero stays (with Ready 0 and Corrected set) while
// the node has not announced the end of its backlog: the scheduler may
// probe it again later, since the node only re-announces on a level change
// or a heartbeat.
func (v *View) Correct(idc, node, queue string, ready uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e := v.entries[entryKey{idc, node, queue}]
	if e == nil {
		return // not announced to us: nothing to correct
	}
	e.Ready, e.Updated, e.Corrected = ready, v.now(), true
}

// ForgetNode removes every entry of a node (gossip says it left or failed).
func (v *View) ForgetNode(idc, node string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.forgetLocked(nodeKey{idc, node})
	delete(v.nodes, nodeKey{idc, node})
}

func (v *View) forgetLocked(nk nodeKey) {
	for k := range v.entries {
		if k.idc == nk.idc && k.node == nk.node {
			delete(v.entries, k)
			v.stats.Forgotten++
		}
	}
}

// Expire drops entries and nodes not heard of within their tier's
// StaleAfter (entries of tiers without a filter never expire here).
func (v *View) Expire() {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	for k, e := range v.entries {
		if f := v.filters[e.Tier]; f != nil && f.StaleAfter > 0 && now.Sub(e.Updated) > f.StaleAfter {
			delete(v.entries, k)
			v.stats.Expired++
		}
	}
	var longest time.Duration
	for _, f := range v.filters {
		if f != nil {
			longest = max(longest, f.StaleAfter)
		}
	}
	if longest > 0 {
		for nk, ns := range v.nodes {
			if now.Sub(ns.heard) > longest {
				delete(v.nodes, nk)
			}
		}
	}
}

// Entries returns the current entries (after expiry), sorted by IDC, node,
// queue. The slice is the caller's.
func (v *View) Entries() []Entry {
	v.Expire()
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]Entry, 0, len(v.entries))
	for _, e := range v.entries {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b Entry) int {
		switch {
		case a.IDC != b.IDC:
			return strings.Compare(a.IDC, b.IDC)
		case a.Node != b.Node:
			return strings.Compare(a.Node, b.Node)
		}
		return strings.Compare(a.Queue, b.Queue)
	})
	return out
}

// NodeHeard reports when the view last heard from a node (zero: never, or
// forgotten).
func (v *View) NodeHeard(idc, node string) time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	if ns := v.nodes[nodeKey{idc, node}]; ns != nil {
		return ns.heard
	}
	return time.Time{}
}

// Stats returns the view's counters.
func (v *View) Stats() ViewStats {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.stats
}

// tokenBucket caps a rate with a burst of one second's worth.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

func (b *tokenBucket) take(now time.Time, rate float64) bool {
	burst := max(rate, 1)
	if b.last.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
