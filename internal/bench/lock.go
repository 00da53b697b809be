package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/mqnode"
)

// lockOptions are the flags of `bench lock`.
type lockOptions struct {
	backlog, queues     int
	rate, senders       int
	consumers, pullSize int
	size                int
	duration, warmup    time.Duration
	durability, dir     string
	json                bool
	runner
}

func newLockCommand(launch Launcher) *cobra.Command {
	o := &lockOptions{runner: runner{launch: launch}}
	cmd := reportCommand(&cobra.Command{
		Use:   "lock",
		Short: "Tail latency of enqueues and pulls under mixed load on a deep backlog (the queue lock)",
		Long: "Fills one mqnode queue with a deep backlog (and --queues small ones), then for --duration offers\n" +
			"single-task enqueues at a fixed rate (open loop) to the deep queue while consumers pull and ack from\n" +
			"it, with the node's backlog publisher reading every queue's stats, and reports p50/p99/p99.9/max of\n" +
			"each enqueue and each pull request. A refill of the ready window, a stats read or a commit waiting\n" +
			"on a queue's lock shows here. See the package documentation of internal/bench.",
	}, &o.runner, &o.json, o.validate, func(ctx context.Context) (*LockReport, error) { return runLock(ctx, o) }, writeLockTable)
	f := cmd.Flags()
	f.IntVar(&o.backlog, "backlog", 1_000_000, "tasks in the deep queue before the mixed phase")
	f.IntVar(&o.queues, "queues", 50, "other queues, 100 tasks each (the publisher reads all their stats)")
	f.IntVar(&o.rate, "rate", 5000, "offered single-task enqueues per second during the mixed phase")
	f.IntVar(&o.senders, "senders", 32, "concurrent enqueue requests at most")
	f.IntVar(&o.consumers, "consumers", 2, "consumer goroutines (pull, then ack, in a loop)")
	f.IntVar(&o.pullSize, "pull-batch", 100, "tasks per pull")
	f.IntVar(&o.size, "size", 256, "payload bytes per task")
	f.DurationVar(&o.duration, "duration", 20*time.Second, "length of the mixed phase")
	f.DurationVar(&o.warmup, "warmup", 2*time.Second, "leading part of the mixed phase left out of the percentiles")
	f.StringVar(&o.durability, "durability", durAsync, "async or fsync")
	f.StringVar(&o.dir, "dir", "", "root of the temporary data directory (default: the system temp dir)")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	return cmd
}

func (o *lockOptions) validate() error {
	var errs []error
	if o.backlog < 1 || o.queues < 0 || o.rate < 1 || o.senders < 1 || o.consumers < 1 || o.pullSize < 1 || o.size < 8 {
		errs = append(errs, errors.New("--backlog, --rate, --senders, --consumers, --pull-batch must be at least 1, --size at least 8, --queues at least 0"))
	}
	if o.duration <= 0 || o.warmup < 0 || o.warmup >= o.duration {
		errs = append(errs, errors.New("--duration must be positive and --warmup shorter"))
	}
	if o.durability != durAsync && o.durability != durFsync {
		errs = append(errs, fmt.Errorf("--durability %q: want async or fsync", o.durability))
	}
	return errors.Join(errs...)
}

// LockSchema names the JSON layout of `bench lock`.
const LockSchema = "mqmesh.bench.lock/v1"

// LockReport is the outcome of `bench lock`.
type LockReport struct {
	Schema      string  `json:"schema"`
	Durability  string  `json:"durability"`
	Backlog     int     `json:"backlog"`
	Queues      int     `json:"queues"`
	OfferedPerS float64 `json:"offered_per_s"`
	DurationS   float64 `json:"duration_s"`
	CPUs        int     `json:"cpus"`
	// LoadBefore and LoadAfter are /proc/loadavg's 1-minute figure at the
	// start and the end of the mixed phase.
	LoadBefore   float64 `json:"load_before"`
	LoadAfter    float64 `json:"load_after"`
	FillPerS     float64 `json:"fill_per_s"`
	EnqueuedPerS float64 `json:"enqueued_per_s"`
	PulledPerS   float64 `json:"pulled_per_s"`
	// Enqueue is request → reply of each single-task enqueue; EnqueueSched
	// is its scheduled send time → reply (includes waiting for a sender);
	// Pull is request → reply of each pull. Milliseconds, after the warmup.
	Enqueue      Percentiles `json:"enqueue_ms"`
	EnqueueSched Percentiles `json:"enqueue_sched_ms"`
	Pull         Percentiles `json:"pull_ms"`
	Enqueues     int         `json:"enqueues"`
	Pulls        int         `json:"pulls"`
	OK           bool        `json:"ok"`
	Error        string      `json:"error,omitempty"`
}

