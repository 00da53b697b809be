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
	admitted  uint64 // retries delivered, total
	// deferral spreading: the n-th deferral in the current second waits
	// about n/limit, so deferred retries come back at the admitted rate.
	deferSec int64
	deferN   int
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
		if g.ewma >= 1-g.cfg.FailureRatio/2 {
			g.throttled = false
			g.since = now
			g.reason = fmt.Sprintf("reopened: the moving success share is back to %.0f%%", 100*g.ewma)
			return
		}
	} else {
		s, f := g.out.sums(now, g.cfg.Window.Milliseconds())
		if s+f < float64(g.cfg.MinSamples) || g.ewma >= 1-g.cfg.FailureRatio {
			return
		}
		g.throttled = true
		g.since = now
		g.bucket = bucket{last: now}
	}
	s, f := g.out.sums(now, g.cfg.Window.Milliseconds())
	recent, _ := g.out.sums(now, recentWindow.Milliseconds())
	succRate := recent / recentWindow.Seconds()
	g.limit = max(g.cfg.ProbeRate, g.cfg.SuccessShare*succRate)
	g.bucket.set(now, g.limit, max(1, g.limit*defaultBucketBurstDelay.Seconds()))
	g.reason = fmt.Sprintf("moving failure share %.0f%% (%.0f of %.0f executions failed in %s); retries limited to %.1f/s (successes in the last second %.1f/s, probe %.1f/s)",
		100*(1-g.ewma), f, s+f, g.cfg.Window, g.limit, succRate, g.cfg.ProbeRate)
}

// admit says whether one retry may be delivered now, and takes its token.
func (g *retryGate) admit(now int64) bool {
	if g.cfg.Disabled {
		return true
	}
	g.update(now)
	if !g.throttled {
		g.admitted++
		return true
	}
	if g.bucket.room(now, 1) >= 1 {
		g.bucket.take(1, 1)
		g.admitted++
		return true
	}
	g.deferred++
	return false
}

// deferDelay is how long a retry that was not admitted waits before it is
// looked at again: spread at the admitted rate, at most MaxDefer, with
// 20% jitter.
func (g *retryGate) deferDelay(now int64) time.Duration {
	sec := now / 1000
	if sec != g.deferSec {
		g.deferSec, g.deferN = sec, 0
	}
	g.deferN++
	d := time.Duration(float64(g.deferN) / max(g.limit, 0.001) * float64(time.Second))
	d = min(max(d, 200*time.Millisecond), g.cfg.MaxDefer)
	return d + time.Duration(rand.Float64()*0.2*float64(d))
}
