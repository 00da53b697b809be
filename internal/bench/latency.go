package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
)

// latencyOptions are the flags of `bench latency`.
type latencyOptions struct {
	peers       []string
	durability  string
	levels      []int
	rates       []int
	duration    time.Duration
	warmup      time.Duration
	maxCount    int
	size, slots int
	dir         string
	settle      time.Duration
	json        bool
	noTrace     bool
	runner
}

func newLatencyCommand(launch Launcher) *cobra.Command {
	o := &latencyOptions{runner: runner{launch: launch}}
	cmd := reportCommand(&cobra.Command{
		Use:   "latency",
		Short: "Latency under load: mqnode and JetStream at fixed offered rates",
		Long: "Measures each peer's maximum rate with single-task producers, then offers fixed rates (open loop) at\n" +
			"--levels percent of that maximum and at the absolute --rates, and reports p50/p99/p99.9 from each task's\n" +
			"scheduled send time to its handler's start and to its enqueue acknowledgement. See the package\n" +
			"documentation of internal/bench.",
	}, &o.runner, &o.json, o.validate, func(ctx context.Context) (*LatencyReport, error) { return runLatency(ctx, o) }, writeLatencyTable)
	f := cmd.Flags()
	f.StringSliceVar(&o.peers, "peers", []string{peerMQNode, peerJetStream}, "peers to measure: mqnode, jetstream")
	f.StringVar(&o.durability, "durability", durAsync, "async (mqnode async vs JetStream default) or fsync (mqnode group commit vs JetStream SyncAlways)")
	f.IntSliceVar(&o.levels, "levels", []int{25, 50, 75}, "offered rates in percent of each peer's measured maximum")
	f.IntSliceVar(&o.rates, "rates", []int{2000, 5000, 10000, 20000}, "offered rates in tasks/s, the same for every peer (empty: none)")
	f.DurationVar(&o.duration, "duration", 5*time.Second, "how long each rate is offered")
	f.DurationVar(&o.warmup, "warmup", time.Second, "leading part of each rate's tasks left out of the percentiles")
	f.IntVar(&o.maxCount, "max-count", 100_000, "tasks of the maximum-rate run")
	f.IntVar(&o.size, "size", 256, "payload bytes per task (at least 16: index and send time)")
	f.IntVar(&o.slots, "slots", 64, "mqnode: handlers of the worker.Pool")
	f.DurationVar(&o.settle, "settle-timeout", 30*time.Second, "how long a run waits for its last tasks after the offered period")
	f.StringVar(&o.dir, "dir", "", "root of the temporary data directories (default: the system temp dir)")
	f.BoolVar(&o.noTrace, "mqnode-no-trace", false, "run mqnode without its task trace, to measure what the trace costs")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	return cmd
}

func (o *latencyOptions) validate() error {
	var errs []error
	for _, p := range o.peers {
		if p != peerMQNode && p != peerJetStream {
			errs = append(errs, fmt.Errorf("--peers %q: want mqnode or jetstream", p))
		}
	}
	if len(o.peers) == 0 {
		errs = append(errs, errors.New("--peers: none given"))
	}
	if o.durability != durAsync && o.durability != durFsync {
		errs = append(errs, fmt.Errorf("--durability %q: want async or fsync", o.durability))
	}
	for _, l := range o.levels {
		if l < 1 || l > 100 {
			errs = append(errs, fmt.Errorf("--levels %d: want 1..100 percent", l))
		}
	}
	for _, r := range o.rates {
		if r < 1 {
			errs = append(errs, fmt.Errorf("--rates %d: want a positive rate", r))
		}
	}
	if o.duration <= 0 || o.warmup < 0 || o.warmup >= o.duration || o.settle <= 0 {
		errs = append(errs, errors.New("--duration and --settle-timeout must be positive and --warmup shorter than --duration"))
	}
	if o.maxCount < 1 || o.slots < 1 {
		errs = append(errs, errors.New("--max-count and --slots must be at least 1"))
	}
	if o.size < 16 {
		errs = append(errs, fmt.Errorf("--size %d: at least 16 bytes (task index and send time)", o.size))
	}
	return errors.Join(errs...)
}

