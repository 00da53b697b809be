package bench

// `mqmesh bench backlog` measures the backlog broadcast (package backlog)
// in a real mesh in one process: 2 IDCs x 3 nodes started with
// mesh.NewNodeAgent on loopback (memberlist Local profile, NATS routes
// inside an IDC and gateways between IDCs, mqnode durability async, data
// in a temporary directory, default publisher policies), and, for every
// filter config (default configs/filters/local-only.yaml, local-idc.yaml,
// everything.yaml), one worker per node: a backlog.Watcher and View on its
// own in-process connection to its host's node. All filter configs run at
// once, under the same traffic.
//
//	mqmesh bench backlog                 # the full run, about a minute
//	mqmesh bench backlog --json
//	mqmesh bench backlog --steady 2s --burst 1000 --burst-hold 1s --rounds 1
//
// It reports, per filter config:
//
//   - steady state: every node enqueues --rate tasks/s on a queue a
//     consumer on the same node pulls (long-polling) and acks, so queues
//     stay near empty; notices received per worker per second over
//     --steady (heartbeats included), split by tier;
//   - a backlog event: --rounds times, one node (a1, then b2, a3, ...) gets
//     --burst tasks on a fresh queue, in requests of --burst-batch, that
//     nobody consumes for --burst-hold; then the node's consumer drains
//     them. Notices per worker per second from the burst's first enqueue
//     until every view that had it dropped it (bounded by --settle), the
//     steady load still running, and the notices a worker got beyond its
//     steady rate per event;
//
// and, per tier, the latency from the acknowledgement of the enqueue that
// crosses the tier's threshold (High of backlog.DefaultPolicies, printed in
// the JSON's config) until the backlog is in a worker's view, polled every
// --poll (so --burst must reach the global tier's threshold to measure
// it): a worker on the same
// host (local tier), on another host of the IDC (idc tier), in the other
// IDC (global tier). A worker whose filter excludes the burst and that saw
// it anyway counts as unexpected; one that should have and did not, as
// missed; either fails the run.
//
// Everything is bounded: --setup-timeout for the mesh and the
// subscriptions, --settle after a drain, --timeout for the whole run.
// Progress goes to stderr, the report to stdout (a table, or --json).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

// broadcastOptions are the flags of `bench backlog`.
type broadcastOptions struct {
	filtersDir        string
	filters           []string
	idcs, nodesPerIDC int
	steady, warmup    time.Duration
	rate              float64
	burst, burstBatch int
	burstHold         time.Duration
	rounds            int
	poll              time.Duration
	settle            time.Duration
	setupTimeout      time.Duration
	timeout           time.Duration
	dir               string
	json, verbose     bool
	stdout, stderr    io.Writer
}

