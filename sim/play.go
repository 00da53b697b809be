package sim

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/mqmesh/mqmesh/mqnode"
)

// play runs the load and the timeline, then restores every fault and
// waits for the backlog to drain. It returns when the run is over.
func (r *run) play(ctx context.Context) (drainedAfter time.Duration, drained bool, err error) {
	start := time.Now()
	first := "normal"
	if len(r.s.Timeline) > 0 && r.s.Timeline[0].At.D() == 0 {
		first = phaseName(r.s.Timeline[0])
	}
	r.metrics.begin(start, first)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	// Sampler.
	sampleDone := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(r.s.Sample.D())
		defer t.Stop()
		for {
			r.takeSample(start)
			select {
			case <-sampleDone:
				r.takeSample(start)
				return
			case <-t.C:
			}
		}
	}()
	// Producers (load: the drain is judged only once their last enqueue
	// is answered, or a task in flight would look lost).
	loadEnd := start.Add(r.s.Load.Duration.D())
	var load sync.WaitGroup
	var errMu sync.Mutex
	var loadErr error
	for _, h := range r.hosts {
		if h.workerOnly || r.s.Load.Rate == 0 {
			continue
		}
		load.Add(1)
		go func(h *simHost) {
			defer load.Done()
			if err := r.produce(ctx, h, loadEnd); err != nil {
				errMu.Lock()
				loadErr = err
				errMu.Unlock()
			}
		}(h)
	}
	for _, b := range r.s.Load.Bursts {
		load.Add(1)
		go func(b Burst) {
			defer load.Done()
			sleepUntil(ctx, start.Add(b.At.D()))
			for _, h := range r.hosts {
				if !h.workerOnly && (h.name == b.Host || b.Host == "" && h.idc == b.IDC) {
					r.enqueue(ctx, h, b.Count, false)
				}
			}
		}(b)
	}
	// Timeline.
	for i, ev := range r.s.Timeline {
		sleepUntil(ctx, start.Add(ev.At.D()))
		if ctx.Err() != nil {
			break
		}
		// An event starts a phase if it is named, or is the first at its
		// time; the very first event at 0s names the initial phase.
		starts := ev.Phase != "" || i == 0 || r.s.Timeline[i-1].At != ev.At
		if starts && !(i == 0 && ev.At.D() == 0) {
			r.metrics.enterPhase(phaseName(ev), time.Now())
		}
		if err := r.apply(ctx, ev); err != nil {
			r.log.Warn("timeline event failed", "event", ev.Action, "err", err)
		}
	}
	sleepUntil(ctx, loadEnd)
	// Recovery: undo every fault, then drain.
	r.metrics.enterPhase("drain", time.Now())
	if err := r.apply(ctx, Event{Action: "restore-all"}); err != nil {
		r.log.Warn("restore failed", "err", err)
	}
	load.Wait()
	deadline := time.Now().Add(r.s.Drain.D())
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if v := r.nodes(); v.total == 0 && v.complete {
			drained = true
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	drainedAfter = time.Since(loadEnd)
	close(sampleDone)
	cancel()
	wg.Wait()
	r.metrics.enterPhase("end", time.Now())
	return drainedAfter, drained, loadErr
}

func phaseName(ev Event) string {
	if ev.Phase != "" {
		return ev.Phase
	}
	if ev.IDC != "" || ev.Host != "" {
		return fmt.Sprintf("%s %s%s", ev.Action, ev.IDC, ev.Host)
	}
	return ev.Action
}

func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}

// produce enqueues Load.Rate tasks/s on a host's node in 20 ms batches.
// What is owed follows the clock, not the ticks, so a slow enqueue does
// not lower the load (the next batch is larger).
func (r *run) produce(ctx context.Context, h *simHost, end time.Time) error {
	const tick = 20 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	sent := 0
	for now := start; now.Before(end); {
		select {
		case <-ctx.Done():
			return nil
		case now = <-t.C:
		}
		if now.After(end) {
			now = end
		}
		due := int(float64(r.s.Load.Rate) * now.Sub(start).Seconds())
		if n := due - sent; n > 0 {
			r.enqueue(ctx, h, n, true)
			sent += n
		}
	}
	return nil
}