// LatencySchema names the JSON layout of `bench latency`.
const LatencySchema = "mqmesh.bench.latency/v1"

// LatencyReport is the outcome of `bench latency`.
type LatencyReport struct {
	Schema     string        `json:"schema"`
	Durability string        `json:"durability"`
	DurationS  float64       `json:"duration_s"`
	WarmupS    float64       `json:"warmup_s"`
	Size       int           `json:"size_bytes"`
	Slots      int           `json:"slots"`
	CPUs       int           `json:"cpus"`
	Peers      []LatencyPeer `json:"peers"`
	OK         bool          `json:"ok"`
	Notes      []string      `json:"notes"`
}

// LatencyPeer is one peer's runs.
type LatencyPeer struct {
	Peer       string       `json:"peer"`
	Durability string       `json:"durability"`
	MaxPerS    float64      `json:"max_per_s"` // single-task producers, as fast as they go
	Runs       []LatencyRun `json:"runs"`
	Error      string       `json:"error,omitempty"`
}

// LatencyRun is one offered rate.
type LatencyRun struct {
	// Level is the percent of the peer's maximum, 0 for an absolute rate.
	Level    int     `json:"level_pct,omitempty"`
	Offered  float64 `json:"offered_per_s"`
	Achieved float64 `json:"achieved_per_s"` // handler starts per second over the offered period
	Sent     int     `json:"sent"`
	Handled  int     `json:"handled"`
	// Start is scheduled send → handler start; Ack is scheduled send →
	// enqueue acknowledged. Milliseconds, over the tasks after the warmup.
	Start Percentiles `json:"start_ms"`
	Ack   Percentiles `json:"ack_ms"`
	// Send is scheduled send → the send call: the pacer's own lateness
	// (timer wake-ups, a producer that blocks), a floor under Start and
	// Ack that is the machine's and the client's, not the peer's.
	Send Percentiles `json:"send_ms"`
	// Saturated: some tasks were not handled within the settle timeout,
	// or the handled rate fell short of 95 % of the offered.
	Saturated bool   `json:"saturated"`
	Error     string `json:"error,omitempty"`
}

// Percentiles of a latency sample, in milliseconds.
type Percentiles struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
}