func newBroadcastCommand() *cobra.Command {
	o := &broadcastOptions{}
	cmd := &cobra.Command{
		Use:   "backlog",
		Short: "Measure the backlog broadcast: notices per worker and crossing-to-view latency per tier, per filter config",
		Long: "Starts a mesh of 2 IDCs x 3 nodes in this process on loopback, with one worker (a backlog watcher and\n" +
			"view) per node for each filter config, and measures the notices each worker receives in steady state\n" +
			"and during a backlog event, and the time from a node crossing a tier's threshold until workers of\n" +
			"that tier have the backlog in their view. See the package documentation of internal/bench.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.stdout, o.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			if err := o.validate(); err != nil {
				return err
			}
			return runReport(cmd, func(ctx context.Context) (*BroadcastReport, error) { return runBroadcast(ctx, o) },
				output(o.json, writeBroadcastTable))
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.filtersDir, "filters-dir", filepath.Join("configs", "filters"), "directory of the filter configs (relative paths: to the working directory)")
	f.StringSliceVar(&o.filters, "filters", []string{"local-only.yaml", "local-idc.yaml", "everything.yaml"}, "filter configs in --filters-dir to measure")
	f.IntVar(&o.idcs, "idcs", 2, "IDCs in the mesh")
	f.IntVar(&o.nodesPerIDC, "nodes", 3, "nodes per IDC")
	f.DurationVar(&o.steady, "steady", 10*time.Second, "steady-state measurement window")
	f.DurationVar(&o.warmup, "warmup", time.Second, "steady load before the steady window opens")
	f.Float64Var(&o.rate, "rate", 50, "steady load: tasks/s enqueued on, and drained from, every node")
	f.IntVar(&o.burst, "burst", 5000, "tasks per burst")
	f.IntVar(&o.burstBatch, "burst-batch", 100, "tasks per enqueue request of a burst")
	f.DurationVar(&o.burstHold, "burst-hold", 5*time.Second, "how long a burst waits without a consumer (from its first enqueue)")
	f.IntVar(&o.rounds, "rounds", 3, "bursts, each on another node (a1, b2, a3, ...)")
	f.DurationVar(&o.poll, "poll", time.Millisecond, "how often the workers' views are polled for a burst")
	f.DurationVar(&o.settle, "settle", 5*time.Second, "how long after a drain the views may take to drop the burst")
	f.DurationVar(&o.setupTimeout, "setup-timeout", time.Minute, "bound on forming the mesh, the workers hearing every node they subscribe to, and a drain")
	f.DurationVar(&o.timeout, "timeout", 5*time.Minute, "bound on the whole run")
	f.StringVar(&o.dir, "dir", "", "root of the temporary data directory (default: the system temp dir)")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	f.BoolVar(&o.verbose, "verbose", false, "log the nodes' and the mesh's info messages to stderr (default: warnings)")
	return cmd
}

func (o *broadcastOptions) validate() error {
	var errs []error
	if o.idcs < 1 || o.idcs > 4 || o.nodesPerIDC < 1 || o.nodesPerIDC > 8 {
		errs = append(errs, fmt.Errorf("--idcs %d, --nodes %d: want 1..4 IDCs of 1..8 nodes", o.idcs, o.nodesPerIDC))
	}
	if len(o.filters) == 0 {
		errs = append(errs, errors.New("--filters: none given"))
	}
	if o.steady < 100*time.Millisecond || o.warmup < 0 || o.burstHold < 0 {
		errs = append(errs, errors.New("--steady must be at least 100ms, --warmup and --burst-hold not negative"))
	}
	if o.rate <= 0 || o.rate > 10_000 {
		errs = append(errs, fmt.Errorf("--rate %g: want 0 < rate <= 10000 tasks/s", o.rate))
	}
	if o.burst < 1 || o.burst > 1_000_000 || o.burstBatch < 1 || o.burstBatch > 10_000 {
		errs = append(errs, errors.New("--burst: 1..1000000 tasks, --burst-batch: 1..10000"))
	}
	if o.rounds < 0 || o.rounds > 20 {
		errs = append(errs, fmt.Errorf("--rounds %d: want 0..20", o.rounds))
	}
	if o.poll < 100*time.Microsecond || o.poll > time.Second {
		errs = append(errs, fmt.Errorf("--poll %s: want 100us..1s", o.poll))
	}
	if o.settle < 0 || o.setupTimeout < time.Second || o.timeout < time.Second {
		errs = append(errs, errors.New("--settle not negative; --setup-timeout and --timeout at least 1s"))
	}
	return errors.Join(errs...)
}

// runReport runs a benchmark until it ends or SIGINT/SIGTERM arrives, and
// prints its report, also after a failure (what was measured until then),
// to the command's stdout.
func runReport[R any](cmd *cobra.Command, run func(context.Context) (*R, error), write func(io.Writer, *R) error) error {
	cmd.SilenceUsage = true
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := run(ctx)
	if r != nil {
		err = errors.Join(err, write(cmd.OutOrStdout(), r))
	}
	return err
}

// bcFilter is one filter config.
type bcFilter struct {
	name    string
	filters backlog.Filters
}

