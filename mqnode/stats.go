package mqnode

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

const rateWindow = 10 // seconds

// rateCounter counts events in total and over a sliding 10 s window.
type rateCounter struct {
	mu      sync.Mutex
	total   uint64
	buckets [rateWindow]int64
	sec     int64 // second of the newest bucket
}

func (r *rateCounter) add(nowMs int64, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.advance(nowMs / 1000)
	r.buckets[r.sec%rateWindow] += n
	r.total += uint64(n)
}

func (r *rateCounter) advance(sec int64) {
	if sec <= r.sec {
		return
	}
	for s := max(r.sec+1, sec-rateWindow+1); s <= sec; s++ {
		r.buckets[s%rateWindow] = 0
	}
	r.sec = sec
}

// rate is events per second over the last full window (the current,
// partial second excluded).
func (r *rateCounter) rate(nowMs int64) (perSec float64, total uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sec := nowMs / 1000
	r.advance(sec)
	var sum int64
	for s := sec - rateWindow + 1; s < sec; s++ {
		sum += r.buckets[s%rateWindow]
	}
	return float64(sum) / float64(rateWindow-1), r.total
}

type counters struct {
	enqueued, acked            rateCounter
	nacked, expired, deadTotal atomic.Uint64
	retriesDeferred            atomic.Uint64
	lost, corrupt              atomic.Uint64 // store damage found (see ledger.go)
}

// stats reports one queue from its counters, without disk I/O.
func (q *queue) stats() (*wirepb.QueueStats, error) {
	q.mu.Lock()
	if q.stopped {
		q.mu.Unlock()
		return nil, ErrClosed
	}
	now := q.s.nowMs()
	st := &wirepb.QueueStats{
		Queue:   q.name,
		Ready:   uint64(q.readyLocked(now)),
		Leased:  uint64(max(q.leased, 0)),
		Delayed: uint64(q.delayedLocked(now)),
		Dead:    uint64(max(q.dead, 0)),
	}
	if len(q.buf) > 0 {
		st.OldestReadyAgeMs = max(now-q.buf[0].readyAt, 0)
	} else if st.Ready > 0 {
		// No paging here: the window refills in the background, and the
		// next look has the oldest ready task's age.
		q.prefetchIfLocked(now, 1)
	}
	q.mu.Unlock()
	st.EnqueueRate, st.EnqueuedTotal = q.c.enqueued.rate(now)
	st.AckRate, st.AckedTotal = q.c.acked.rate(now)
	st.NackedTotal = q.c.nacked.Load()
	st.ExpiredLeasesTotal = q.c.expired.Load()
	st.DeadTotal = q.c.deadTotal.Load()
	st.RetriesDeferredTotal = q.c.retriesDeferred.Load()
	st.LostTotal = q.c.lost.Load()
	st.CorruptTotal = q.c.corrupt.Load()
	st.Throttles = throttleStates(q.s.th.QueueStates(q.name))
	st.SettledKept, st.SettledBytes = q.kept.held(now)
	st.KeepSettledMs = max(q.cfg.KeepSettled.Milliseconds(), 0)
	return st, nil
}

// QueueLevel is the backlog summary of one queue, for the backlog
// publisher: cheap to compute, from counters (no disk I/O).
type QueueLevel struct {
	Queue       string
	Ready       uint64
	OldestReady time.Duration
	EnqueueRate float64
	DrainRate   float64
	// EnqueuedTotal counts the queue's enqueues since the node started:
	// the backlog planner derives short-term arrival and drain rates from
	// it (the rates above are 10 s averages).
	EnqueuedTotal uint64
}

// Levels returns the backlog summary of every queue.
func (n *Node) Levels() []QueueLevel {
	n.mu.Lock()
	st := n.st
	stopped := n.isStopped()
	n.mu.Unlock()
	if st == nil || stopped {
		return nil
	}
	all := st.allStats()
	out := make([]QueueLevel, 0, len(all))
	for _, s := range all {
		out = append(out, QueueLevel{
			Queue: s.Queue, Ready: s.Ready, OldestReady: time.Duration(s.OldestReadyAgeMs) * time.Millisecond,
			EnqueueRate: s.EnqueueRate, DrainRate: s.AckRate, EnqueuedTotal: s.EnqueuedTotal,
		})
	}
	return out
}

// allStats returns the stats of every queue, sorted by name (queues that
// fail to report are left out).
func (st *store) allStats() []*wirepb.QueueStats {
	names := st.queueNames()
	slices.Sort(names)
	out := make([]*wirepb.QueueStats, 0, len(names))
	for _, name := range names {
		st.qmu.RLock()
		q := st.queues[name]
		st.qmu.RUnlock()
		if q == nil {
			continue
		}
		if s, err := q.stats(); err == nil {
			out = append(out, s)
		}
	}
	return out
}
