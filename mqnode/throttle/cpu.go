package throttle

import (
	"fmt"
	"sync"

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

// cpuControl controls the node's dispatch rate by host CPU: multiplicative
// decrease above the ceiling, multiplicative increase (after two calm
// intervals) below ceiling − 0.1, nothing in between.
type cpuControl struct {
	cfg    CPUConfig
	usage  float64 // last sample
	limit  float64 // tasks/s; 0 = none
	since  int64
	reason string
	bucket bucket
	// dispatched counts tasks admitted since the last tick.
	dispatched float64
	deferred   uint64
	calm       int // intervals below the band since the last cut
}

// tick takes one CPU sample over elapsed ms and adjusts the limit.
func (c *cpuControl) tick(now int64, usage float64, elapsedMs int64) {
	c.usage = usage
	rate := c.dispatched * 1000 / float64(max(elapsedMs, 1))
	c.dispatched = 0
	if c.cfg.Disabled {
		return
	}
	if usage < c.cfg.Ceiling-0.1 {
		c.calm++
	} else {
		c.calm = 0
	}
	switch {
	case usage > c.cfg.Ceiling:
		base := rate
		if c.limit > 0 {
			base = min(base, c.limit)
		}
		if c.limit == 0 {
			c.since = now
		}
		c.limit = max(c.cfg.MinRate, base*c.cfg.Decrease)
		c.reason = fmt.Sprintf("host cpu %.0f%% > ceiling %.0f%%: dispatch cut to %.0f tasks/s", 100*usage, 100*c.cfg.Ceiling, c.limit)
	case c.limit == 0:
		return
	case usage < c.cfg.Ceiling-0.1 && c.calm < 2:
		// Handlers dispatched before the cut may still be running: wait
		// for a second calm reading before raising the limit.
		c.reason = fmt.Sprintf("host cpu %.0f%%: dispatch held at %.0f tasks/s, raising it next interval if calm", 100*usage, c.limit)
	case usage < c.cfg.Ceiling-0.1:
		up := c.cfg.Increase
		if usage < c.cfg.Ceiling-0.3 {
			up *= c.cfg.Increase // far below: climb twice as fast
		}
		if rate < 0.5*c.limit {
			c.limit = 0
			c.since = now
			c.reason = fmt.Sprintf("host cpu %.0f%%: dispatch limit lifted", 100*usage)
			c.bucket = bucket{}
			return
		}
		c.limit *= up
		c.reason = fmt.Sprintf("host cpu %.0f%% < %.0f%%: dispatch raised to %.0f tasks/s", 100*usage, 100*(c.cfg.Ceiling-0.1), c.limit)
	default:
		c.reason = fmt.Sprintf("host cpu %.0f%% near ceiling %.0f%%: dispatch held at %.0f tasks/s", 100*usage, 100*c.cfg.Ceiling, c.limit)
	}
	c.bucket.set(now, c.limit, max(1, c.limit*defaultBucketBurstDelay.Seconds()))
}
