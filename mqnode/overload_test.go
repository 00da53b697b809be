package mqnode

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/mqnode/throttle"
)

// storm is the outcome of one retry-storm run.
type storm struct {
	healthyOK   float64 // successes/s while the backend was up
	retriesDown float64 // retry deliveries/s in the last 2 s of the outage
	firstDown   float64 // first deliveries/s in the same span
	deferred    uint64
	gateActive  bool
	reason      string
	recoverS    float64 // backend up → success rate back at the arrival rate
	clearS      float64 // backend up → every task of the outage done
}

// retryStorm enqueues 200 tasks/s on a node while 8 consumers run them: the
// backend is up for 1.5 s, fails everything fast for 3 s, then is up again
// until every task is done. Nacks use the queue's backoff (20 ms doubling
// to 200 ms), so without a limit every pending task comes back 5-50 times a
// second.
func retryStorm(t *testing.T, th throttle.Config) storm {
	t.Helper()
	_, c := startNode(t, Config{Throttle: th, Durability: DurabilityAsync,
		QueueDefaults: QueueConfig{BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, MaxAttempts: 100000}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const rate, tick = 200, 20 * time.Millisecond
	var down atomic.Bool
	start := time.Now()
	downAt, upAt := start.Add(1500*time.Millisecond), start.Add(4500*time.Millisecond)
	loadEnd := start.Add(6 * time.Second)
	type slot struct{ first, retry, ok int64 }
	var mu sync.Mutex
	buckets := map[int64]*slot{} // per 100 ms since start
	at := func() *slot {
		k := time.Since(start).Milliseconds() / 100
		if buckets[k] == nil {
			buckets[k] = &slot{}
		}
		return buckets[k]
	}
	var enqueued, done atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // producer
		defer wg.Done()
		tk := time.NewTicker(tick)
		defer tk.Stop()
		for sent := 0; time.Now().Before(loadEnd); <-tk.C {
			due := int(rate * time.Since(start).Seconds())
			items := make([]*EnqueueItem, 0, due-sent)
			for ; sent < due; sent++ {
				items = append(items, &EnqueueItem{Payload: []byte("x")})
			}
			if len(items) == 0 {
				continue
			}
			if _, err := c.Enqueue(ctx, "push", items...); err != nil {
				t.Error(err)
				return
			}
			enqueued.Add(int64(len(items)))
		}
	}()
	stop := make(chan struct{})
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() { // consumer
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ds, _, err := c.Pull(ctx, PullRequest{Queue: "push", MaxTasks: 4, MaxWait: 20 * time.Millisecond, WorkerID: fmt.Sprint("w", w)})
				if err != nil {
					if ctx.Err() == nil {
						t.Error(err)
					}
					return
				}
				for _, d := range ds {
					fail := down.Load()
					mu.Lock()
					s := at()
					if d.Task.Attempt > 1 {
						s.retry++
					} else {
						s.first++
					}
					if !fail {
						s.ok++
					}
					mu.Unlock()
					item := &AckItem{Receipt: d.Receipt}
					if fail {
						item.Kind, item.Error = AckNack, "backend down"
					} else {
						time.Sleep(time.Millisecond)
					}
					if _, err := c.AckOne(ctx, item); err != nil {
						t.Error(err)
						return
					}
					if !fail {
						done.Add(1)
					}
				}
			}
		}()
	}
	var gate storm
	time.Sleep(time.Until(downAt))
	down.Store(true)
	time.Sleep(time.Until(upAt) - 200*time.Millisecond)
	if _, qs, err := c.Stats(ctx, "push"); err == nil && len(qs) == 1 {
		for _, x := range qs[0].Throttles {
			if x.Kind == "retry" {
				gate.gateActive, gate.reason = x.Active, x.Reason
			}
		}
	}
	time.Sleep(time.Until(upAt))
	down.Store(false)
	var st storm
	eventually(t, 40*time.Second, "every task done", func() bool {
		if !time.Now().Before(loadEnd) && done.Load() >= enqueued.Load() {
			st.clearS = time.Since(upAt).Seconds()
			return true
		}
		return false
	})
	close(stop)
	wg.Wait()
	st.gateActive, st.reason = gate.gateActive, gate.reason
	if _, qs, err := c.Stats(ctx, "push"); err == nil && len(qs) == 1 {
		for _, x := range qs[0].Throttles {
			if x.Kind == "retry" && x.Active {
				t.Errorf("retry gate still closed after recovery: %s", x.Reason)
			}
		}
	}
	if _, qs, err := c.Stats(ctx, "push"); err == nil && len(qs) == 1 {
		st.deferred = qs[0].RetriesDeferredTotal
	}
	mu.Lock()
	defer mu.Unlock()
	sum := func(from, to time.Time, f func(*slot) int64) float64 {
		var n int64
		a, b := from.Sub(start).Milliseconds()/100, to.Sub(start).Milliseconds()/100
		for k := a; k < b; k++ {
			if s := buckets[k]; s != nil {
				n += f(s)
			}
		}
		return float64(n) / to.Sub(from).Seconds()
	}
	st.healthyOK = sum(start.Add(500*time.Millisecond), downAt, func(s *slot) int64 { return s.ok })
	st.retriesDown = sum(downAt.Add(time.Second), upAt, func(s *slot) int64 { return s.retry })
	st.firstDown = sum(downAt.Add(time.Second), upAt, func(s *slot) int64 { return s.first })
	for k := upAt.Sub(start).Milliseconds() / 100; ; k++ {
		if s := buckets[k]; s != nil && float64(s.ok) >= 0.9*rate/10 {
			st.recoverS = float64(k*100)/1000 - upAt.Sub(start).Seconds()
			break
		}
		if k > 1000 {
			st.recoverS = -1
			break
		}
	}
	return st
}

