package throttle

import (
	"math"
	"time"
)

// window counts two kinds of events (say successes and failures) in a ring
// of fixed-width buckets covering a sliding span. Times are unix ms.
type window struct {
	width   int64 // ms per bucket
	a, b    []float64
	newest  int64 // index (time/width) of the newest bucket
	started int64 // first time seen, to rate over a span shorter than the window
}

func newWindow(span time.Duration, buckets int) *window {
	return newWindowMs(span.Milliseconds(), buckets)
}

func (w *window) advance(now int64) {
	idx := now / w.width
	if w.newest < 0 {
		w.newest, w.started = idx, now
		return
	}
	if idx <= w.newest {
		return
	}
	n := int64(len(w.a))
	for i := max(w.newest+1, idx-n+1); i <= idx; i++ {
		w.a[i%n], w.b[i%n] = 0, 0
	}
	w.newest = idx
}

func (w *window) add(now int64, a, b float64) {
	w.advance(now)
	n := int64(len(w.a))
	w.a[w.newest%n] += a
	w.b[w.newest%n] += b
}

// sums returns the totals over the last span ms (at most the whole window).
func (w *window) sums(now int64, span int64) (a, b float64) {
	w.advance(now)
	n := int64(len(w.a))
	k := min(max((span+w.width-1)/w.width, 1), n)
	for i := w.newest - k + 1; i <= w.newest; i++ {
		if i < 0 {
			continue
		}
		a += w.a[i%n]
		b += w.b[i%n]
	}
	return a, b
}

// rate is events of kind a per second over the window (or since the first
// event, when that is more recent), counting the current partial bucket.
func (w *window) rate(now int64) float64 {
	a, _ := w.sums(now, int64(len(w.a))*w.width)
	span := min(int64(len(w.a))*w.width, now-w.started)
	if w.newest < 0 || span <= 0 {
		return 0
	}
	return a * 1000 / float64(max(span, w.width))
}

// bucket is a token bucket that may go into debt: a unit of work is
// admitted while the bucket holds any token at all, whatever its cost, and
// the cost is taken even if that leaves the bucket below zero; the debt is
// paid back at the bucket's rate before anything else is admitted. So a
// costly task is never starved by cheap ones sharing the bucket, and the
// long-run rate still equals the bucket's rate. rate 0 means unlimited.
// Not safe for concurrent use: the Throttle's mutex guards it. (x/time/rate
// offers no atomic take across several buckets, nor refunds, which
// dispatch needs: a task is admitted only when every bucket it draws on
// has room.)
type bucket struct {
	rate, burst float64 // tokens/s, max tokens
	tokens      float64
	last        int64 // ms
}

// maxRoom bounds room: more than any pull asks for.
const maxRoom = 1 << 30

func (k *bucket) set(now int64, rate float64, burst float64) {
	k.refill(now)
	k.rate, k.burst = rate, max(burst, 1)
	if k.tokens > k.burst {
		k.tokens = k.burst
	}
}

func (k *bucket) refill(now int64) {
	if now > k.last {
		k.tokens = min(k.burst, k.tokens+k.rate*float64(now-k.last)/1000)
		k.last = now
	}
}

func (k *bucket) unlimited() bool { return !(k.rate > 0) }

// room is how many units of cost may go now: as many as start while a
// token is left (the last may take the bucket into debt).
func (k *bucket) room(now int64, cost float64) int {
	if k.unlimited() || !(cost > 1e-9) {
		return maxRoom
	}
	k.refill(now)
	if !(k.tokens > 0) {
		return 0
	}
	return int(min(math.Ceil(k.tokens/cost), maxRoom))
}

func (k *bucket) take(n int, cost float64) {
	if !k.unlimited() && cost > 1e-9 {
		k.tokens = min(k.tokens-float64(n)*cost, k.burst)
	}
}

// wait is how long until the bucket holds a token again.
func (k *bucket) wait(now int64) time.Duration {
	if k.unlimited() {
		return 0
	}
	k.refill(now)
	if k.tokens > 0 {
		return 0
	}
	ms := (-k.tokens + 0.001) * 1000 / k.rate
	return time.Duration(min(ms, 60_000)*float64(time.Millisecond)) + time.Millisecond
}
