package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/worker"
)

// remoteOptions are the flags of `bench remote`.
type remoteOptions struct {
	rtts      []time.Duration
	count     int
	size      int
	pools     []string
	pipelines []string
	netns     string
	dir       string
	json      bool
	runner
}

func newRemoteCommand(launch Launcher) *cobra.Command {
	o := &remoteOptions{runner: runner{launch: launch}}
	cmd := reportCommand(&cobra.Command{
		Use:   "remote",
		Short: "Pull throughput of one worker from a node across a link with added round-trip time, against local",
		Long: "Fills a node with --count tasks and drains them with one worker, first on loopback (local), then with\n" +
			"the node in another network namespace behind a link that adds each of --rtts. The worker is a\n" +
			"worker.Pool (--pools) or an mqnode.Puller keeping several pulls in flight (--pipelines). See the package documentation of internal/bench.",
	}, &o.runner, &o.json, o.validate, func(ctx context.Context) (*RemoteReport, error) { return runRemote(ctx, o) }, writeRemoteTable)
	f := cmd.Flags()
	f.DurationSliceVar(&o.rtts, "rtts", []time.Duration{time.Millisecond, 20 * time.Millisecond}, "round-trip times added to the link")
	f.IntVar(&o.count, "count", 30_000, "tasks drained per run")
	f.IntVar(&o.size, "size", 256, "payload bytes per task")
	f.StringSliceVar(&o.pools, "pools", []string{"64x32", "512x500"}, "worker.Pools to run: SLOTSxLOCAL_BATCH (handlers x policy local_batch: the most tasks one pull asks for; 64x32 is the pool's default batch)")
	f.StringSliceVar(&o.pipelines, "pipelines", []string{"1x256", "4x256", "4x1000", pipelineAuto}, "mqnode.Puller drainers to run: PULLSxBATCH (pulls in flight x tasks per pull), or auto: 2 pulls sized by the link's measured round trip for the best loopback rate (2 x rate x RTT in flight)")
	f.StringVar(&o.netns, "netns", "auto", "put the node in a network namespace: auto (when root with ip(8), else loopback), on, off")
	f.StringVar(&o.dir, "dir", "", "root of the temporary data directories (default: the system temp dir)")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	return cmd
}

func (o *remoteOptions) validate() error {
	var errs []error
	if o.count < 1 || o.size < 8 {
		errs = append(errs, errors.New("--count must be at least 1, --size at least 8"))
	}
	for _, p := range o.pools {
		if _, _, err := parsePipeline(p); err != nil {
			errs = append(errs, fmt.Errorf("--pools: %w", err))
		}
	}
	for _, r := range o.rtts {
		if r < time.Millisecond {
			errs = append(errs, fmt.Errorf("--rtts %s: at least 1ms (the link's unit is whole milliseconds)", r))
		}
	}
	for _, p := range o.pipelines {
		if _, _, err := parsePipeline(p); err != nil && p != pipelineAuto {
			errs = append(errs, err)
		}
	}
	if o.netns != "auto" && o.netns != "on" && o.netns != "off" {
		errs = append(errs, fmt.Errorf("--netns %q: want auto, on or off", o.netns))
	}
	return errors.Join(errs...)
}

// pipelineAuto is the Puller drainer whose pulls are sized by the link's
// round trip (autoBatch) for the best rate seen on loopback.
const pipelineAuto = "auto"

func parsePipeline(s string) (pulls, batch int, err error) {
	a, b, ok := strings.Cut(s, "x")
	pulls, err1 := strconv.Atoi(a)
	batch, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || pulls < 1 || batch < 1 || batch > 1000 {
		return 0, 0, fmt.Errorf("%q: want NxBATCH, e.g. 4x256 (batch at most 1000)", s)
	}
	return pulls, batch, nil
}