// TestRetryStorm: a backend failing fast is hit by retries at about the
// probe rate with the retry gate, against many times its healthy
// throughput without; every task completes after recovery either way.
func TestRetryStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("12 s of load")
	}
	on := retryStorm(t, throttle.Config{CPU: throttle.CPUConfig{Disabled: true}})
	off := retryStorm(t, throttle.Config{Disabled: true})
	t.Logf("throttled:   healthy %.0f ok/s; outage: retries %.1f/s (%.2f× healthy), first tries %.0f/s; %d retries deferred; back to full rate %.1fs after recovery, every task done %.1fs after; gate: %s",
		on.healthyOK, on.retriesDown, on.retriesDown/on.healthyOK, on.firstDown, on.deferred, on.recoverS, on.clearS, on.reason)
	t.Logf("unthrottled: healthy %.0f ok/s; outage: retries %.1f/s (%.2f× healthy), first tries %.0f/s; back to full rate %.1fs after recovery, every task done %.1fs after",
		off.healthyOK, off.retriesDown, off.retriesDown/off.healthyOK, off.firstDown, off.recoverS, off.clearS)
	if !on.gateActive || on.deferred == 0 {
		t.Errorf("retry gate not active during the outage (deferred %d): %s", on.deferred, on.reason)
	}
	// Probe rate 1/s: a few retries per second at most.
	if on.retriesDown > 5 {
		t.Errorf("throttled: %.1f retries/s during the outage, want about the probe rate (1/s)", on.retriesDown)
	}
	if off.retriesDown < 10*max(on.retriesDown, 1) {
		t.Errorf("unthrottled retries %.1f/s not well above throttled %.1f/s: the test does not make a storm", off.retriesDown, on.retriesDown)
	}
	if off.gateActive || off.deferred != 0 {
		t.Errorf("disabled throttle deferred %d retries", off.deferred)
	}
	if on.recoverS < 0 || on.recoverS > 3 {
		t.Errorf("throttled: full rate %.1fs after recovery", on.recoverS)
	}
	// The outage's deferred retries come back within max_defer (5 s) of
	// the gate reopening; the load itself ends 1.5 s after recovery.
	if on.clearS > 20 {
		t.Errorf("throttled: the outage's tasks took %.1fs after recovery to finish", on.clearS)
	}
}

// TestCPUThrottle: with the host's CPU over the ceiling the node cuts its
// dispatch rate to the floor while enqueues go on; when it cools the limit
// lifts.
func TestCPUThrottle(t *testing.T) {
	var usage atomic.Value
	usage.Store(0.2)
	_, c := startNode(t, Config{Durability: DurabilityAsync,
		CPUSampler: func() (float64, error) { return usage.Load().(float64), nil },
		Throttle:   throttle.Config{CPU: throttle.CPUConfig{Signal: throttle.SignalHost, Interval: 50 * time.Millisecond, MinRate: 50, Decrease: 0.5}}})
	ctx := ctxT(t)
	items := make([]*EnqueueItem, 2000)
	for i := range items {
		items[i] = &EnqueueItem{Payload: []byte("x")}
	}
	if _, err := c.Enqueue(ctx, "q", items...); err != nil {
		t.Fatal(err)
	}
	pullFor := func(d time.Duration) int {
		n := 0
		for end := time.Now().Add(d); time.Now().Before(end); {
			ds, _, err := c.Pull(ctx, PullRequest{Queue: "q", MaxTasks: 20, MaxWait: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			n += len(ds)
			for _, d := range ds {
				if _, err := c.AckOne(ctx, &AckItem{Receipt: d.Receipt}); err != nil {
					t.Fatal(err)
				}
			}
		}
		return n
	}
	cpuState := func() *ThrottleState {
		rep, err := c.StatsReply(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range rep.NodeThrottles {
			if x.Kind == "cpu" {
				return x
			}
		}
		t.Fatal("no cpu throttle in stats")
		return nil
	}
	if got := pullFor(100 * time.Millisecond); got == 0 {
		t.Fatal("cool host: no task in 100 ms")
	}
	usage.Store(0.97)
	eventually(t, 5*time.Second, "dispatch cut to the floor", func() bool {
		pullFor(50 * time.Millisecond)
		s := cpuState()
		return s.Active && s.Limit == 50
	})
	// Enqueues are not limited; at the floor dispatch runs at about 50
	// tasks/s (plus a quarter-second burst).
	if _, err := c.Enqueue(ctx, "q", items[:500]...); err != nil {
		t.Fatal(err)
	}
	got := pullFor(time.Second)
	t.Logf("at the floor: %d tasks in 1 s", got)
	if got > 50+13+10 {
		t.Errorf("dispatched %d tasks in 1 s at a 50/s limit", got)
	}
	if s := cpuState(); s.Reason == "" || s.DeferredTotal == 0 {
		t.Errorf("cpu throttle state without reason or deferred count: %+v", s)
	}
	usage.Store(0.1)
	eventually(t, 10*time.Second, "limit lifted", func() bool {
		pullFor(50 * time.Millisecond)
		return !cpuState().Active
	})
}
