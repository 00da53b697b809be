package throttle

import (
	"fmt"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
)

// CPUSampler returns the host's CPU usage (0..1 of all cores) since its
// previous call. HostCPU is the real one; tests inject their own.
type CPUSampler func() (float64, error)

// HostCPU returns a sampler of the whole host's CPU usage, read from the
// kernel's counters (/proc/stat on Linux) by gopsutil: busy time over total
// time between two calls, all cores together.
func HostCPU() CPUSampler {
	var mu sync.Mutex
	var last *cpu.TimesStat
	return func() (float64, error) {
		mu.Lock()
		defer mu.Unlock()
		ts, err := cpu.Times(false)
		if err != nil {
			return 0, fmt.Errorf("read host cpu times: %w", err)
		}
		if len(ts) == 0 {
			return 0, fmt.Errorf("read host cpu times: no data")
		}
		cur := ts[0]
		prev := last
		last = &cur
		if prev == nil {
			return 0, nil
		}
		idle := (cur.Idle + cur.Iowait) - (prev.Idle + prev.Iowait)
		total := cur.Total() - prev.Total()
		if total <= 0 {
			return 0, nil
		}
		return min(max(1-idle/total, 0), 1), nil
	}
}

// cpuReading is one interval's verdict of the CPU signal: over the limit
// (cut), calm (below the band: may raise), far below (raise faster), and
// what was measured, for the reason shown in stats.
type cpuReading struct {
	over, calm, far bool
	what            string
}

// hostReading judges a host CPU usage sample against the ceiling.
func (c CPUConfig) hostReading(usage float64) cpuReading {
	return cpuReading{
		over: usage > c.Ceiling, calm: usage < c.Ceiling-0.1, far: usage < c.Ceiling-0.3,
		what: fmt.Sprintf("host cpu %.0f%% (ceiling %.0f%%)", 100*usage, 100*c.Ceiling),
	}
}

// starvationReading judges a starvation sample (the node's own scheduling
// delay) against MaxDelay: over it cuts, under half of it is calm, under a
// fifth far below.
func (c CPUConfig) starvationReading(d time.Duration) cpuReading {
	return cpuReading{
		over: d > c.MaxDelay, calm: d < c.MaxDelay/2, far: d < c.MaxDelay/5,
		what: fmt.Sprintf("node scheduling delay %s (max %s)", d.Round(10*time.Microsecond), c.MaxDelay),
	}
}

// cpuControl controls the node's dispatch rate by its CPU signal:
// multiplicative decrease when over, multiplicative increase (after two
// calm intervals) when calm, nothing in between.
type cpuControl struct {
	cfg    CPUConfig
	last   string  // last reading, for stats
	limit  float64 // tasks/s; 0 = none
	since  int64
	reason string
	bucket bucket
	// dispatched counts tasks admitted since the last tick.
	dispatched float64
	deferred   uint64
	calm       int // intervals below the band since the last cut
}

// tick takes one reading over elapsed ms and adjusts the limit.
func (c *cpuControl) tick(now int64, r cpuReading, elapsedMs int64) {
	c.last = r.what
	rate := c.dispatched * 1000 / float64(max(elapsedMs, 1))
	c.dispatched = 0
	if c.cfg.Disabled {
		return
	}
	if r.calm {
		c.calm++
	} else {
		c.calm = 0
	}
	switch {
	case r.over:
		base := rate
		if c.limit > 0 {
			base = min(base, c.limit)
		}
		if c.limit == 0 {
			c.since = now
		}
		c.limit = max(c.cfg.MinRate, base*c.cfg.Decrease)
		c.reason = fmt.Sprintf("%s over: dispatch cut to %.0f tasks/s", r.what, c.limit)
	case c.limit == 0:
		return
	case r.calm && c.calm < 2:
		// Handlers dispatched before the cut may still be running: wait
		// for a second calm reading before raising the limit.
		c.reason = fmt.Sprintf("%s: dispatch held at %.0f tasks/s, raising it next interval if calm", r.what, c.limit)
	case r.calm:
		up := c.cfg.Increase
		if r.far {
			up *= c.cfg.Increase // far below: climb twice as fast
		}
		if rate < 0.5*c.limit {
			c.limit = 0
			c.since = now
			c.reason = fmt.Sprintf("%s: dispatch limit lifted", r.what)
			c.bucket = bucket{}
			return
		}
		c.limit *= up
		c.reason = fmt.Sprintf("%s calm: dispatch raised to %.0f tasks/s", r.what, c.limit)
	default:
		c.reason = fmt.Sprintf("%s near the limit: dispatch held at %.0f tasks/s", r.what, c.limit)
	}
	c.bucket.set(now, c.limit, max(1, c.limit*defaultBucketBurstDelay.Seconds()))
}