// enqueue puts n tasks on a host's node (skipped while it is down: a dead
// host produces nothing). timed records how long each Enqueue call took
// (the producer's enqueue latency).
func (r *run) enqueue(ctx context.Context, h *simHost, n int, timed bool) {
	h.mu.Lock()
	c := h.client
	h.mu.Unlock()
	if c == nil || h.removed.Load() {
		return
	}
	payload := make([]byte, r.s.Load.PayloadSize)
	for n > 0 {
		k := min(n, 1000)
		items := make([]*mqnode.EnqueueItem, k)
		for i := range items {
			items[i] = &mqnode.EnqueueItem{Payload: payload}
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		t0 := time.Now()
		res, err := c.Enqueue(rctx, Queue, items...)
		took := time.Since(t0)
		cancel()
		if !timed {
			took = 0
		}
		if err != nil {
			if ctx.Err() == nil && h.nodeUp.Load() {
				r.log.Warn("enqueue failed", "host", h.name, "err", err)
			}
			return
		}
		ids := make([]string, len(res))
		for i, x := range res {
			ids[i] = x.Id
		}
		r.metrics.enqueue(ids, h.name, took)
		n -= k
	}
}

// nodesView is what the live nodes' stats say.
type nodesView struct {
	total    uint64            // ready + delayed + leased
	per      map[string]uint64 // the same per IDC
	deferred uint64            // retries the retry gates deferred so far
	dead     uint64            // in the dead letter queues
	cpuLimit float64           // sum of the active CPU dispatch limits, tasks/s
	gates    int               // nodes whose retry gate holds retries back
	// complete says every live node answered (a drain is only declared on
	// a complete reading).
	complete bool
}

// nodes reads every live node's stats of the queue.
func (r *run) nodes() nodesView {
	v := nodesView{per: map[string]uint64{}, complete: true}
	for _, idc := range r.s.Topology.IDCs {
		v.per[idc.Name] = 0
	}
	for _, h := range r.hosts {
		h.mu.Lock()
		c := h.client
		h.mu.Unlock()
		if c == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		rep, err := c.StatsReply(ctx, Queue)
		cancel()
		if errors.Is(err, mqnode.ErrUnknownQueue) {
			continue // nothing was ever enqueued there
		}
		if err != nil || len(rep.Queues) == 0 {
			v.complete = false
			continue
		}
		q := rep.Queues[0]
		n := q.Ready + q.Delayed + q.Leased + r.awaitingTakeover(rep)
		v.per[h.idc] += n
		v.total += n
		v.deferred += q.RetriesDeferredTotal
		v.dead += q.Dead
		for _, t := range q.Throttles {
			if t.Kind == "retry" && t.Active {
				v.gates++
			}
		}
		for _, t := range rep.NodeThrottles {
			if t.Kind == "cpu" && t.Active {
				v.cpuLimit += t.Limit
			}
		}
	}
	return v
}

func (r *run) takeSample(start time.Time) {
	v := r.nodes()
	cpu, _ := r.cpu()
	notices := r.noticeBase.Load()
	workers := 0
	for _, h := range r.hosts {
		h.mu.Lock()
		p := h.pool
		h.mu.Unlock()
		if p != nil {
			notices += noticesOf(p)
			workers++
		}
	}
	s := Sample{T: time.Since(start).Seconds(), Backlog: v.per, Total: v.total, Notices: notices, Workers: workers,
		Deferred: v.deferred, RetryGates: v.gates, CPULimit: v.cpuLimit, CPU: cpu}
	r.metrics.sample(s)
	if r.progress != nil {
		r.metrics.mu.Lock()
		last := r.metrics.series[len(r.metrics.series)-1]
		r.metrics.mu.Unlock()
		r.progress(r.mode, last)
	}
}

// apply carries out one timeline event.
func (r *run) apply(ctx context.Context, ev Event) error {
	switch ev.Action {
	case "normal":
	case "degrade":
		r.backends.degrade(ev.IDC, ev.Slowdown, ev.ErrorRate)
	case "restore":
		r.backends.restore(ev.IDC)
	case "kill-pools":
		for _, h := range r.hosts {
			if h.idc == ev.IDC {
				r.stopPool(h, false)
			}
		}
	case "restore-pools":
		for _, h := range r.hosts {
			if h.idc == ev.IDC && !h.poolUp.Load() && !h.removed.Load() {
				if err := r.startPool(ctx, h); err != nil {
					return err
				}
			}
		}
	case "kill-node":
		h := r.host(ev.Host)
		r.stopPool(h, false)
		r.stopNode(h, false)
	case "lose-host":
		return r.loseHost(r.host(ev.Host))
	case "restart-node":
		h := r.host(ev.Host)
		if h.nodeUp.Load() {
			return nil
		}
		if err := r.startNode(ctx, h); err != nil {
			return err
		}
		return r.startPool(ctx, h)
	case "remove-host":
		// A planned removal: the host stops taking new tasks, its pool
		// finishes what it runs and leaves, the other pools drain its node
		// (for at most 20 s), then the node leaves the mesh.
		h := r.host(ev.Host)
		h.removed.Store(true)
		r.stopPool(h, true)
		r.bg.Add(1)
		go func() {
			defer r.bg.Done()
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) {
				h.mu.Lock()
				c := h.client
				h.mu.Unlock()
				if c == nil {
					return
				}
				sctx, cancel := context.WithTimeout(ctx, time.Second)
				_, qs, err := c.Stats(sctx, Queue)
				cancel()
				if err != nil || len(qs) == 0 || qs[0].Ready+qs[0].Leased+qs[0].Delayed == 0 {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			r.stopNode(h, true)
		}()
	case "backend-fail", "backend-recover":
		down := ev.Action == "backend-fail"
		if r.backends.setDown(ev.IDC, down) {
			r.metrics.backend(down, time.Now())
		}
	case "cpu-hog":
		n := ev.Procs
		if n == 0 {
			n = runtime.GOMAXPROCS(0)
		}
		r.hog.start(n)
	case "cpu-calm":
		r.hog.calm()
	case "bad-deploy":
		r.deploy.badDeploy(ev.IDC, time.Now())
	case "replay":
		return r.replayAll(ctx, fmt.Sprintf("sim-%s-%d", r.mode, ev.At.D().Milliseconds()))
	case "partition", "slow-link", "heal":
		return r.links.set(r.nodeHosts(ev.IDC), ev.Action == "partition", ev.Latency.D().Milliseconds())
	case "restore-all":
		r.hog.calm()
		r.deploy.fix() // a bad deploy not replayed: its tasks stay lost
		if r.backends.setDown("", false) {
			r.metrics.backend(false, time.Now())
		}
		for _, idc := range r.s.Topology.IDCs {
			r.backends.restore(idc.Name)
			if err := r.links.set(r.nodeHosts(idc.Name), false, 0); err != nil {
				return err
			}
		}
		for _, h := range r.hosts {
			if h.removed.Load() {
				continue
			}
			if !h.workerOnly && !h.nodeUp.Load() {
				if err := r.startNode(ctx, h); err != nil {
					return err
				}
			}
			if !h.poolUp.Load() {
				if err := r.startPool(ctx, h); err != nil {
					return err
				}
			}
		}
	default:
		return fmt.Errorf("unknown action %q", ev.Action)
	}
	return nil
}

// nodeHosts lists the hosts of an IDC that run a node.
func (r *run) nodeHosts(idc string) []string {
	var out []string
	for _, h := range r.hosts {
		if h.idc == idc && !h.workerOnly {
			out = append(out, h.name)
		}
	}
	return out
}
