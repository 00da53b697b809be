package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/throttle"
)

// cpuRun is one mode of `bench cpu` in progress.
type cpuRun struct {
	o     *cpuOptions
	log   io.Writer
	label string
	start time.Time
	stats *mqnode.Client

	node, worker *child
	hogs         []*child

	phase atomic.Pointer[string] // the phase the sampler records under

	mu       sync.Mutex
	calls    []enqueueCall
	samples  []CPUSample
	firstErr string
}

// enqueueCall is one Enqueue call of the producer.
type enqueueCall struct {
	start time.Time
	took  time.Duration
	err   bool
}

// cpuSnap is what a phase differences: taken at its start and its end.
type cpuSnap struct {
	at                       time.Time
	delivered, backlog       uint64
	node, worker, hogs, self time.Duration // CPU time used so far
}

// runCPUMode runs one mode and returns its results, with Error set when it
// failed.
func runCPUMode(ctx context.Context, o *cpuOptions, root, mode string, iters int64, log io.Writer) CPUMode {
	m := CPUMode{Throttle: mode, Phases: []CPUPhase{}, Samples: []CPUSample{}}
	r := &cpuRun{o: o, log: log, label: "bench cpu: throttle " + mode}
	err := r.run(ctx, root, mode, iters, &m)
	if r.samples != nil {
		m.Samples = r.samples
	}
	if err != nil {
		m.Error = err.Error()
		fmt.Fprintf(log, "%s: %v\n", r.label, err)
	}
	return m
}

// startPair starts the node (data in a new directory under root, CPU
// throttle mode) and its worker pool, and connects r.stats; stop undoes it
// all.
func (r *cpuRun) startPair(ctx context.Context, root, mode string, iters int64) (stop func() error, err error) {
	o := r.o
	var undo []func() error
	stop = func() error {
		var errs []error
		for i := len(undo) - 1; i >= 0; i-- {
			errs = append(errs, undo[i]())
		}
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, stop())
		}
	}()
	dir, err := os.MkdirTemp(root, "node-"+mode+"-")
	if err != nil {
		return stop, err
	}
	undo = append(undo, func() error { return os.RemoveAll(dir) })
	fmt.Fprintf(r.log, "%s: starting the node (%s) and its worker pool (%d slots)\n", r.label, o.durability, o.slots)
	if r.node, err = startChild(ctx, o.launch, serveOptions{peer: peerMQNode, durability: o.durability, dir: dir, throttle: mode}, r.log); err != nil {
		return stop, err
	}
	undo = append(undo, func() error { return r.node.stop() })
	if r.stats, err = mqnode.Dial(ctx, r.node.url); err != nil {
		return stop, err
	}
	undo = append(undo, func() error { r.stats.Close(); return nil })
	wo := workerOptions{url: r.node.url, queue: cpuQueue, slots: o.slots, burnIters: iters}
	if r.worker, err = startChild(ctx, o.launch, serveOptions{peer: peerWorker, durability: o.durability, worker: wo}, r.log); err != nil {
		return stop, err
	}
	undo = append(undo, func() error { return r.worker.stop() })
	return stop, nil
}

func (r *cpuRun) run(ctx context.Context, root, mode string, iters int64, m *CPUMode) (err error) {
	o := r.o
	stop, err := r.startPair(ctx, root, mode, iters)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stop()) }()
	prod, err := mqnode.Dial(ctx, r.node.url)
	if err != nil {
		return err
	}
	defer prod.Close()
	defer r.stopHogs()

	r.start = time.Now()
	r.setPhase("warmup")
	stopProducer := r.produce(ctx, prod)
	stopSampler := r.sampleEvery(ctx, o.sample)
	defer stopSampler()
	defer stopProducer()

	fmt.Fprintf(r.log, "%s: warm-up %s\n", r.label, o.warmup)
	if err := sleepCtx(ctx, o.warmup); err != nil {
		return err
	}
	measure := func(name string, d time.Duration) error {
		p, err := r.measure(ctx, name, d)
		if p != nil {
			m.Phases = append(m.Phases, *p)
		}
		return err
	}
	if err := measure("before", o.before); err != nil {
		return err
	}
	if err := r.startHogs(ctx); err != nil {
		return err
	}
	if err := measure("hog", o.hog); err != nil {
		return err
	}
	if err := r.stopHogs(); err != nil {
		return err
	}
	if o.after > 0 {
		if err := measure("after", o.after); err != nil {
			return err
		}
	}
	stopProducer()
	stopSampler()
	return nil
}

// betweenPhases labels the samples taken outside every phase (while the
// hog starts, or stops).
const betweenPhases = "-"

func (r *cpuRun) setPhase(name string) { r.phase.Store(&name) }

// measure records one phase of d.
func (r *cpuRun) measure(ctx context.Context, name string, d time.Duration) (*CPUPhase, error) {
	fmt.Fprintf(r.log, "%s: phase %s, %s\n", r.label, name, d)
	host := throttle.HostCPU()
	_, _ = host()
	s0, err := r.snap(ctx)
	if err != nil {
		return nil, err
	}
	r.setPhase(name)
	if err := sleepCtx(ctx, d); err != nil {
		return nil, err
	}
	usage, err := host()
	if err != nil {
		return nil, err
	}
	s1, err := r.snap(ctx)
	if err != nil {
		return nil, err
	}
	r.setPhase(betweenPhases)
	p := r.summarize(name, s0, s1, usage)
	return &p, nil
}

