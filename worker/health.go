package worker

import "time"

// health is what a pool learns of its own handlers on one queue: a moving
// average of their success and of their latency, and the latency it had
// while healthy. A pool whose handlers fail far more and run far slower
// than they used to (its IDC's path to a backend degraded) yields: it
// keeps one task at a time of its own node's work and helps nobody, so its
// node's backlog escalates (backlog.TierPolicy.Wait and Stall) and healthy
// pools of other IDCs take it over. Failing fast alone (a backend down
// for everyone: retries are deferred by the node's throttle) or running
// slow alone (CPU contention) is not a reason to yield.
type health struct {
	n        int
	success  float64 // moving average of 1 (done) / 0 (retry, give up)
	latency  float64 // seconds, moving average
	baseline float64 // seconds: latency while not degraded (slower average)
	degraded bool
}

// Health thresholds.
const (
	healthAlpha     = 0.05 // weight of one outcome (about the last 20)
	baselineAlpha   = 0.01
	healthMinTasks  = 20  // outcomes seen before judging
	degradedSuccess = 0.7 // success below this ...
	degradedSlower  = 3.0 // ... and latency above this × baseline: degraded
	healedSuccess   = 0.85
	healedSlower    = 2.0
	yieldSlots      = 1                     // tasks a degraded pool still runs at once
	yieldWait       = 50 * time.Millisecond // its idle between looks
)

func (h *health) observe(ok bool, took time.Duration) {
	s := 0.0
	if ok {
		s = 1
	}
	l := max(took.Seconds(), 1e-4)
	if h.n == 0 {
		h.success, h.latency, h.baseline = s, l, l
	}
	h.n++
	h.success += healthAlpha * (s - h.success)
	h.latency += healthAlpha * (l - h.latency)
	if !h.degraded {
		h.baseline += baselineAlpha * (l - h.baseline)
	}
	switch {
	case h.n < healthMinTasks:
	case !h.degraded && h.success < degradedSuccess && h.latency > degradedSlower*h.baseline:
		h.degraded = true
	case h.degraded && (h.success > healedSuccess || h.latency < healedSlower*h.baseline):
		h.degraded = false
	}
}
