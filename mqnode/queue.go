package mqnode

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// entry is a ready task paged into a queue's in-memory window.
type entry struct {
	key     []byte
	readyAt int64
	task    *wirepb.Task
	size    int
}

// queue is the in-memory state of one queue. The durable truth is in Badger;
// this holds a bounded window of the next ready tasks (buf), the cursor past
// which the window continues on disk, counters and the long-poll waiters.
type queue struct {
	s         *store
	name      string
	cfg       QueueConfig
	persisted atomic.Bool
	lastUsed  atomic.Int64 // unix ms of the last enqueue or pull lookup (see evictIdle)

	mu       sync.Mutex
	buf      []*entry
	bufBytes int
	cursor   []byte // last key paged in; nil = start of the queue
	dirty    bool   // ready keys may exist past the cursor
	heldBack bool   // the last refill stopped at a write group in flight
	// refilling is the refill in flight (refill.go), nil when none.
	refilling *refill
	timer     *time.Timer
	timerAt   int64
	wake      chan struct{} // closed (and replaced) on every change
	stopped   bool

	stored  int64                 // task keys in the store (ready + delayed + leased)
	leased  int64                 // tasks under lease
	dead    int64                 // dead-letter records
	delayed map[delayBucket]int64 // tasks not ready yet, by coarse readyAt

	c    counters
	kept keptSettled // settled tasks kept for replay (settled.go)
}

func newQueue(s *store, name string) *queue {
	s.nQueues.Add(1)
	return &queue{
		s:       s,
		name:    name,
		cfg:     s.cfg.queueConfig(name),
		wake:    make(chan struct{}),
		dirty:   true,
		delayed: map[delayBucket]int64{},
	}
}

func (q *queue) wakeLocked() {
	close(q.wake)
	q.wake = make(chan struct{})
}

func (q *queue) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.stopped {
		q.s.nQueues.Add(-1)
	}
	q.stopped = true
	q.addBuf(-q.bufBytes)
	q.buf = nil
	if q.timer != nil {
		q.timer.Stop()
	}
	q.wakeLocked()
}

// armLocked makes the queue rescan at time at (ms).
func (q *queue) armLocked(at int64) {
	if q.stopped || (q.timerAt != 0 && q.timerAt <= at) {
		return
	}
	q.timerAt = at
	d := time.Duration(at-q.s.nowMs()) * time.Millisecond
	if d < time.Millisecond {
		d = time.Millisecond
	}
	if q.timer == nil {
		q.timer = time.AfterFunc(d, q.fire)
	} else {
		q.timer.Reset(d)
	}
}

func (q *queue) fire() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.timerAt = 0
	q.dirty = true
	if !q.stopped {
		q.wakeLocked()
	}
}

// apply records a committed effect (called by the writer after commit).
func (q *queue) apply(e effect, now int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stored += e.stored
	q.leased += e.leased
	q.dead += e.dead
	if e.onCommit != nil {
		e.onCommit()
	}
	if e.readyAt == 0 {
		return
	}
	readyAt := e.readyAt
	if readyAt > now {
		q.delayed[bucketOf(readyAt, now)]++
		q.armLocked(readyAt)
		return
	}
	q.dirty = true
	if !q.stopped {
		q.wakeLocked()
	}
}

// delayBucket groups delayed tasks by readyAt with a width of 2^shift ms,
// about 1/64 of the delay (at least 8 ms): the count of delayed tasks costs
// memory in the number of distinct buckets, not tasks, and is never early by
// more than 2% of a task's delay.
type delayBucket struct {
	shift uint8
	idx   int64
}

func bucketOf(readyAt, now int64) delayBucket {
	shift := uint8(3)
	for d := (readyAt - now) / 64; d >= 1<<(shift+1) && shift < 40; shift++ {
	}
	return delayBucket{shift: shift, idx: readyAt >> shift}
}

// end is the first ms after the bucket.
func (b delayBucket) end() int64 { return (b.idx + 1) << b.shift }

// undelayLocked is called when a task with readyAt leaves the ready path
// (delivered or dropped) while a delay bucket holding it may not have ended:
// it takes the task out of the delayed count.
func (q *queue) undelayLocked(readyAt, now int64) {
	if len(q.delayed) == 0 {
		return
	}
	for shift := uint8(3); shift <= 40; shift++ {
		b := delayBucket{shift: shift, idx: readyAt >> shift}
		if b.end() <= now {
			continue
		}
		if c, ok := q.delayed[b]; ok {
			if c <= 1 {
				delete(q.delayed, b)
			} else {
				q.delayed[b] = c - 1
			}
			return
		}
	}
}

// delayedLocked counts tasks not yet ready at now, dropping past buckets.
func (q *queue) delayedLocked(now int64) int64 {
	var n int64
	for b, c := range q.delayed {
		if b.end() <= now {
			delete(q.delayed, b)
			continue
		}
		n += c
	}
	return n
}

func (q *queue) readyLocked(now int64) int64 {
	r := q.stored - q.leased - q.delayedLocked(now)
	if r < 0 {
		return 0
	}
	return r
}

// submitAll queues write ops (called without q.mu held).
func (s *store) submitAll(ops []*writeOp) error {
	var errs []error
	for _, op := range ops {
		errs = append(errs, s.w.submit(op))
	}
	return errors.Join(errs...)
}

// pulled is the outcome of one pull.
type pulled struct {
	ds    []*wirepb.Delivery
	ready int64
	// throttled > 0: ready tasks were held back by a dispatch limit
	// (by names it); they may go after this long.
	throttled time.Duration
	by        string
}