func runLock(ctx context.Context, o *lockOptions) (*LockReport, error) {
	r := &LockReport{Schema: LockSchema, Durability: o.durability, Backlog: o.backlog, Queues: o.queues,
		OfferedPerS: float64(o.rate), DurationS: o.duration.Seconds(), CPUs: runtime.NumCPU()}
	err := lockRun(ctx, o, r, progressWriter(o.stderr))
	if err != nil {
		r.Error = err.Error()
	}
	r.OK = err == nil
	return r, err
}

func lockRun(ctx context.Context, o *lockOptions, r *LockReport, log io.Writer) (err error) {
	dir, err := os.MkdirTemp(o.dir, "mqmesh-bench-lock-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// throttle off: all throttles off, with the backlog publisher, which
	// reads every queue's stats as a deployed node does.
	c, err := startChild(ctx, o.launch, serveOptions{peer: peerMQNode, durability: o.durability, dir: dir, throttle: throttleOff}, log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.stop()) }()
	prod, err := mqnode.Dial(ctx, c.url)
	if err != nil {
		return err
	}
	defer prod.Close()
	cons, err := mqnode.Dial(ctx, c.url)
	if err != nil {
		return err
	}
	defer cons.Close()
	const deep = "lock-deep"
	payload := make([]byte, o.size)
	t0 := time.Now()
	if err := lockFill(ctx, prod, deep, o.backlog, payload); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	r.FillPerS = float64(o.backlog) / time.Since(t0).Seconds()
	for i := range o.queues {
		items := make([]*mqnode.EnqueueItem, 100)
		for j := range items {
			items[j] = &mqnode.EnqueueItem{Payload: payload}
		}
		if _, err := prod.Enqueue(ctx, "lock-small-"+strconv.Itoa(i), items...); err != nil {
			return fmt.Errorf("fill small queue %d: %w", i, err)
		}
	}
	fmt.Fprintf(log, "bench: lock: %d tasks in %s (%.0f/s) and %d small queues; mixed phase for %s\n",
		o.backlog, deep, r.FillPerS, o.queues, o.duration)
	r.LoadBefore = loadAverage()
	m, err := lockMixed(ctx, o, prod, cons, deep, payload)
	r.LoadAfter = loadAverage()
	if err != nil {
		return err
	}
	secs := (o.duration - o.warmup).Seconds()
	r.Enqueues, r.Pulls = len(m.enq), len(m.pull)
	r.EnqueuedPerS, r.PulledPerS = float64(len(m.enq))/secs, float64(m.pulled)/secs
	r.Enqueue, r.EnqueueSched, r.Pull = pctOf(m.enq), pctOf(m.enqSched), pctOf(m.pull)
	fmt.Fprintf(log, "bench: lock: enqueue p99 %.2f p99.9 %.2f ms, pull p99 %.2f p99.9 %.2f ms (load %.2f → %.2f)\n",
		r.Enqueue.P99, r.Enqueue.P999, r.Pull.P99, r.Pull.P999, r.LoadBefore, r.LoadAfter)
	return nil
}

