package worker

import "time"

// health is what a pool learns of its own handlers on one queue: a moving
// average of their success and of their latency, and the latency it had
// while healthy. A pool whose handlers fail far more and run far slower
// than they used to (its IDC's path to a backend degraded) yields: it
// leaves its own node's work to others and helps nobody, so its
// node's backlog escalates (backlog.TierPolicy.Wait and Stall) and healthy
// pools of other IDCs take it over. It still works when its node's oldest
// task has waited yieldAge (nobody took it over: every pool is degraded,
// or none hears of it). Failing fast alone (a backend down
// for everyone: retries are deferred by the node's throttle) or running
// slow alone (CPU contention) is not a reason to yield.
type health struct {
	n        int
	success  float64 // moving average of 1 (done) / 0 (retry, give up)
	latency  float64 // seconds, moving average
	baseline float64 // seconds: latency of successes while not degraded (slower average)
	degraded bool
	probedAt time.Time // a degraded pool's last probe task
	// good: the last outcome was a success at under healedSlower × the
	// baseline (a degraded pool then probes again soon: it may be well).
	good bool
}

// Health thresholds.
const (
	healthAlpha     = 0.05 // weight of one outcome (about the last 20)
	probeAlpha      = 0.5  // ... while degraded (few probes: heal fast)
	baselineAlpha   = 0.01
	healthMinTasks  = 10  // outcomes seen before judging
	degradedSuccess = 0.7 // success below this ...
	degradedSlower  = 3.0 // ... and latency above this × baseline: degraded
	healedSuccess   = 0.85
	healedSlower    = 2.0
	yieldWait       = 50 * time.Millisecond // a degraded pool's idle between looks
	// A degraded pool works when its node's oldest task waited this long.
	yieldAge = 2 * time.Second
	// It runs one task of its own node this often, to learn it healed;
	// after a good probe, at once again.
	yieldProbe     = 3 * time.Second
	yieldProbeGood = 100 * time.Millisecond
)

// probeEvery is how long a degraded pool waits between probe tasks.
func (h *health) probeEvery() time.Duration {
	if h.good {
		return yieldProbeGood
	}
	return yieldProbe
}

func (h *health) observe(ok bool, took time.Duration) {
	s := 0.0
	if ok {
		s = 1
	}
	l := max(took.Seconds(), 1e-4)
	if h.n == 0 {
		h.success, h.latency = s, l
	}
	if h.baseline == 0 && ok {
		h.baseline = l
	}
	h.n++
	h.good = ok && h.baseline > 0 && l < healedSlower*h.baseline
	a := healthAlpha
	if h.degraded {
		a = probeAlpha
	}
	h.success += a * (s - h.success)
	h.latency += a * (l - h.latency)
	// The baseline learns from successes only: fast failures (a backend
	// refusing at once) must not make the healthy latency look tiny.
	if !h.degraded && ok {
		h.baseline += baselineAlpha * (l - h.baseline)
	}
	switch {
	case h.n < healthMinTasks || h.baseline == 0:
	case !h.degraded && h.success < degradedSuccess && h.latency > degradedSlower*h.baseline:
		h.degraded = true
	case h.degraded && h.success > healedSuccess && h.latency < healedSlower*h.baseline:
		h.degraded = false
	}
}
