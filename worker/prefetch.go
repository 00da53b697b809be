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
type credits struct {
	mu      sync.Mutex
	held    int
	limit   int
	waiters int
	wake    chan struct{} // closed when credits are given back while someone waits
}

func newCredits(limit int) *credits {
	return &credits{limit: limit, wake: make(chan struct{})}
}

// take waits until at least one credit is free, then takes up to max; it
// returns 0 when stop closes first.
func (c *credits) take(max int, stop <-chan struct{}) int {
	c.mu.Lock()
	for c.held >= c.limit {
		c.waiters++
		wake := c.wake
		c.mu.Unlock()
		select {
		case <-wake:
		case <-stop:
			c.mu.Lock()
			c.waiters--
			c.mu.Unlock()
			return 0
		}
		c.mu.Lock()
		c.waiters--
	}
	n := min(max, c.limit-c.held)
	c.held += n
	c.mu.Unlock()
	return n
}

// give returns n credits.
func (c *credits) give(n int) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	c.held -= n
	c.signalLocked()
	c.mu.Unlock()
}

// setLimit changes the limit (credits held above it stay held).
func (c *credits) setLimit(n int) {
	c.mu.Lock()
	grew := n > c.limit
	c.limit = n
	if grew {
		c.signalLocked()
	}
	c.mu.Unlock()
}

func (c *credits) signalLocked() {
	if c.waiters > 0 {
		close(c.wake)
		c.wake = make(chan struct{})
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