// lockFill enqueues n tasks to queue through one pipelined Enqueuer.
func lockFill(ctx context.Context, c *mqnode.Client, queue string, n int, payload []byte) error {
	e, err := c.NewEnqueuer(queue, mqnode.AsyncConfig{MaxBatch: 1000, MaxRequests: 4, MaxInFlight: 8000})
	if err != nil {
		return err
	}
	defer e.Close()
	var mu sync.Mutex
	var first error
	for range n {
		if err := e.EnqueueFunc(ctx, &mqnode.EnqueueItem{Payload: payload}, func(_ *mqnode.EnqueueResult, err error) {
			if err != nil {
				mu.Lock()
				first = cmpErr(first, err)
				mu.Unlock()
			}
		}); err != nil {
			return err
		}
	}
	err = e.Flush(ctx)
	mu.Lock()
	defer mu.Unlock()
	return errors.Join(err, first)
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// lockSamples are the latencies of the mixed phase after the warmup (ms).
type lockSamples struct {
	mu                  sync.Mutex
	enq, enqSched, pull []float64
	pulled              int
}

// lockMixed runs the open-loop enqueues and the consumers for o.duration.
func lockMixed(ctx context.Context, o *lockOptions, prod, cons *mqnode.Client, queue string, payload []byte) (*lockSamples, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	m := &lockSamples{}
	start := time.Now()
	measureFrom, end := start.Add(o.warmup), start.Add(o.duration)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	var wg sync.WaitGroup
	for i := range o.consumers {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(end) {
				t := time.Now()
				ds, _, err := cons.Pull(ctx, mqnode.PullRequest{Queue: queue, MaxTasks: o.pullSize, MaxWait: time.Second,
					Lease: time.Minute, WorkerID: "lock-" + strconv.Itoa(i)})
				d := time.Since(t)
				if err != nil {
					cancel(fmt.Errorf("pull: %w", err))
					return
				}
				if t.After(measureFrom) {
					m.mu.Lock()
					m.pull = append(m.pull, ms(d))
					m.pulled += len(ds)
					m.mu.Unlock()
				}
				items := make([]*mqnode.AckItem, len(ds))
				for j, dl := range ds {
					items[j] = &mqnode.AckItem{Receipt: dl.GetReceipt()}
				}
				if len(items) > 0 {
					if _, err := cons.Ack(ctx, items...); err != nil {
						cancel(fmt.Errorf("ack: %w", err))
						return
					}
				}
			}
		})
	}
	due := make(chan time.Time, o.senders)
	for range o.senders {
		wg.Go(func() {
			for at := range due {
				t := time.Now()
				_, err := prod.Enqueue(ctx, queue, &mqnode.EnqueueItem{Payload: payload})
				done := time.Now()
				if err != nil {
					if ctx.Err() == nil {
						cancel(fmt.Errorf("enqueue: %w", err))
					}
					continue
				}
				if at.After(measureFrom) {
					m.mu.Lock()
					m.enq = append(m.enq, ms(done.Sub(t)))
					m.enqSched = append(m.enqSched, ms(done.Sub(at)))
					m.mu.Unlock()
				}
			}
		})
	}
	for i := 0; ctx.Err() == nil; i++ {
		at := start.Add(time.Duration(float64(i) / float64(o.rate) * float64(time.Second)))
		if !at.Before(end) {
			break
		}
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		select {
		case due <- at:
		case <-ctx.Done():
		}
	}
	close(due)
	wg.Wait()
	return m, context.Cause(ctx)
}

// pctOf is the percentiles of a sample (ms).
func pctOf(lat []float64) Percentiles {
	if len(lat) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	q := func(f float64) float64 { return s[min(int(f*float64(len(s))), len(s)-1)] }
	return Percentiles{P50: q(0.5), P99: q(0.99), P999: q(0.999), Max: s[len(s)-1]}
}

// loadAverage is the 1-minute load average (0 where /proc is missing).
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func writeLockTable(w io.Writer, r *LockReport) error {
	fmt.Fprintf(w, "bench lock: %s, backlog %d tasks + %d small queues, %.0f enqueues/s offered for %.0f s; load %.2f → %.2f\n",
		r.Durability, r.Backlog, r.Queues, r.OfferedPerS, r.DurationS, r.LoadBefore, r.LoadAfter)
	fmt.Fprintf(w, "fill %.0f/s; mixed: enqueued %.0f/s, pulled %.0f/s\n", r.FillPerS, r.EnqueuedPerS, r.PulledPerS)
	fmt.Fprintf(w, "| latency | n | p50 | p99 | p99.9 | max |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	row := func(name string, n int, p Percentiles) {
		fmt.Fprintf(w, "| %s | %d | %.2f ms | %.2f ms | %.2f ms | %.2f ms |\n", name, n, p.P50, p.P99, p.P999, p.Max)
	}
	row("enqueue (request → reply)", r.Enqueues, r.Enqueue)
	row("enqueue (scheduled → reply)", r.Enqueues, r.EnqueueSched)
	row("pull (request → reply)", r.Pulls, r.Pull)
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
	return nil
}
