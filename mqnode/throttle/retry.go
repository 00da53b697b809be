package throttle

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// retryGate decides, per queue, whether a retry may be delivered now.
type retryGate struct {
	cfg       RetryConfig
	out       *window // a = successes, b = failures
	ewma      float64 // success share, moving average over outcomes
	throttled bool
	since     int64
	limit     float64 // retries/s while throttled
	bucket    bucket
	reason    string
	deferred  uint64 // retries deferred, total
	// nextSlot (unix ms) is the next free slot for a deferred retry.
	nextSlot float64
}

func newRetryGate(cfg RetryConfig) *retryGate {
	return &retryGate{cfg: cfg, out: newWindow(cfg.Window, 20), ewma: 1}
}

// observe records one execution outcome and updates the state.
func (g *retryGate) observe(now int64, success bool) {
	if success {
		g.out.add(now, 1, 0)
		g.ewma += ewmaAlpha * (1 - g.ewma)
	} else {
		g.out.add(now, 0, 1)
		g.ewma -= ewmaAlpha * g.ewma
	}
	g.update(now)
}

func (g *retryGate) update(now int64) {
	if g.cfg.Disabled {
		return
	}
	if g.throttled {
		// Hold at least a second, so a lucky run of successes under a
		// partial failure does not release every deferred retry at once.
		if now-g.since >= minHold.Milliseconds() && g.ewma >= 1-g.cfg.FailureRatio/2 {
			g.throttled = false
			g.since = now
			g.reason = fmt.Sprintf("reopened: the moving success share is back to %.0f%%", 100*g.ewma)
			return
		}
	} else {
		// Close only when both the last two seconds and the moving
		// average show the failure share: their count keeps a random
		// dip of the average under a partial failure from closing it.
		s, f := g.out.sums(now, g.cfg.Window.Milliseconds())
		rs, rf := g.out.sums(now, closeWindow.Milliseconds())
		if s+f < float64(g.cfg.MinSamples) || rf < g.cfg.FailureRatio*(rs+rf) || g.ewma >= 1-g.cfg.FailureRatio {
			return
		}
		g.throttled = true
		g.since = now
		g.bucket = bucket{last: now}
	}
	s, f := g.out.sums(now, g.cfg.Window.Milliseconds())
	recent, _ := g.out.sums(now, recentWindow.Milliseconds())
	succRate := recent / recentWindow.Seconds()
	g.limit = g.cfg.ProbeRate + g.cfg.SuccessShare*succRate
	g.bucket.set(now, g.limit, max(1, g.limit*defaultBucketBurstDelay.Seconds()))
	g.reason = fmt.Sprintf("moving failure share %.0f%% (%.0f of %.0f executions failed in %s); retries limited to %.1f/s (successes in the last second %.1f/s + probe %.1f/s)",
		100*(1-g.ewma), f, s+f, g.cfg.Window, g.limit, succRate, g.cfg.ProbeRate)
}

// describe is the gate's reason for stats: why it is closed, or, open, what
// it sees (and that it reopened, for a minute after it did).
func (g *retryGate) describe(now int64) string {
	if g.cfg.Disabled {
		return "disabled"
	}
	if g.throttled || (g.since != 0 && now-g.since < 60_000) {
		return g.reason
	}
	s, f := g.out.sums(now, g.cfg.Window.Milliseconds())
	return fmt.Sprintf("%.0f of %.0f executions failed in %s (closes at %.0f%% failing)", f, s+f, g.cfg.Window, 100*g.cfg.FailureRatio)
}

// admit says whether one retry may be delivered now, and takes its token.
func (g *retryGate) admit(now int64) bool {
	if g.cfg.Disabled {
		return true
	}
	g.update(now)
	if !g.throttled {
		return true
	}
	if g.bucket.room(now, 1) >= 1 {
		g.bucket.take(1, 1)
		return true
	}
	g.deferred++
	return false
}

// deferDelay is how long a retry that was not admitted waits before it is
// looked at again. Deferred retries are given slots at the admitted rate
// (the n-th waits about n/limit), so they come back about as fast as they
// may go; past max_defer they spread over the second half of max_defer.
func (g *retryGate) deferDelay(now int64) time.Duration {
	step := 1000 / max(g.limit, 0.001)
	g.nextSlot = max(g.nextSlot, float64(now)+minDefer) + step
	maxMs := float64(g.cfg.MaxDefer.Milliseconds())
	d := g.nextSlot - float64(now)
	if d > maxMs {
		g.nextSlot = float64(now) + maxMs
		d = maxMs * (0.5 + 0.5*rand.Float64())
	}
	return time.Duration(d * float64(time.Millisecond))
}