func loadBroadcastFilters(o *broadcastOptions) ([]bcFilter, error) {
	var out []bcFilter
	var errs []error
	for _, name := range o.filters {
		f, err := backlog.LoadFilters(filepath.Join(o.filtersDir, name))
		if err != nil {
			errs = append(errs, fmt.Errorf("%w (set --filters-dir to the directory of the filter configs)", err))
			continue
		}
		out = append(out, bcFilter{name: strings.TrimSuffix(name, filepath.Ext(name)), filters: f})
	}
	return out, errors.Join(errs...)
}

func newBroadcastReport(o *broadcastOptions) *BroadcastReport {
	r := &BroadcastReport{
		Schema: BroadcastSchema,
		Config: BroadcastConfig{
			IDCs: o.idcs, NodesPerIDC: o.nodesPerIDC, WorkersPerFilter: o.idcs * o.nodesPerIDC,
			SteadyS: o.steady.Seconds(), WarmupS: o.warmup.Seconds(), RatePerNode: o.rate,
			Burst: o.burst, BurstBatch: o.burstBatch, BurstHoldS: o.burstHold.Seconds(), Rounds: o.rounds,
			PollMs: float64(o.poll) / float64(time.Millisecond),
			CPUs:   runtime.NumCPU(), GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
		},
		Filters: []FilterNotices{}, Latency: []TierLatency{}, Bursts: []BurstRound{},
		Notes: []string{
			"one process: every node, worker, producer and consumer shares this machine's CPUs; NATS between nodes over loopback TCP, workers on in-process connections to their own node",
			"all filter configs run at once, under the same traffic; a worker's count does not depend on the other workers (NATS forwards over a route or gateway where anyone subscribes, but delivers to each subscription only what it matches)",
			"notices include the publishers' heartbeats: one node heartbeat per heartbeat period on the tiers that send them (by default the local tier only), plus a refresh of every queue in the backlog state per period",
			fmt.Sprintf("heartbeat periods: local %s, idc %s, global %s: a window shorter than a period counts the whole heartbeats that fell in it, so a short --steady gives the farther tiers coarse figures",
				backlog.DefaultPolicies[backlog.TierHost].Heartbeat, backlog.DefaultPolicies[backlog.TierIDC].Heartbeat, backlog.DefaultPolicies[backlog.TierGlobal].Heartbeat),
			"latency: from the acknowledgement of the enqueue that took the burst queue across the tier's threshold (publisher High) to the first poll that found the queue in the worker's view; includes the publisher's 20 ms observation period and the poll period",
		},
	}
	for _, t := range backlog.Tiers {
		p := backlog.DefaultPolicies[t]
		r.Config.Policies = append(r.Config.Policies, TierPolicyJSON{Tier: t.String(), High: p.High, Low: p.Low,
			AgeS: p.Age.Seconds(), MinIntervalS: p.MinInterval.Seconds(), HeartbeatS: p.Heartbeat.Seconds()})
	}
	return r
}

// runBroadcast runs the benchmark and returns the report (also after a
// failure, with what was measured) and an error naming what failed.
func runBroadcast(ctx context.Context, o *broadcastOptions) (*BroadcastReport, error) {
	filters, err := loadBroadcastFilters(o)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, o.timeout, fmt.Errorf("--timeout %s reached", o.timeout))
	defer cancel()
	r := newBroadcastReport(o)
	err = broadcast(ctx, o, filters, r)
	if err == nil && ctx.Err() != nil {
		err = context.Cause(ctx)
	}
	for _, b := range r.Bursts {
		if b.Missed > 0 || b.Unexpected > 0 {
			err = errors.Join(err, fmt.Errorf("burst %d on %s: %d workers missed it, %d saw it against their filter", b.Round, b.Node, b.Missed, b.Unexpected))
		}
	}
	if err != nil {
		r.Error = err.Error()
	}
	r.OK = err == nil
	return r, err
}

// progress prints a progress line on stderr.
func (o *broadcastOptions) progress(format string, args ...any) {
	fmt.Fprintf(o.stderr, "bench: backlog: "+format+"\n", args...)
}

