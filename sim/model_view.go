package sim

import (
	"slices"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/backlog/backlogpb"
)

// viewCache is a pool's real backlog.View plus a copy of what its
// Entries() returns, kept in step with every call the model makes on the
// view: Apply (its result says whether the table changed), Correct and
// Expire. The real View takes every notice, correction and expiry at the
// virtual time the real watcher and fetch loop would; the copy only spares
// the model View.Entries' copy and sort on each of millions of decisions
// (10,000 pools, hundreds of entries each). The model checks the copy
// against View.Entries() every checkEvery decisions (tests: every one) and
// reports mismatches.
//
// Expire: View.Entries expires stale entries and nodes on every call. The
// model calls View.Expire exactly when that call would remove something
// (it knows the earliest time an entry or node can go stale), so the
// view's state is the same as under the real fetch loop.
type viewCache struct {
	v       *backlog.View
	clock   func() time.Time
	filter  [backlog.NumTiers]*backlog.TierFilter
	stale   [backlog.NumTiers]int64 // StaleAfter (ns), 0: never
	longest int64
	entries []backlog.Entry // sorted as View.Entries: IDC, node, queue
	// ranks[i] is the rank of entries[i]'s node in (IDC, node) order (the
	// model has one queue), so lookups compare integers.
	ranks   []int32
	ix      *nodeIndex
	heard   map[int32]heardAt // nodes the view holds → when last heard, incarnation
	nextExp int64             // nothing goes stale at or before this time
}

// heardAt is when a view last heard from a node, and its incarnation.
type heardAt struct {
	at  int64
	inc uint64
}

// forget is View.ForgetNode (gossip: the node failed), mirrored.
func (c *viewCache) forget(idc, node string, idx int32) {
	c.v.ForgetNode(idc, node)
	delete(c.heard, idx)
	if i, ok := c.find(idx); ok {
		c.entries, c.ranks = slices.Delete(c.entries, i, i+1), slices.Delete(c.ranks, i, i+1)
	}
}

// nodeIndex numbers the model's nodes.
type nodeIndex struct {
	rank   []int32          // node index → rank in (IDC, node) order
	byName map[string]int32 // node name → index
}

func newViewCache(subs []backlog.Subscription, clock func() time.Time, ix *nodeIndex) *viewCache {
	c := &viewCache{v: backlog.NewView(clock), clock: clock, heard: map[int32]heardAt{}, nextExp: never, ix: ix}
	for _, s := range subs {
		f := s.Filter
		c.v.SetFilter(s.Tier, &f)
		c.filter[s.Tier] = &f
		c.stale[s.Tier] = int64(f.StaleAfter)
		c.longest = max(c.longest, int64(f.StaleAfter))
	}
	return c
}

func (c *viewCache) find(node int32) (int, bool) {
	return slices.BinarySearch(c.ranks, c.ix.rank[node])
}

// deleteIf removes the entries for which drop is true.
func (c *viewCache) deleteIf(drop func(e *backlog.Entry) bool) {
	j := 0
	for i := range c.entries {
		if drop(&c.entries[i]) {
			continue
		}
		c.entries[j], c.ranks[j] = c.entries[i], c.ranks[i]
		j++
	}
	clear(c.entries[j:])
	c.entries, c.ranks = c.entries[:j], c.ranks[:j]
}