func runLatency(ctx context.Context, o *latencyOptions) (*LatencyReport, error) {
	root, err := os.MkdirTemp(o.dir, "mqmesh-bench-latency-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(root)
	log := progressWriter(o.stderr)
	r := &LatencyReport{
		Schema: LatencySchema, Durability: o.durability, DurationS: o.duration.Seconds(), WarmupS: o.warmup.Seconds(),
		Size: o.size, Slots: o.slots, CPUs: runtime.NumCPU(), Peers: []LatencyPeer{},
		Notes: []string{
			"open loop: task i is sent at start + i/rate from one goroutine, whatever happened to earlier tasks; latency counts from that scheduled time, so a producer that falls behind shows it",
			"mqnode: tasks go through an mqnode.Enqueuer (default config: batches of up to 256, 4 requests out, 4,096 tasks in flight) and are handled by a worker.Pool of --slots no-op handlers; the node runs with its backlog publisher and its throttles off",
			"jetstream: PublishAsync with at most 4,096 PubAcks outstanding; a durable pull consumer worked with Consume at its defaults, each message acked with msg.Ack",
			"each peer's server runs in its own child process on loopback; peers run one after the other; producer and consumers run in this process",
		},
	}
	var errs []error
	for _, pn := range o.peers {
		lp := latencyForPeer(ctx, o, root, pn, log)
		if lp.Error != "" {
			errs = append(errs, fmt.Errorf("%s: %s", pn, lp.Error))
		}
		r.Peers = append(r.Peers, lp)
	}
	r.OK = len(errs) == 0
	return r, errors.Join(errs...)
}

func latencyForPeer(ctx context.Context, o *latencyOptions, root, peerName string, log io.Writer) LatencyPeer {
	lp := LatencyPeer{Peer: peerName, Durability: durabilityName(peerName, o.durability), Runs: []LatencyRun{}}
	if err := latencyRuns(ctx, o, root, &lp, log); err != nil {
		lp.Error = err.Error()
		fmt.Fprintf(log, "bench: latency %s: %v\n", peerName, err)
	}
	return lp
}

func latencyRuns(ctx context.Context, o *latencyOptions, root string, lp *LatencyPeer, log io.Writer) (err error) {
	dir, err := os.MkdirTemp(root, lp.Peer+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	so := serveOptions{peer: lp.Peer, durability: o.durability, dir: dir, noTrace: o.noTrace}
	if lp.Peer == peerMQNode {
		so.throttle = throttleOff // with its backlog publisher, as deployed
	}
	c, err := startChild(ctx, o.launch, so, log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.stop()) }()
	logger := slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	run := 0
	do := func(level int, rate float64, count int) (LatencyRun, error) {
		run++
		lr, err := latencyRun(ctx, o, c.url, lp.Peer, strconv.Itoa(run), rate, count, logger)
		lr.Level = level
		if err != nil {
			lr.Error = err.Error()
		}
		fmt.Fprintf(log, "bench: latency %s: offered %.0f/s achieved %.0f/s: start p50 %.2f p99 %.2f p99.9 %.2f ms, ack p99 %.2f ms, send p99 %.2f ms%s\n",
			lp.Peer, rate, lr.Achieved, lr.Start.P50, lr.Start.P99, lr.Start.P999, lr.Ack.P99, lr.Send.P99, map[bool]string{true: " (saturated)"}[lr.Saturated])
		return lr, err
	}
	// The maximum: every task due at once.
	mx, err := do(0, 0, o.maxCount)
	if err != nil {
		return fmt.Errorf("maximum-rate run: %w", err)
	}
	lp.MaxPerS = mx.Achieved
	fmt.Fprintf(log, "bench: latency %s: maximum %.0f tasks/s\n", lp.Peer, lp.MaxPerS)
	var errs []error
	for _, l := range o.levels {
		rate := lp.MaxPerS * float64(l) / 100
		lr, err := do(l, rate, int(rate*o.duration.Seconds()))
		lp.Runs = append(lp.Runs, lr)
		errs = append(errs, err)
	}
	for _, rate := range o.rates {
		lr, err := do(0, float64(rate), int(float64(rate)*o.duration.Seconds()))
		lp.Runs = append(lp.Runs, lr)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// latencyRun offers count tasks at rate (0: all at once) to a fresh queue
// of the peer and measures each task's latencies.
func latencyRun(ctx context.Context, o *latencyOptions, url, peerName, run string, rate float64, count int, log *slog.Logger) (LatencyRun, error) {
	lr := LatencyRun{Offered: rate}
	count = max(count, 1)
	sched := make([]int64, count) // scheduled send, unix ns
	acked := make([]atomic.Int64, count)
	started := make([]atomic.Int64, count)
	sent := make([]atomic.Int64, count)
	var handled, ackErrs atomic.Int64
	var firstAckErr atomic.Pointer[error]
	index := func(p []byte) (int, bool) {
		i := binary.BigEndian.Uint64(p)
		return int(i), len(p) >= 16 && i < uint64(count)
	}
	done := make(chan struct{})
	hooks := latencyHooks{
		onAck: func(p []byte, err error) {
			if i, ok := index(p); ok {
				if err != nil {
					ackErrs.Add(1)
					firstAckErr.CompareAndSwap(nil, &err)
					return
				}
				acked[i].Store(time.Now().UnixNano())
			}
		},
		onStart: func(p []byte) {
			now := time.Now().UnixNano()
			if i, ok := index(p); ok && started[i].CompareAndSwap(0, now) {
				if handled.Add(1) == int64(count) {
					close(done)
				}
			}
		},
	}
	p, err := connectLatency(ctx, peerName, url, run, o.slots, hooks, log)
	if err != nil {
		return lr, err
	}
	filler := make([]byte, o.size)
	t0 := time.Now()
	var sendErr error
	for i := range count {
		at := t0
		if rate > 0 {
			at = t0.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if d := time.Until(at); d > 200*time.Microsecond {
				time.Sleep(d)
			}
		}
		sched[i] = at.UnixNano()
		payload := make([]byte, o.size)
		copy(payload, filler)
		binary.BigEndian.PutUint64(payload, uint64(i))
		binary.BigEndian.PutUint64(payload[8:], uint64(sched[i]))
		sent[i].Store(time.Now().UnixNano())
		if sendErr = p.send(ctx, payload); sendErr != nil {
			count = i
			break
		}
	}
	lr.Sent = count
	offeredEnd := time.Now()
	if rate > 0 {
		offeredEnd = t0.Add(time.Duration(float64(count) / rate * float64(time.Second)))
	}
	timer := time.NewTimer(o.settle)
	select {
	case <-done:
	case <-timer.C:
	case <-ctx.Done():
	}
	timer.Stop()
	stopErr := p.stop()
	lr.Handled = int(handled.Load())
	// Achieved: tasks whose handler started by the end of the offered
	// period (for the maximum run: by the last start), per second.
	end := offeredEnd.UnixNano()
	last := int64(0)
	n := 0
	for i := range count {
		s := started[i].Load()
		last = max(last, s)
		if rate == 0 || (s != 0 && s <= end) {
			if s != 0 {
				n++
			}
		}
	}
	if rate == 0 {
		lr.Achieved = float64(n) / (float64(last-t0.UnixNano()) / 1e9)
	} else {
		lr.Achieved = float64(n) / offeredEnd.Sub(t0).Seconds()
	}
	from := 0
	if rate > 0 {
		from = min(int(rate*o.warmup.Seconds()), count)
	}
	lr.Start = percentiles(sched[from:count], started[from:count])
	lr.Ack = percentiles(sched[from:count], acked[from:count])
	lr.Send = percentiles(sched[from:count], sent[from:count])
	lr.Saturated = lr.Handled < count || (rate > 0 && lr.Achieved < 0.95*rate)
	var errs []error
	if sendErr != nil {
		errs = append(errs, fmt.Errorf("send: %w", sendErr))
	}
	if n := ackErrs.Load(); n > 0 {
		errs = append(errs, fmt.Errorf("%d enqueues failed, first: %w", n, *firstAckErr.Load()))
	}
	errs = append(errs, stopErr)
	return lr, errors.Join(errs...)
}

// percentiles of at[i] - sched[i] over the tasks with an at; a task
// without one (never handled) counts as the longest.
func percentiles(sched []int64, at []atomic.Int64) Percentiles {
	if len(sched) == 0 {
		return Percentiles{}
	}
	lat := make([]float64, 0, len(sched))
	missing := 0
	for i, s := range sched {
		a := at[i].Load()
		if a == 0 {
			missing++
			continue
		}
		lat = append(lat, float64(a-s)/1e6)
	}
	slices.Sort(lat)
	inf := float64(-1) // a missing task: reported as -1 when a percentile lands on it
	for range missing {
		lat = append(lat, inf)
	}
	q := func(f float64) float64 {
		if len(lat) == 0 {
			return inf
		}
		return lat[min(int(f*float64(len(lat))), len(lat)-1)]
	}
	return Percentiles{P50: q(0.5), P99: q(0.99), P999: q(0.999), Max: q(1)}
}