// logger logs the nodes' and the mesh's warnings (with --verbose: info)
// to stderr until quiet is called.
func (o *broadcastOptions) logger() (log *slog.Logger, quiet func()) {
	level := &slog.LevelVar{}
	level.Set(slog.LevelWarn)
	if o.verbose {
		level.Set(slog.LevelInfo)
	}
	log = slog.New(slog.NewTextHandler(&lockedWriter{w: o.stderr}, &slog.HandlerOptions{Level: level}))
	return log, func() {
		if !o.verbose {
			level.Set(slog.LevelError + 4)
		}
	}
}

func broadcast(ctx context.Context, o *broadcastOptions, filters []bcFilter, r *BroadcastReport) (err error) {
	root, err := os.MkdirTemp(o.dir, "mqmesh-bench-backlog-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	log, quiet := o.logger()
	o.progress("starting %d IDCs x %d nodes", o.idcs, o.nodesPerIDC)
	t0 := time.Now()
	c, err := startCluster(ctx, o, root, log)
	if err != nil {
		return err
	}
	defer func() {
		// Nodes stopping at once complain of each other's closed
		// connections: expected, and not worth showing.
		o.progress("stopping the mesh")
		quiet()
		c.stop()
	}()
	o.progress("mesh formed and every node reaches every node in %s", time.Since(t0).Round(time.Millisecond))

	var workers []*bcWorker
	defer func() {
		for _, w := range workers {
			w.close()
		}
	}()
	for fi, f := range filters {
		for _, n := range c.nodes {
			w, err := startWorker(fi, f.filters, n, log)
			if err != nil {
				return fmt.Errorf("worker on %s with %s: %w", n.name, f.name, err)
			}
			workers = append(workers, w)
		}
	}
	t0 = time.Now()
	if err := waitUntil(ctx, o.setupTimeout, "every worker to hear every node its filter covers (a heartbeat)", func() (bool, error) {
		for _, w := range workers {
			for _, n := range c.nodes {
				if _, ok := w.hears(n, backlog.HeartbeatQueue, 0); ok && w.view.NodeHeard(n.idc, n.name).IsZero() {
					return false, nil
				}
			}
		}
		return true, nil
	}); err != nil {
		return err
	}
	o.progress("%d workers (%d filter configs x %d nodes) hear every node they subscribe to, after %s",
		len(workers), len(filters), len(c.nodes), time.Since(t0).Round(time.Millisecond))

	l := startLoad(ctx, c, o.rate)
	defer func() { err = errors.Join(err, l.stop()) }()
	o.progress("steady load: %g tasks/s per node; warm-up %s, then %s measured", o.rate, o.warmup, o.steady)
	if err := sleepCtx(ctx, o.warmup); err != nil {
		return err
	}
	before := snapshot(workers)
	t0 = time.Now()
	if err := sleepCtx(ctx, o.steady); err != nil {
		return err
	}
	steadyDelta, steadyS := diff(snapshot(workers), before), time.Since(t0).Seconds()
	if hb := backlog.DefaultPolicies[backlog.TierGlobal].Heartbeat; o.steady < 2*hb {
		r.Notes = append(r.Notes, fmt.Sprintf("--steady %s is shorter than 2 global heartbeat periods (%s); the publishers started together, so their heartbeats are in phase and the steady window may hold none of a far tier's: compare with the heartbeat floor, or run --steady %s", o.steady, 2*hb, 2*hb))
	}
	if err := l.failed(); err != nil {
		return err
	}
	var eventDelta []counts
	var eventS float64
	var extra []float64 // per worker: notices beyond the steady rate, summed over rounds
	samples := map[latencyKey]*TierLatency{}
	defer func() {
		r.Filters = filterNotices(filters, workers, c.nodes, steadyDelta, steadyS, eventDelta, eventS, extra, len(r.Bursts))
		r.Latency = latencies(filters, samples)
	}()
	for round := range o.rounds {
		n := c.nodes[(round%o.idcs)*o.nodesPerIDC+round%o.nodesPerIDC]
		b, delta, err := runBurst(ctx, o, n, workers, round, samples, filters)
		if delta != nil {
			r.Bursts = append(r.Bursts, b)
			eventDelta = addCounts(eventDelta, delta)
			eventS += b.EventS
			if extra == nil {
				extra = make([]float64, len(workers))
			}
			for i := range workers {
				extra[i] += float64(received(delta[i])) - float64(received(steadyDelta[i]))/steadyS*b.EventS
			}
		}
		if err != nil {
			return err
		}
		if err := l.failed(); err != nil {
			return err
		}
	}
	return nil
}

// latencyKey groups latency samples: a tier and a filter config.
type latencyKey struct {
	tier   backlog.Tier
	filter int
}

// where names the place of a worker hearing a burst through tier t.
func where(t backlog.Tier) string {
	return [backlog.NumTiers]string{"same host", "other host, same IDC", "other IDC"}[t]
}

// runBurst runs one backlog event on node n and returns its figures and
// the workers' notice counts over the event window (nil if it did not
// get that far).
func runBurst(ctx context.Context, o *broadcastOptions, n *bcNode, workers []*bcWorker, round int,
	samples map[latencyKey]*TierLatency, filters []bcFilter) (BurstRound, []counts, error) {
	queue := fmt.Sprintf("burst-%d", round)
	b := BurstRound{Round: round, IDC: n.idc, Node: n.name, Queue: queue, Tasks: o.burst, ClearedMs: -1}
	o.progress("burst %d: %d tasks on %s/%s queue %s, held %s", round, o.burst, n.idc, n.name, queue, o.burstHold)
	p := startPoller(o.poll, workers, n, queue)
	defer p.stop()
	before := snapshot(workers)
	start := time.Now()
	var acks []ackMark
	for sent := 0; sent < o.burst; {
		k := min(o.burstBatch, o.burst-sent)
		items := make([]*mqnode.EnqueueItem, k)
		for i := range items {
			items[i] = &mqnode.EnqueueItem{Payload: []byte("burst")}
		}
		if _, err := n.client.Enqueue(ctx, queue, items...); err != nil {
			return b, nil, fmt.Errorf("burst %d: enqueue: %w", round, err)
		}
		sent += k
		acks = append(acks, ackMark{at: time.Now(), total: uint64(sent)})
	}
	b.EnqueueMs = ms(time.Since(start))
	crossing := func(threshold uint64) time.Time {
		for _, a := range acks {
			if a.total >= threshold {
				return a.at
			}
		}
		return time.Time{}
	}
	var cross [backlog.NumTiers]float64
	for _, t := range backlog.Tiers {
		if at := crossing(backlog.DefaultPolicies[t].High); !at.IsZero() {
			cross[t] = ms(at.Sub(start))
		} else {
			cross[t] = -1 // the burst is below the threshold
		}
	}
	b.CrossedMs = TierFigures{Local: cross[backlog.TierHost], IDC: cross[backlog.TierIDC], Global: cross[backlog.TierGlobal]}
	if err := sleepCtx(ctx, time.Until(start.Add(o.burstHold))); err != nil {
		return b, nil, err
	}
	t0 := time.Now()
	drained := 0
	if err := waitUntil(ctx, o.setupTimeout, "the burst to drain", func() (bool, error) {
		got, err := pullAck(ctx, n, queue, 1000, 0)
		drained += got
		return drained >= o.burst, err
	}); err != nil {
		return b, nil, fmt.Errorf("burst %d: drain (%d of %d): %w", round, drained, o.burst, err)
	}
	b.DrainMs = ms(time.Since(t0))
	cleared := waitUntil(ctx, o.settle, "the views to drop the burst", func() (bool, error) { return p.cleared(), nil })
	if ctx.Err() != nil {
		return b, nil, context.Cause(ctx)
	}
	end := time.Now()
	delta := diff(snapshot(workers), before)
	b.EventS = end.Sub(start).Seconds()
	p.stop()
	if cleared == nil {
		b.ClearedMs = ms(p.lastGone().Sub(t0))
	}
	for i, w := range workers {
		st := p.state[i]
		if !st.first.IsZero() && st.seeing {
			b.NotCleared++
		}
		t, ok := w.hears(n, queue, uint64(o.burst))
		switch {
		case !ok && !st.first.IsZero():
			b.Unexpected++
		case !ok:
		case st.first.IsZero():
			b.Missed++
			latencyOf(samples, filters, t, w.filter).Missed++
		default:
			at := crossing(max(backlog.DefaultPolicies[t].High, w.minBacklog[t]))
			l := latencyOf(samples, filters, t, w.filter)
			l.AllMs = append(l.AllMs, ms(st.first.Sub(at)))
		}
	}
	o.progress("burst %d: enqueued in %.0f ms, drained in %.0f ms, event %.2f s; views cleared %.0f ms after the drain began (%d not); %d missed, %d unexpected",
		round, b.EnqueueMs, b.DrainMs, b.EventS, b.ClearedMs, b.NotCleared, b.Missed, b.Unexpected)
	return b, delta, nil
}

func latencyOf(samples map[latencyKey]*TierLatency, filters []bcFilter, t backlog.Tier, fi int) *TierLatency {
	k := latencyKey{t, fi}
	if samples[k] == nil {
		samples[k] = &TierLatency{Tier: t.String(), Where: where(t), Filter: filters[fi].name, AllMs: []float64{}}
	}
	return samples[k]
}

// ackMark is an acknowledged enqueue of a burst: when, and the tasks
// enqueued so far.
type ackMark struct {
	at    time.Time
	total uint64
}

// poller watches, every period, whether each worker's view has a queue of
// a node, and records when it first did and when it last stopped.
type poller struct {
	done  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
	mu    sync.Mutex
	state []pollState
}

type pollState struct {
	first, gone time.Time
	seeing      bool
}

func startPoller(period time.Duration, workers []*bcWorker, n *bcNode, queue string) *poller {
	p := &poller{done: make(chan struct{}), state: make([]pollState, len(workers))}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			for i, w := range workers {
				sees := w.sees(n, queue)
				now := time.Now()
				p.mu.Lock()
				st := &p.state[i]
				switch {
				case sees && st.first.IsZero():
					st.first, st.seeing = now, true
				case sees:
					st.seeing = true
				case st.seeing:
					st.seeing, st.gone = false, now
				}
				p.mu.Unlock()
			}
			select {
			case <-p.done:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// cleared reports whether no view that had the queue has it any more.
func (p *poller) cleared() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, st := range p.state {
		if st.seeing {
			return false
		}
	}
	return true
}

// lastGone is when the last view dropped the queue.
func (p *poller) lastGone() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for _, st := range p.state {
		if st.gone.After(last) {
			last = st.gone
		}
	}
	return last
}

func (p *poller) stop() {
	p.once.Do(func() {
		close(p.done)
		p.wg.Wait()
	})
}

func snapshot(workers []*bcWorker) []counts {
	out := make([]counts, len(workers))
	for i, w := range workers {
		out[i] = w.counts()
	}
	return out
}

// diff is after - before, per worker.
func diff(after, before []counts) []counts {
	out := make([]counts, len(after))
	for i := range after {
		for t := range backlog.NumTiers {
			out[i].accepted[t] = after[i].accepted[t] - before[i].accepted[t]
			out[i].dropped[t] = after[i].dropped[t] - before[i].dropped[t]
		}
	}
	return out
}

// addCounts is sum + delta, per worker (sum may be nil).
func addCounts(sum, delta []counts) []counts {
	if sum == nil {
		sum = make([]counts, len(delta))
	}
	for i := range delta {
		for t := range backlog.NumTiers {
			sum[i].accepted[t] += delta[i].accepted[t]
			sum[i].dropped[t] += delta[i].dropped[t]
		}
	}
	return sum
}

// received is accepted + dropped over every tier.
func received(c counts) uint64 {
	var n uint64
	for t := range backlog.NumTiers {
		n += c.accepted[t] + c.dropped[t]
	}
	return n
}

// filterNotices computes the per filter config figures.
func filterNotices(filters []bcFilter, workers []*bcWorker, nodes []*bcNode, steady []counts, steadyS float64,
	event []counts, eventS float64, extra []float64, rounds int) []FilterNotices {
	out := make([]FilterNotices, 0, len(filters))
	for fi, f := range filters {
		fn := FilterNotices{Filter: f.name, Tiers: []string{}}
		for _, t := range backlog.Tiers {
			if _, ok := f.filters.Tiers[t.String()]; ok {
				fn.Tiers = append(fn.Tiers, t.String())
			}
		}
		var mine []int
		for i, w := range workers {
			if w.filter == fi {
				mine = append(mine, i)
			}
		}
		fn.Workers = len(mine)
		fn.HeartbeatFloorPerWorkerPerS = heartbeatFloor(workers, mine, nodes)
		if steady != nil {
			fn.Steady = rates(steady, mine, steadyS)
		}
		if event != nil {
			fn.Event = rates(event, mine, eventS)
		}
		if extra != nil && rounds > 0 && len(mine) > 0 {
			var sum float64
			for _, i := range mine {
				sum += extra[i]
			}
			fn.ExtraPerWorkerPerEvent = sum / float64(len(mine)) / float64(rounds)
		}
		out = append(out, fn)
	}
	return out
}

// heartbeatFloor is the node heartbeats per second a worker of idx hears
// (mean): per node and subscribed tier matching it, one per the tier's
// heartbeat period. A worker hears at least this much when nothing waits.
func heartbeatFloor(workers []*bcWorker, idx []int, nodes []*bcNode) float64 {
	if len(idx) == 0 {
		return 0
	}
	var sum float64
	for _, i := range idx {
		for _, n := range nodes {
			for _, t := range backlog.Tiers {
				if p := workers[i].patterns[t]; p != nil && backlog.DefaultPolicies[t].NodeHeartbeat && p.Matches(backlog.Subject(t, n.idc, n.name, backlog.HeartbeatQueue)) {
					sum += 1 / backlog.DefaultPolicies[t].Heartbeat.Seconds()
				}
			}
		}
	}
	return sum / float64(len(idx))
}

// rates are the notice rates of workers idx over seconds.
func rates(delta []counts, idx []int, seconds float64) Notices {
	r := Notices{Seconds: seconds}
	if len(idx) == 0 || seconds <= 0 {
		return r
	}
	per := func(v uint64) float64 { return float64(v) / seconds / float64(len(idx)) }
	var tiers [backlog.NumTiers]float64
	for _, i := range idx {
		d := delta[i]
		r.MaxWorkerPerS = max(r.MaxWorkerPerS, float64(received(d))/seconds)
		for t := range backlog.NumTiers {
			tiers[t] += per(d.accepted[t] + d.dropped[t])
			r.AcceptedPerWorkerPerS += per(d.accepted[t])
			r.DroppedPerWorkerPerS += per(d.dropped[t])
		}
	}
	r.ByTier = TierFigures{Local: tiers[backlog.TierHost], IDC: tiers[backlog.TierIDC], Global: tiers[backlog.TierGlobal]}
	r.PerWorkerPerS = r.AcceptedPerWorkerPerS + r.DroppedPerWorkerPerS
	return r
}

// latencies orders the samples by tier, then filter config.
func latencies(filters []bcFilter, samples map[latencyKey]*TierLatency) []TierLatency {
	out := []TierLatency{}
	for _, t := range backlog.Tiers {
		for fi := range filters {
			if l := samples[latencyKey{t, fi}]; l != nil {
				l.summarize()
				out = append(out, *l)
			}
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