// snap reads the node's queue counters and the processes' CPU times.
func (r *cpuRun) snap(ctx context.Context) (cpuSnap, error) {
	s := cpuSnap{at: time.Now()}
	rep, err := r.statsReply(ctx)
	if err != nil {
		return s, fmt.Errorf("node stats: %w", err)
	}
	s.delivered, s.backlog = queueCounters(rep)
	s.node, _ = readCPU(r.node.pid)
	s.worker, _ = readCPU(r.worker.pid)
	s.self, _ = readCPU(os.Getpid())
	for _, h := range r.hogs {
		c, _ := readCPU(h.pid)
		s.hogs += c
	}
	return s, nil
}

func (r *cpuRun) statsReply(ctx context.Context) (*mqnode.StatsReply, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return r.stats.StatsReply(ctx, "")
}

// queueCounters returns the deliveries so far and the backlog of cpuQueue.
func queueCounters(rep *mqnode.StatsReply) (delivered, backlog uint64) {
	for _, q := range rep.GetQueues() {
		if q.GetQueue() == cpuQueue {
			return q.GetAckedTotal() + q.GetNackedTotal() + q.GetExpiredLeasesTotal() + q.GetLeased(), q.GetReady() + q.GetDelayed()
		}
	}
	return 0, 0
}

// cpuThrottle returns the node's CPU throttle from its stats.
func cpuThrottle(rep *mqnode.StatsReply) *mqnode.ThrottleState {
	for _, t := range rep.GetNodeThrottles() {
		if t.GetKind() == "cpu" {
			return t
		}
	}
	return nil
}

// startHogs starts o.hogs busy child processes; each exits on its own
// some time after the hog phase should have ended.
func (r *cpuRun) startHogs(ctx context.Context) error {
	fmt.Fprintf(r.log, "%s: starting the hog (%d busy processes)\n", r.label, r.o.hogs)
	for range r.o.hogs {
		h, err := startChild(ctx, r.o.launch, serveOptions{peer: peerHog, durability: r.o.durability, hogFor: r.o.hog + 30*time.Second,
			ownSession: r.o.hogSession == hogOwn}, r.log)
		if err != nil {
			return errors.Join(err, r.stopHogs())
		}
		r.hogs = append(r.hogs, h)
	}
	return nil
}

func (r *cpuRun) stopHogs() error {
	var errs []error
	for _, h := range r.hogs {
		errs = append(errs, h.stop())
	}
	r.hogs = nil
	return errors.Join(errs...)
}

// produce enqueues one task per call at o.rate until the returned func is
// called; that func waits for the calls in flight. Every call runs in its
// own goroutine at its scheduled time.
func (r *cpuRun) produce(ctx context.Context, c *mqnode.Client) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	payload := make([]byte, r.o.size)
	interval := time.Duration(float64(time.Second) / r.o.rate)
	var calls sync.WaitGroup
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTimer(0)
		defer t.Stop()
		for i := 0; ; i++ {
			t.Reset(time.Until(r.start.Add(time.Duration(i) * interval)))
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			calls.Go(func() { r.enqueue(ctx, c, payload) })
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
			calls.Wait()
		})
	}
}

func (r *cpuRun) enqueue(ctx context.Context, c *mqnode.Client, payload []byte) {
	cctx, cancel := context.WithTimeout(ctx, r.o.callTimeout)
	defer cancel()
	t0 := time.Now()
	_, err := c.Enqueue(cctx, cpuQueue, &mqnode.EnqueueItem{Payload: payload})
	took := time.Since(t0)
	if err != nil && ctx.Err() != nil {
		return // stopped: not the node's doing
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, enqueueCall{start: t0, took: took, err: err != nil})
	if err != nil && r.firstErr == "" {
		r.firstErr = err.Error()
		fmt.Fprintf(r.log, "%s: enqueue failed: %v\n", r.label, err)
	}
}

// sampleEvery records a CPUSample every period until the returned func is
// called, and prints one progress line every few samples.
func (r *cpuRun) sampleEvery(ctx context.Context, period time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		host := throttle.HostCPU()
		_, _ = host()
		t := time.NewTicker(period)
		defer t.Stop()
		last, lastAt := uint64(0), time.Now()
		every := max(1, int(2*time.Second/period))
		for i := 1; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			usage, _ := host()
			rep, err := r.statsReply(ctx)
			if err != nil {
				continue
			}
			now := time.Now()
			delivered, backlog := queueCounters(rep)
			s := CPUSample{T: now.Sub(r.start).Seconds(), Phase: *r.phase.Load(), HostCPU: usage, Backlog: backlog,
				DispatchPerS: float64(delivered-last) / now.Sub(lastAt).Seconds()}
			last, lastAt = delivered, now
			if th := cpuThrottle(rep); th != nil {
				s.ThrottleActive, s.ThrottleLimit, s.ThrottleReason = th.GetActive(), th.GetLimit(), th.GetReason()
			}
			r.mu.Lock()
			r.samples = append(r.samples, s)
			r.mu.Unlock()
			if i%every == 0 {
				fmt.Fprintf(r.log, "%s: %5.1fs %-7s host cpu %3.0f%%, dispatch %4.0f/s, backlog %d, throttle: %s\n",
					r.label, s.T, s.Phase, 100*s.HostCPU, s.DispatchPerS, s.Backlog, s.ThrottleReason)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
}
