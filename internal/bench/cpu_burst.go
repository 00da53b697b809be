package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/throttle"
)

// CPUBurst is one mode's drain of a burst (`bench cpu --burst N`): the
// hog runs from before the burst is enqueued until it is drained.
type CPUBurst struct {
	Throttle string  `json:"throttle"` // on or off
	Tasks    int     `json:"tasks"`
	DrainS   float64 `json:"drain_s"` // from the first enqueue to the last ack
	RatePerS float64 `json:"rate_per_s"`
	// ThrottleActive is the share of samples (every --sample) in which the
	// CPU throttle limited dispatch; ThrottleLimitMin the lowest limit.
	ThrottleActive   float64 `json:"throttle_active"`
	ThrottleLimitMin float64 `json:"throttle_limit_min"`
	ThrottleReason   string  `json:"throttle_reason"`
	HostCPU          float64 `json:"host_cpu"` // 0..1 over the drain
	Error            string  `json:"error,omitempty"`
}

// runCPUBurst drains a burst of o.burst tasks with the hog running, in
// mode (throttle on or off).
func runCPUBurst(ctx context.Context, o *cpuOptions, root, mode string, iters int64, log io.Writer) CPUBurst {
	b := CPUBurst{Throttle: mode, Tasks: o.burst}
	r := &cpuRun{o: o, log: log, label: "bench cpu --burst: throttle " + mode}
	if err := r.burst(ctx, root, mode, iters, &b); err != nil {
		b.Error = err.Error()
		fmt.Fprintf(log, "%s: %v\n", r.label, err)
	}
	return b
}

func (r *cpuRun) burst(ctx context.Context, root, mode string, iters int64, b *CPUBurst) (err error) {
	o := r.o
	stop, err := r.startPair(ctx, root, mode, iters)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stop()) }()
	defer r.stopHogs()
	if err := r.startHogs(ctx); err != nil {
		return err
	}
	fmt.Fprintf(r.log, "%s: hog running; enqueueing %d tasks after %s\n", r.label, o.burst, o.warmup)
	if err := sleepCtx(ctx, o.warmup); err != nil {
		return err
	}
	host := throttle.HostCPU()
	if _, err := host(); err != nil {
		return err
	}
	start := time.Now()
	payload := make([]byte, o.size)
	for left := o.burst; left > 0; {
		n := min(left, 500)
		items := make([]*mqnode.EnqueueItem, n)
		for i := range items {
			items[i] = &mqnode.EnqueueItem{Payload: payload}
		}
		cctx, cancel := context.WithTimeout(ctx, o.callTimeout)
		_, err := r.stats.Enqueue(cctx, cpuQueue, items...)
		cancel()
		if err != nil {
			return fmt.Errorf("enqueue the burst: %w", err)
		}
		left -= n
	}
	samples, limited := 0, 0
	tick := time.NewTicker(o.sample)
	defer tick.Stop()
	for {
		rep, err := r.statsReply(ctx)
		if err != nil {
			return fmt.Errorf("node stats: %w", err)
		}
		samples++
		if t := cpuThrottle(rep); t != nil {
			if t.GetActive() {
				limited++
				if b.ThrottleLimitMin == 0 || t.GetLimit() < b.ThrottleLimitMin {
					b.ThrottleLimitMin = t.GetLimit()
				}
			}
			b.ThrottleReason = t.GetReason()
		}
		if ackedTotal(rep) >= uint64(o.burst) {
			break
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
		}
	}
	b.DrainS = time.Since(start).Seconds()
	b.RatePerS = float64(o.burst) / b.DrainS
	b.ThrottleActive = float64(limited) / float64(samples)
	b.HostCPU, _ = host()
	fmt.Fprintf(r.log, "%s: drained %d tasks in %.1fs (%.0f/s)\n", r.label, o.burst, b.DrainS, b.RatePerS)
	return nil
}

// ackedTotal is how many tasks of cpuQueue were acked.
func ackedTotal(rep *mqnode.StatsReply) uint64 {
	for _, q := range rep.GetQueues() {
		if q.GetQueue() == cpuQueue {
			return q.GetAckedTotal()
		}
	}
	return 0
}

// writeCPUBursts renders the burst drains and their on/off ratio.
func writeCPUBursts(w io.Writer, c CPUConfig, bs []CPUBurst) {
	fmt.Fprintf(w, "burst drain: %d tasks enqueued at once, %d hog processes (session %s) running, %d slots burning %.2f ms each\n",
		c.Burst, c.Hogs, c.HogSession, c.Slots, c.BurnMs)
	rates := map[string]float64{}
	for _, b := range bs {
		if b.Error != "" {
			fmt.Fprintf(w, "  throttle %-3s error: %s\n", b.Throttle, b.Error)
			continue
		}
		rates[b.Throttle] = b.RatePerS
		limit := "never limited"
		if b.ThrottleActive > 0 {
			limit = fmt.Sprintf("limited in %.0f%% of samples, lowest limit %.0f/s", 100*b.ThrottleActive, b.ThrottleLimitMin)
		}
		fmt.Fprintf(w, "  throttle %-3s drained in %5.1fs: %6.0f tasks/s, host cpu %.0f%%; %s (last: %s)\n",
			b.Throttle, b.DrainS, b.RatePerS, 100*b.HostCPU, limit, b.ThrottleReason)
	}
	if on, off := rates[throttleOn], rates[throttleOff]; on > 0 && off > 0 {
		fmt.Fprintf(w, "  ratio on/off: %.2f of the rate without the throttle\n", on/off)
	}
}
