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
//
// This file holds its flags, the command, and the setup and outcome of a
// run; broadcast_run.go measures, broadcast_figures.go turns counts into
// figures.

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
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/backlog"
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
			o.stdout, o.stderr = cmd.OutOrStdout(), &lockedWriter{w: cmd.ErrOrStderr()} // progress and logs from several goroutines
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
	log = slog.New(slog.NewTextHandler(o.stderr, &slog.HandlerOptions{Level: level}))
	return log, func() {
		if !o.verbose {
			level.Set(slog.LevelError + 4)
		}
	}
}