// pull leases up to max ready tasks, waiting up to wait for the first one.
// Dispatch passes the node's throttles (package throttle): the CPU limit
// and backend budgets bound how many tasks go, and a retry the retry gate
// refuses is deferred on disk instead of delivered.
func (q *queue) pull(ctx context.Context, max int, wait, leaseDur time.Duration, worker string) (pulled, error) {
	// A zero wait still waits out a write group in flight (one commit, a
	// few ms) when ready tasks sit behind it, so "at once" is not "empty".
	graceUsed := false
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		l, err := q.take(max, leaseDur, worker)
		if errors.Is(err, ErrClosed) {
			return pulled{}, err
		}
		p := l.pulled
		if serr := q.s.submitAll(l.moves); serr != nil && err == nil {
			err = serr
		}
		if timeout == nil && l.heldBack && !graceUsed && len(p.ds) == 0 && err == nil {
			graceUsed = true
			t := time.NewTimer(100 * time.Millisecond)
			defer t.Stop()
			timeout = t.C
		}
		if len(p.ds) > 0 || err != nil || timeout == nil {
			return p, err
		}
		var retry <-chan time.Time
		var rt *time.Timer
		if p.throttled > 0 {
			rt = time.NewTimer(p.throttled)
			retry = rt.C
		}
		select {
		case <-l.wake:
		case <-retry:
		case <-timeout:
			return p, nil
		case <-ctx.Done():
			return pulled{ready: p.ready}, ctx.Err()
		}
		if rt != nil {
			rt.Stop()
		}
	}
}

// look is the outcome of one look at a queue's window (take).
type look struct {
	pulled
	moves    []*writeOp    // writes to submit once q.mu is released
	wake     chan struct{} // closed on the queue's next change
	heldBack bool          // a write group in flight held ready tasks back
}

// take is one look at the window under q.mu (released by defer, so even a
// panic cannot leave the queue locked): it leases what the throttles let
// go and defers refused retries. A window short of max is refilled first,
// outside the lock (refillFor).
func (q *queue) take(max int, leaseDur time.Duration, worker string) (look, error) {
	moves, err := q.refillFor(max)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		return look{}, ErrClosed
	}
	th := q.s.th
	now := q.s.nowMs()
	granted, held, by := th.Dispatch(q.name, min(max, len(q.buf)))
	out := make([]*wirepb.Delivery, 0, granted)
	// Deferring a refused retry costs a write: at most granted (and
	// 16) of them per pull, so one pull does not rewrite the window.
	defers, maxDefers := 0, granted+16
	// The reply must fit one message: stop before a task that would not
	// (at least one goes); the rest stay ready, their attempt not counted.
	budget, used := q.s.replyBudget(), 0
	n := 0
	for n < len(q.buf) && len(out) < granted && defers < maxDefers {
		e := q.buf[n]
		if len(out) > 0 && used+e.size+deliveryOverhead > budget {
			break
		}
		n++
		q.addBuf(-e.size)
		q.undelayLocked(e.readyAt, now)
		switch {
		case e.task.ExpiresUnixMs != 0 && e.task.ExpiresUnixMs <= now:
			moves = append(moves, q.s.deadOp(q, e.key, e.task, nil, "expired: not consumed within its retention"))
			continue
		case e.task.Attempt > 0:
			if ok, d := th.AdmitRetry(q.name); !ok {
				moves = append(moves, q.deferOp(e, d))
				q.s.obs.deferred(q, e.task, d)
				q.c.retriesDeferred.Add(1)
				defers++
				continue
			}
		}
		out = append(out, q.s.leases.add(q, e, leaseDur, worker, now))
		used += e.size + deliveryOverhead
		q.s.obs.leased(q, e.task, worker, now)
	}
	th.Refund(q.name, granted-len(out))
	if len(out) == 0 && defers > 0 && held == 0 {
		// Only refused retries were at hand: say so, so helpers
		// look elsewhere for a while.
		held, by = retryPause, "retry"
	}
	clear(q.buf[:n])
	q.buf = q.buf[n:]
	q.leased += int64(len(out))
	if len(q.buf) < q.s.cfg.ReadyBuffer/2 {
		q.prefetchLocked(now)
	}
	// Deferred retries stay counted as stored; they are delayed now.
	return look{pulled: pulled{ds: out, ready: q.readyLocked(now), throttled: held, by: by},
		moves: moves, wake: q.wake, heldBack: q.heldBack}, err
}

// deferOp puts a ready task back, unchanged, to be ready again after d
// (a retry the retry gate did not admit). The entry has left the window.
func (q *queue) deferOp(e *entry, d time.Duration) *writeOp {
	return &writeOp{prepare: func(w *wtx) error {
		seq, err := w.nextSeq()
		if err != nil {
			return err
		}
		readyAt := w.stamp() + d.Milliseconds()
		frame, err := encodeTask(e.task)
		if err != nil {
			return err
		}
		w.del(e.key)
		w.set(taskKey(q.name, readyAt, seq), frame)
		w.effect(effect{q: q, readyAt: readyAt})
		return nil
	}, failed: func(error) {
		// Not moved: it is still ready under its old key.
		q.mu.Lock()
		q.buf = append([]*entry{e}, q.buf...)
		q.addBuf(e.size)
		if !q.stopped {
			q.wakeLocked()
		}
		q.mu.Unlock()
	}}
}

// retryPause is the retry-after a pull reports when it found only retries
// the retry gate refused.
const retryPause = 100 * time.Millisecond