// apply hands a notice from node src to the view (View.Apply) and mirrors
// what it did to the table.
func (c *viewCache) apply(now int64, t backlog.Tier, n *backlogpb.Notice, src int32) {
	if !c.v.Apply(t, n) {
		return // over the tier's rate, or out of order: the table is as it was
	}
	if h, known := c.heard[src]; !known || n.Incarnation > h.inc {
		// A node the view does not hold, or restarted: View.Apply starts
		// it afresh, forgetting its entries.
		if i, ok := c.find(src); ok {
			c.entries, c.ranks = slices.Delete(c.entries, i, i+1), slices.Delete(c.ranks, i, i+1)
		}
		if c.longest > 0 {
			c.nextExp = min(c.nextExp, now+c.longest)
		}
	}
	c.heard[src] = heardAt{now, max(n.Incarnation, c.heard[src].inc)}
	if n.Queue == backlog.HeartbeatQueue {
		return
	}
	i, found := c.find(src)
	ready := n.Ready
	if f := c.filter[t]; n.Level == 0 || f != nil && ready < f.MinBacklog {
		ready = 0
	}
	if ready == 0 {
		switch {
		case found && (c.entries[i].Tier >= t || n.Ready == 0):
			c.entries, c.ranks = slices.Delete(c.entries, i, i+1), slices.Delete(c.ranks, i, i+1)
		case found:
			c.entries[i].Ready = n.Ready
		}
		return
	}
	if !found {
		c.entries = slices.Insert(c.entries, i, backlog.Entry{IDC: n.Idc, Node: n.Node, Queue: n.Queue})
		c.ranks = slices.Insert(c.ranks, i, c.ix.rank[src])
	}
	e := &c.entries[i]
	e.Tier, e.Ready, e.Level = t, ready, n.Level
	e.OldestReady = time.Duration(n.OldestReadyAgeMs) * time.Millisecond
	e.EnqueueRate, e.DrainRate, e.NATSClient = n.EnqueueRate, n.DrainRate, n.NatsClient
	e.Updated, e.Corrected = c.clock(), false
	if s := c.stale[t]; s > 0 {
		c.nextExp = min(c.nextExp, now+s)
	}
}

// correct is View.Correct (of node's queue), mirrored.
func (c *viewCache) correct(idc, node, queue string, ready uint64, idx int32) {
	c.v.Correct(idc, node, queue, ready)
	if i, ok := c.find(idx); ok {
		e := &c.entries[i]
		e.Ready, e.Updated, e.Corrected = ready, c.clock(), true
		// Updated only grows: nextExp stays a lower bound.
	}
}

// read returns the entries View.Entries would return at now (the slice is
// shared: the policy only reads it).
func (c *viewCache) read(now int64) []backlog.Entry {
	if now > c.nextExp {
		c.expire(now)
	}
	return c.entries
}

// expire runs View.Expire and mirrors it.
func (c *viewCache) expire(now int64) {
	c.v.Expire()
	c.nextExp = never
	c.deleteIf(func(e *backlog.Entry) bool {
		s := c.stale[e.Tier]
		if s == 0 {
			return false
		}
		upd := int64(e.Updated.Sub(modelEpoch))
		if now-upd > s {
			return true
		}
		c.nextExp = min(c.nextExp, upd+s)
		return false
	})
	if c.longest > 0 {
		for k, h := range c.heard {
			if now-h.at > c.longest {
				delete(c.heard, k)
			} else {
				c.nextExp = min(c.nextExp, h.at+c.longest)
			}
		}
	}
}

// check compares the copy with View.Entries (exported fields).
func (c *viewCache) check() bool {
	real := c.v.Entries()
	return slices.EqualFunc(real, c.entries, func(a, b backlog.Entry) bool {
		return a.IDC == b.IDC && a.Node == b.Node && a.Queue == b.Queue && a.Tier == b.Tier && a.Ready == b.Ready &&
			a.OldestReady == b.OldestReady && a.EnqueueRate == b.EnqueueRate && a.DrainRate == b.DrainRate &&
			a.Level == b.Level && a.NATSClient == b.NATSClient && a.Updated.Equal(b.Updated) && a.Corrected == b.Corrected
	})
}

// resync replaces the copy with View.Entries (after a mismatch).
func (c *viewCache) resync() {
	c.entries = c.v.Entries()
	c.ranks = c.ranks[:0]
	for _, e := range c.entries {
		c.ranks = append(c.ranks, c.ix.rank[c.ix.byName[e.Node]])
	}
	c.nextExp = 0 // recompute at the next read
}