func runRemote(ctx context.Context, o *remoteOptions) (*RemoteReport, error) {
	root, err := os.MkdirTemp(o.dir, "mqmesh-bench-remote-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(root)
	log := progressWriter(o.stderr)
	r := &RemoteReport{Schema: RemoteSchema, Count: o.count, Size: o.size, CPUs: runtime.NumCPU(), Links: []RemoteLink{},
		Notes: []string{
			"the node (mqnode, durability async, backlog publisher on, throttles off) runs in a child process; local: on loopback; the others: in a network namespace joined by a veth pair (or on loopback when namespaces are unavailable), behind a toxiproxy latency toxic adding the RTT (tc netem is not available on every kernel)",
			"each run: --count tasks enqueued first (not timed), then drained by one worker; per_s = tasks / drain time",
			"pool SxB: a worker.Pool of S no-op handlers whose own node is the remote one, asking for at most B tasks per pull (policy local_batch; default 32), otherwise its default config; puller PxB: an mqnode.Puller keeping P pulls of up to B tasks in flight, one consumer acking what each NextBatch returns in one request (up to P ack requests out); puller auto: 2 pulls whose batch is sized by the link: 2 x best loopback rate x measured RTT in flight (32..1,000 per pull)",
		}}
	var link *netnsLink
	if o.netns != "off" {
		link, err = newNetnsLink()
		if err != nil && o.netns == "on" {
			return nil, err
		}
		if err != nil {
			r.NetnsSkipped = err.Error()
			fmt.Fprintf(log, "bench: remote: no network namespace (%v): loopback with added delay\n", err)
		} else {
			defer link.close()
			r.Netns = true
		}
	}
	var drainers []string
	for _, p := range o.pools {
		drainers = append(drainers, "pool "+p)
	}
	for _, p := range o.pipelines {
		drainers = append(drainers, "puller "+p)
	}
	var errs []error
	local := map[string]float64{}
	for i, rtt := range append([]time.Duration{0}, o.rtts...) {
		if ctx.Err() != nil {
			errs = append(errs, context.Cause(ctx))
			break
		}
		l := RemoteLink{Name: "local", AddedRTTMs: float64(rtt) / 1e6, Runs: []RemoteRun{}}
		if i > 0 {
			l.Name = "rtt-" + rtt.String()
		}
		best := 0.0
		for _, v := range local {
			best = max(best, v)
		}
		if err := remoteLink(ctx, o, root, rtt, link, drainers, best, &l, log); err != nil {
			l.Error = err.Error()
			errs = append(errs, fmt.Errorf("%s: %w", l.Name, err))
		}
		for j := range l.Runs {
			run := &l.Runs[j]
			if i == 0 {
				local[run.Drainer] = run.PerS
			}
			run.VsLocal = ratio(run.PerS, local[run.Drainer])
			if run.Error != "" {
				errs = append(errs, fmt.Errorf("%s %s: %s", l.Name, run.Drainer, run.Error))
			}
		}
		r.Links = append(r.Links, l)
	}
	r.OK = len(errs) == 0
	return r, errors.Join(errs...)
}

// remoteLink starts a node (in the namespace unless rtt is 0) and runs
// every drainer against it through a link adding rtt.
// target is the best loopback rate (0 for the loopback link itself).
func remoteLink(ctx context.Context, o *remoteOptions, root string, rtt time.Duration, link *netnsLink, drainers []string, target float64, l *RemoteLink, log io.Writer) (err error) {
	dir, err := os.MkdirTemp(root, "node-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	so := serveOptions{peer: peerMQNode, durability: durAsync, dir: dir, throttle: throttleOff}
	launch := o.launch
	if rtt > 0 && link != nil {
		so.listen = link.nsAddr + ":0"
		launch = link.wrap(launch)
	}
	c, err := startChild(ctx, launch, so, log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.stop()) }()
	url := c.url
	if rtt > 0 {
		d, err := newDelayLink(strings.TrimPrefix(c.url, "nats://"), rtt)
		if err != nil {
			return err
		}
		defer d.close()
		url = d.url()
	}
	filler, err := mqnode.Dial(ctx, c.url)
	if err != nil {
		return err
	}
	defer filler.Close()
	logger := slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for i, name := range drainers {
		queue := fmt.Sprintf("%s-%d", queueName, i)
		run := RemoteRun{Drainer: name}
		if target == 0 { // the local link: the best rate of its runs so far
			for _, r := range l.Runs {
				target = max(target, r.PerS)
			}
		}
		rr, err := remoteRun(ctx, o, filler, url, queue, name, target, logger)
		run.PerS, run.TasksPerPull, run.PullBatch = rr.perS, rr.perPull, rr.batch
		if rr.rtt > 0 {
			l.MeasuredRTTMs = float64(rr.rtt) / 1e6
		}
		if err != nil {
			run.Error = err.Error()
		}
		fmt.Fprintf(log, "bench: remote %s: %s: %.0f tasks/s\n", l.Name, run.Drainer, rr.perS)
		l.Runs = append(l.Runs, run)
	}
	return nil
}

// autoPulls is how many pulls the auto-sized Puller keeps in flight.
const autoPulls = 2

// autoBatch sizes the pulls of a Puller by the link's round trip: autoPulls
// pulls of this many tasks keep rate tasks/s moving over a link of rtt,
// with room for twice that (between 32 and 1,000, the node's max pull).
func autoBatch(rate float64, rtt time.Duration) int {
	n := int(2 * rate * rtt.Seconds() / autoPulls)
	return min(max(n, 32), 1000)
}

type remoteResult struct {
	perS    float64
	rtt     time.Duration
	perPull float64 // pool: average pull size
	batch   int     // puller auto: the batch chosen
}

// remoteRun fills queue with o.count tasks through filler, then drains it
// with drainer connected at url, and returns tasks/s and the connection's
// round trip (and, for a pool, its average pull size).
// target is the rate an auto-sized Puller sizes its pulls for.
func remoteRun(ctx context.Context, o *remoteOptions, filler *mqnode.Client, url, queue, drainer string, target float64, log *slog.Logger) (remoteResult, error) {
	var rr remoteResult
	e, err := filler.NewEnqueuer(queue, mqnode.AsyncConfig{MaxBatch: 1000, MaxRequests: 4, MaxInFlight: 8000})
	if err != nil {
		return rr, err
	}
	payload := make([]byte, o.size)
	for range o.count {
		if err := e.EnqueueFunc(ctx, &mqnode.EnqueueItem{Payload: payload}, func(_ *mqnode.EnqueueResult, err error) {
			if err != nil {
				log.Warn("fill", "err", err)
			}
		}); err != nil {
			e.Close()
			return rr, err
		}
	}
	e.Close()
	c, err := mqnode.Dial(ctx, url)
	if err != nil {
		return rr, err
	}
	defer c.Close()
	rr.rtt, _ = c.Conn().RTT()
	var done atomic.Int64
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var el time.Duration
	kind, spec, _ := strings.Cut(drainer, " ")
	n, batch, _ := parsePipeline(spec)
	switch {
	case kind == "pool":
		rr.perPull, el, err = drainWithPool(ctx, c, queue, n, batch, &done)
	case spec == pipelineAuto:
		rr.batch = autoBatch(target, rr.rtt)
		el, err = drainWithPuller(ctx, c, queue, autoPulls, rr.batch, int64(o.count), &done)
	default:
		el, err = drainWithPuller(ctx, c, queue, n, batch, int64(o.count), &done)
	}
	if err == nil && done.Load() != int64(o.count) {
		err = fmt.Errorf("drained %d of %d", done.Load(), o.count)
	}
	rr.perS = float64(done.Load()) / el.Seconds()
	return rr, err
}

// drainWithPool runs a worker.Pool on c's node until every task is acked
// (the node holds none) and returns the pool's average pull size and the
// time from its start until then (its Stop, which waits out its long poll,
// is not counted).
func drainWithPool(ctx context.Context, c *mqnode.Client, queue string, slots, batch int, done *atomic.Int64) (float64, time.Duration, error) {
	t0 := time.Now()
	idc, node := c.Node()
	p, err := worker.New(c.Conn(), worker.Config{ID: "bench-remote-" + queue, IDC: idc, Node: node, Slots: slots,
		Policy: worker.PolicyConfig{LocalBatch: batch}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return 0, 0, err
	}
	var handled atomic.Int64
	if err := p.Handle(queue, func(context.Context, *worker.Task) worker.Result {
		handled.Add(1)
		return worker.Done()
	}); err != nil {
		return 0, 0, err
	}
	if err := p.Start(ctx); err != nil {
		return 0, 0, err
	}
	err = waitFor(ctx, 10*time.Minute, func() (bool, error) {
		_, qs, err := c.Stats(ctx, queue)
		if err != nil || len(qs) == 0 {
			return false, err
		}
		return qs[0].GetReady()+qs[0].GetLeased()+qs[0].GetDelayed() == 0, nil
	})
	el := time.Since(t0)
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done.Store(handled.Load())
	err = errors.Join(err, p.Stop(sctx))
	st := p.Stats()
	pulls := st.Pulls[worker.Local] - st.EmptyPulls[worker.Local]
	return ratio(float64(handled.Load()), float64(pulls)), el, err
}

// drainWithPuller drains total tasks with an mqnode.Puller of pulls pulls
// of up to batch tasks in flight, acking what each NextBatch returns in
// one request, with up to pulls ack requests out at once. It returns the
// time until the last ack (the Puller's Close, which waits out the long
// polls in flight, is not counted).
func drainWithPuller(ctx context.Context, c *mqnode.Client, queue string, pulls, batch int, total int64, done *atomic.Int64) (time.Duration, error) {
	t0 := time.Now()
	p, err := c.NewPuller(queue, mqnode.PullerConfig{WorkerID: "bench-remote", Lease: 30 * time.Second, Pulls: pulls, MaxTasks: batch})
	if err != nil {
		return 0, err
	}
	defer p.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	acks := make(chan struct{}, pulls)
	var wg sync.WaitGroup
	defer wg.Wait()
	for taken := int64(0); taken < total; {
		ds, err := p.NextBatch(ctx, batch)
		if err != nil {
			return time.Since(t0), err
		}
		taken += int64(len(ds))
		items := make([]*mqnode.AckItem, len(ds))
		for i, d := range ds {
			items[i] = &mqnode.AckItem{Receipt: d.GetReceipt()}
		}
		select {
		case acks <- struct{}{}:
		case <-ctx.Done():
			return time.Since(t0), context.Cause(ctx)
		}
		wg.Go(func() {
			defer func() { <-acks }()
			res, err := c.Ack(ctx, items...)
			for _, r := range res {
				err = errors.Join(err, mqnode.ItemErr(r))
			}
			if err != nil {
				cancel(fmt.Errorf("ack: %w", err))
				return
			}
			done.Add(int64(len(items)))
		})
	}
	wg.Wait()
	return time.Since(t0), context.Cause(ctx)
}
