// The scale model's event loop: the event kinds, the event queue (a heap
// in virtual time, with recycled events and task buffers), the run loop
// and the dispatch of each event to its handler.

package sim

import (
	"context"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/backlog/backlogpb"
	"github.com/mqmesh/mqmesh/worker"
)

// Event kinds.
const (
	evTick       = iota // publishers of one poll slot observe their node
	evDeliver           // a notice reaches the pools of one IDC
	evPoolWake          // a pool's fetch loop goes on
	evPullArrive        // a pull request reaches its node
	evNodeWake          // a long-polling pull may be answered
	evPullReply         // a pull reply reaches its pool
	evRequeue           // a dead pool's leases are released
	evTimeline          // a timeline event (-1: end of load)
	evSample            // backlog sample, progress, end check
	evSumObserve        // a global-tier notice reaches its IDC's summarizer
	evSummary           // a summary reaches the pools of one IDC and shard
	evGossipDead        // gossip declares a crashed node failed
)

type event struct {
	t    int64
	seq  uint64
	kind uint8
	i    int // tick slot, timeline index
	step uint64
	pool *mPool
	node *mNode
	a    worker.Action
	sent int64
	// tasks are enqueue times (pull reply, requeue).
	tasks      []int64
	readyAfter uint64
	notice     *backlogpb.Notice
	tier       backlog.Tier
	dl         *delivery
	summary    *backlogpb.Summary
	pools      []*mPool
	// err: a pull reply is an error (the node was down).
	err bool
}

// eventQueue is a binary min-heap of events by (time, sequence), typed
// (container/heap's interface calls were a fifth of the model's CPU).
type eventQueue []*event

func (q eventQueue) less(i, j int) bool {
	return q[i].t < q[j].t || q[i].t == q[j].t && q[i].seq < q[j].seq
}

func (q *eventQueue) push(e *event) {
	*q = append(*q, e)
	s := *q
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s.less(i, p) {
			break
		}
		s[p], s[i] = s[i], s[p]
		i = p
	}
}

func (q *eventQueue) pop() *event {
	s := *q
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = nil
	s = s[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && s.less(l, m) {
			m = l
		}
		if r < len(s) && s.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		s[m], s[i] = s[i], s[m]
		i = m
	}
	*q = s
	return top
}

func (m *model) newEvent(kind uint8, at int64) *event {
	var e *event
	if n := len(m.free); n > 0 {
		e = m.free[n-1]
		m.free = m.free[:n-1]
	} else {
		e = &event{}
	}
	m.seq++
	e.t, e.seq, e.kind = at, m.seq, kind
	m.q.push(e)
	return e
}

func (m *model) recycle(e *event) {
	*e = event{}
	m.free = append(m.free, e)
}

func (m *model) buf(n int) []int64 {
	if k := len(m.bufs); k > 0 {
		b := m.bufs[k-1]
		m.bufs = m.bufs[:k-1]
		if cap(b) >= n {
			return b[:0]
		}
	}
	return make([]int64, 0, max(n, 8))
}

func (m *model) run(ctx context.Context) error {
	m.newEvent(evTick, 0).i = 0
	m.newEvent(evSample, 0)
	for i := range m.cfg.Timeline {
		m.newEvent(evTimeline, int64(m.cfg.Timeline[i].At)).i = i
	}
	m.newEvent(evTimeline, m.loadEnd).i = -1
	for _, p := range m.pools {
		m.wakePool(p, 0)
	}
	for !m.stopped && len(m.q) > 0 {
		e := m.q.pop()
		m.now = e.t
		m.events++
		if m.events&0xfff == 0 {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			m.report()
		}
		m.handle(e)
		m.recycle(e)
	}
	m.finish()
	return nil
}

func (m *model) handle(e *event) {
	switch e.kind {
	case evTick:
		for _, n := range m.slots[e.i] {
			m.poll(n)
		}
		if e.i == 0 {
			m.tickSummaries()
		}
		if m.now < m.end {
			m.newEvent(evTick, m.now+m.tickEvery).i = (e.i + 1) % len(m.slots)
		}
	case evDeliver:
		m.deliver(e)
	case evPoolWake:
		if p := e.pool; p.alive && p.step == e.step {
			m.poolStep(p)
		}
	case evPullArrive:
		m.pullArrive(e)
	case evNodeWake:
		m.nodeWake(e)
	case evPullReply:
		m.pullReply(e)
	case evRequeue:
		m.requeue(e)
	case evTimeline:
		m.timeline(e.i)
	case evSample:
		m.sample()
	case evSumObserve:
		if ms := m.sums[e.tier]; ms != nil && !ms[e.node.idc].node.down {
			ms[e.node.idc].sum.Observe(e.notice, m.clock())
		}
	case evSummary:
		m.deliverSummary(e)
	case evGossipDead:
		m.gossipDead(e.node, e.step)
	}
}
