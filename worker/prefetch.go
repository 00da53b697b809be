package worker

import (
	"sync"
	"time"

	"github.com/mqmesh/mqmesh/mqnode"
)

// Pipelined pulls. A pool's fetch loop keeps up to localPulls pulls of its
// own node in flight, and a pull may lease more tasks than there are free
// handler slots: the extra ones wait, leased, for a slot (prefetch). So a
// pool on a link of round trip RTT is not held to one batch per RTT, nor
// to Slots tasks per RTT. The tasks a pool holds — reserved by a pull in
// flight, leased and waiting for a slot, or running — are counted by
// credits, whose limit is Slots plus the prefetch; the handler slots
// themselves stay Slots (p.slots).
//
// The prefetch is sized by what the pool can get through in the time of a
// pull: 2 × (Slots / mean handler time) × mean pull round trip, capped at
// Config.MaxPrefetch. A pool of slow handlers on its own host so prefetches
// almost nothing (a task never waits long in the buffer holding its
// lease), and fast handlers across a slow link prefetch up to the cap.

// localPulls is the most pulls of the own node one queue's fetch loop keeps
// in flight.
const localPulls = 4

// credits counts the tasks a pool holds, against a limit that may change.
// Takers are served in turn (first come, first served): a pool has a fetch
// loop per queue, and one whose pulls come back and go out again at once
// must not starve the others of credits (a long poll of an empty queue
// would otherwise hold them all, again and again).
type credits struct {
	mu    sync.Mutex
	held  int
	limit int
	queue []*creditWaiter // in arrival order
}

// creditWaiter is a take waiting its turn; got is set (and ready closed)
// when credits are granted to it.
type creditWaiter struct {
	want  int
	got   int
	ready chan struct{}
}

func newCredits(limit int) *credits {
	return &credits{limit: limit}
}

// take waits its turn until at least one credit is free, then takes up
// to want; it returns 0 when stop closes first.
func (c *credits) take(want int, stop <-chan struct{}) int {
	want = max(want, 1)
	c.mu.Lock()
	if len(c.queue) == 0 && c.held < c.limit {
		n := min(want, c.limit-c.held)
		c.held += n
		c.mu.Unlock()
		return n
	}
	w := &creditWaiter{want: want, ready: make(chan struct{})}
	c.queue = append(c.queue, w)
	c.mu.Unlock()
	select {
	case <-w.ready:
		return w.got
	case <-stop:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.got > 0 { // granted as stop closed: give them on
		c.held -= w.got
		c.grantLocked()
		return 0
	}
	for i, o := range c.queue {
		if o == w {
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			break
		}
	}
	return 0
}

// share is the limit split between n takers (at least 1).
func (c *credits) share(n int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.limit/max(n, 1), 1)
}

// give returns n credits.
func (c *credits) give(n int) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	c.held -= n
	c.grantLocked()
	c.mu.Unlock()
}

// setLimit changes the limit (credits held above it stay held).
func (c *credits) setLimit(n int) {
	c.mu.Lock()
	c.limit = n
	c.grantLocked()
	c.mu.Unlock()
}

// grantLocked hands free credits to the waiters in turn.
func (c *credits) grantLocked() {
	for len(c.queue) > 0 && c.held < c.limit {
		w := c.queue[0]
		c.queue = c.queue[1:]
		w.got = min(w.want, c.limit-c.held)
		c.held += w.got
		close(w.ready)
	}
}

// sizer measures the own node's pull round trip and the handlers' time,
// and from them sizes the prefetch and the local pull batch.
type sizer struct {
	mu      sync.Mutex
	rtt     time.Duration // EWMA of the round trip of pulls that did not wait
	handler time.Duration // EWMA of a handler's run time
	slots   int
	cap     int // Config.MaxPrefetch
	floor   int // the policy's LocalBatch: the least a pull asks for
}

// minHandlerTime bounds the handlers' estimated rate: a no-op handler's
// microsecond would otherwise size every prefetch to its cap at once.
const minHandlerTime = 20 * time.Microsecond

// ewma moves avg an eighth of the way to v (v itself when avg is unset).
func ewma(avg, v time.Duration) time.Duration {
	if avg == 0 {
		return v
	}
	return avg + (v-avg)/8
}

func (s *sizer) pulled(rtt time.Duration) {
	s.mu.Lock()
	s.rtt = ewma(s.rtt, rtt)
	s.mu.Unlock()
}

func (s *sizer) handled(took time.Duration) {
	s.mu.Lock()
	s.handler = ewma(s.handler, max(took, minHandlerTime))
	s.mu.Unlock()
}

// size returns the prefetch (tasks held beyond the slots) and the batch a
// local pull asks for: the slots plus the prefetch spread over localPulls
// pulls, at least the policy's LocalBatch, at most 1,000 (the node's most
// per pull).
func (s *sizer) size() (prefetch, batch int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rtt > 0 && s.handler > 0 && s.cap > 0 {
		rate := float64(s.slots) / s.handler.Seconds()
		prefetch = min(int(2*rate*s.rtt.Seconds()), s.cap)
	}
	batch = min(max((s.slots+prefetch+localPulls-1)/localPulls, s.floor), mqnode.DefaultMaxPullBatch)
	return prefetch, batch
}
