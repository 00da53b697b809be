package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/internal/secrets"
)

// NewCommand returns the `bench` command tree: `bench node`, `bench
// backlog`, `bench cpu` and the hidden `bench serve` the child processes
// of node and cpu run.
func NewCommand() *cobra.Command { return newCommand(nil) }

// newCommand builds the tree; a nil launch re-executes the running binary.
func newCommand(launch Launcher) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Run benchmarks against a peer in the same run"}
	cmd.AddCommand(newNodeCommand(launch), newServeCommand())
	cmd.AddCommand(newBroadcastCommand(), newCPUCommand(launch), newLatencyCommand(launch), newCompareCommand(), newRemoteCommand(launch), newLockCommand(launch))
	return cmd
}

// nodeOptions are the flags of `bench node`.
type nodeOptions struct {
	count, size, batch   int
	producers, consumers int
	pairs                []string
	json                 bool
	dir                  string
	backlogSteps         []int
	backlogDurability    string
	backlogPeers         []string
	backlogDrain         int
	backlogPageOut       time.Duration
	lease, stall         time.Duration
	profileDir           string
	noTrace              bool
	peers                []string // peers besides mqnode: jetstream, river
	tune                 bool
	tuneCount            int
	tuneCountFsync       int
	tuneCountRepl        int
	replRounds           int
	secure               bool
	runner
}

func newNodeCommand(launch Launcher) *cobra.Command {
	o := &nodeOptions{runner: runner{launch: launch}}
	cmd := reportCommand(&cobra.Command{
		Use:   "node",
		Short: "Compare mqnode with NATS JetStream and River, each at its best, on the same workload",
		Long: "Runs an mqnode, a NATS JetStream work-queue stream and River on PostgreSQL, each in its own child\n" +
			"process, through the same enqueue and drain workload over loopback TCP, each driven the best way\n" +
			"its grid of client styles found (--tune), and reports throughput, end-to-end time, RSS and the\n" +
			"ratios against each peer's best. See the package documentation of internal/bench.",
	}, &o.runner, &o.json, o.validate, func(ctx context.Context) (*Report, error) { return runNode(ctx, o) }, writeTable)
	f := cmd.Flags()
	f.IntVar(&o.count, "count", 200_000, "tasks per run")
	f.IntVar(&o.size, "size", 256, "payload bytes per task (at least 8: the task index)")
	f.IntVar(&o.batch, "batch", 100, "tasks per enqueue request and per pull")
	f.IntVar(&o.producers, "producers", 8, "concurrent producer goroutines")
	f.IntVar(&o.consumers, "consumers", 4, "concurrent consumer goroutines")
	f.StringSliceVar(&o.pairs, "pairs", []string{durAsync, durFsync}, "pairings to run: async (mqnode async vs JetStream default), fsync (mqnode group commit vs JetStream SyncAlways), repl (mqnode with a buddy, replicas 1 sync, vs a 3-server JetStream R3 stream, and the unreplicated mqnode at fsync), or none")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	f.StringVar(&o.dir, "dir", "", "root of the temporary data directories (default: the system temp dir)")
	f.IntSliceVar(&o.backlogSteps, "backlog-steps", nil, "also grow an mqnode backlog to each of these sizes without draining, recording RSS per step (e.g. 200000,1000000,2000000)")
	f.StringVar(&o.backlogDurability, "backlog-durability", durAsync, "durability of the backlog runs: async or fsync (JetStream: default or SyncAlways)")
	f.IntVar(&o.backlogDrain, "backlog-drain", 200_000, "with --backlog-steps, mqnode: time draining this many tasks (at most the first step) from an empty node first and from the head of the full backlog at the end (0: no drains)")
	f.DurationVar(&o.backlogPageOut, "backlog-pageout", 2*time.Second, "mqnode's pageout_interval in the backlog runs (the node's default is off; negative: off)")
	f.StringSliceVar(&o.backlogPeers, "backlog-peers", []string{peerMQNode}, "peers to grow a backlog on: mqnode, jetstream")
	f.DurationVar(&o.lease, "lease", 30*time.Second, "lease (mqnode) and ack wait (JetStream) of pulled tasks")
	f.StringVar(&o.profileDir, "profile-dir", "", "write CPU and heap profiles of each server process to this directory (<peer>-<durability>.cpu.pprof, .heap.pprof)")
	f.BoolVar(&o.noTrace, "mqnode-no-trace", false, "run mqnode without its task trace (a node's default keeps one: about 3 Badger keys per task), to measure what the trace costs")
	f.BoolVar(&o.secure, "secure", true, "also run mqnode with TLS and role authentication (mqnode+tls) in every pairing, beside the plain one: the cost of security")
	f.DurationVar(&o.stall, "stall-timeout", 2*time.Minute, "fail a phase that makes no progress for this long")
	f.StringSliceVar(&o.peers, "peers", []string{peerJetStream, peerRiver}, "peers to compare mqnode with: jetstream, river (River on PostgreSQL; skipped with a message when PostgreSQL cannot be installed)")
	f.BoolVar(&o.tune, "tune", true, "first run each peer's grid of drives (--tune-count tasks each) and compare the peers at their best; --tune=false runs the drive of --producers, --batch and --consumers")
	f.IntVar(&o.tuneCount, "tune-count", 50_000, "tasks per run of a tuning grid (async pairing)")
	f.IntVar(&o.tuneCountFsync, "tune-count-fsync", 5_000, "tasks per run of a tuning grid in the fsync pairing (JetStream SyncAlways does about 4,000/s)")
	f.IntVar(&o.tuneCountRepl, "tune-count-repl", 20_000, "tasks per run of a tuning grid in the repl pairing")
	f.IntVar(&o.replRounds, "repl-rounds", 3, "the repl pairing's runs take turns this many times; each figure is the median round's")
	return cmd
}

func (o *nodeOptions) validate() error {
	var errs []error
	if o.count < 1 || o.batch < 1 || o.producers < 1 || o.consumers < 1 || o.tuneCount < 1 || o.tuneCountFsync < 1 {
		errs = append(errs, errors.New("--count, --tune-count, --tune-count-fsync, --batch, --producers and --consumers must be at least 1"))
	}
	if slices.Contains(o.pairs, durRepl) && (o.tuneCountRepl < 1 || o.replRounds < 1) {
		errs = append(errs, errors.New("--tune-count-repl and --repl-rounds must be at least 1"))
	}
	for _, p := range o.peers {
		if p != peerJetStream && p != peerRiver {
			errs = append(errs, fmt.Errorf("--peers %q: want jetstream or river", p))
		}
	}
	o.peers = slices.Compact(o.peers)
	if o.size < 8 {
		errs = append(errs, fmt.Errorf("--size %d: at least 8 bytes (the task index)", o.size))
	}
	if o.batch > 1000 {
		errs = append(errs, fmt.Errorf("--batch %d: at most 1000 (mqnode's default max pull batch)", o.batch))
	}
	if o.lease < time.Second || o.stall < time.Second {
		errs = append(errs, errors.New("--lease and --stall-timeout must be at least 1s"))
	}
	if slices.Equal(o.pairs, []string{"none"}) {
		o.pairs = nil
	}
	for _, p := range o.pairs {
		if p != durAsync && p != durFsync && p != durRepl {
			errs = append(errs, fmt.Errorf("--pairs %q: want async, fsync, repl or none", p))
		}
	}
	o.pairs = slices.Compact(o.pairs)
	prev := 0
	for _, s := range o.backlogSteps {
		if s <= prev {
			errs = append(errs, fmt.Errorf("--backlog-steps %v: must be increasing positive sizes", o.backlogSteps))
			break
		}
		prev = s
	}
	if o.backlogDurability != durAsync && o.backlogDurability != durFsync {
		errs = append(errs, fmt.Errorf("--backlog-durability %q: want async or fsync", o.backlogDurability))
	}
	for _, p := range o.backlogPeers {
		if p != peerMQNode && p != peerJetStream {
			errs = append(errs, fmt.Errorf("--backlog-peers %q: want mqnode or jetstream", p))
		}
	}
	o.backlogPeers = slices.Compact(o.backlogPeers)
	if len(o.pairs) == 0 && (len(o.backlogSteps) == 0 || len(o.backlogPeers) == 0) {
		errs = append(errs, errors.New("nothing to run: --pairs none and no --backlog-steps"))
	}
	return errors.Join(errs...)
}

// runNode runs every pairing, then the backlog steps, and returns the
// report (also when a run failed) and an error naming what failed.
func runNode(ctx context.Context, o *nodeOptions) (*Report, error) {
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return nil, fmt.Errorf("--profile-dir: %w", err)
		}
	}
	root, err := os.MkdirTemp(o.dir, "mqmesh-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(root)
	w := newWorkload(o, progressWriter(o.stderr))
	r := &Report{
		Schema: ReportSchema,
		Config: Config{
			Tune: o.tune, TuneCount: o.tuneCount, TuneCountFsync: o.tuneCountFsync, TuneCountRepl: o.tuneCountRepl, ReplRounds: o.replRounds,
			Count: o.count, Size: o.size, Batch: o.batch, Producers: o.producers, Consumers: o.consumers,
			LeaseS: o.lease.Seconds(), CPUs: runtime.NumCPU(), GoVersion: runtime.Version(),
			Platform: runtime.GOOS + "/" + runtime.GOARCH,
		},
		Pairs: []Pair{},
		Notes: notes(),
	}
	if o.secure && len(o.pairs) > 0 {
		dir := filepath.Join(root, "secrets")
		if err := secrets.Init(dir, false); err != nil {
			return nil, err
		}
		if w.sec, err = secrets.Load(dir); err != nil {
			return nil, err
		}
		r.Notes = append(r.Notes, "mqnode+tls: the same mqnode with secrets (mqmesh secrets init): TLS 1.3 on the client connections and nkey role users (producer connection as admin, for stats; consumers as worker); secure cost = mqnode+tls / mqnode")
	}
	if o.noTrace {
		r.Notes = append(r.Notes, "--mqnode-no-trace: mqnode ran without its task trace (trace.disabled; a node keeps one by default)")
	}
	if slices.Contains(o.pairs, durRepl) {
		r.Notes = append(r.Notes, replNotes...)
	}
	var errs []error
	peers := append([]string{peerMQNode}, o.peers...)
	skipped := map[string]string{}
	if slices.Contains(peers, peerRiver) && len(o.pairs) > 0 {
		if err := ensurePostgres(w.log); err != nil {
			skipped[peerRiver] = err.Error()
			fmt.Fprintf(w.log, "bench: river: skipped: %v\n", err)
			r.Notes = append(r.Notes, "river skipped: "+err.Error())
		}
	}
	for _, pair := range o.pairs {
		if ctx.Err() != nil {
			errs = append(errs, context.Cause(ctx))
			break
		}
		if pair == durRepl {
			p, grid, err := runReplPair(ctx, o, w, root)
			r.Grid = append(r.Grid, grid...)
			if err != nil {
				errs = append(errs, err)
			}
			r.Pairs = append(r.Pairs, p)
			continue
		}
		// Each pairing tunes its own drives: what is best at one
		// durability need not be at the other.
		drives := map[string]Drive{}
		for _, pn := range peers {
			drives[pn] = baseline(pn, o)
			if !o.tune || skipped[pn] != "" || ctx.Err() != nil {
				continue
			}
			runs, best, err := tunePeer(ctx, o, w, root, pn, pair)
			r.Grid = append(r.Grid, runs...)
			if err != nil {
				errs = append(errs, fmt.Errorf("tune %s %s: %w", pn, pair, err))
				continue
			}
			drives[pn] = best
		}
		p := Pair{Pair: pair}
		for _, pn := range peers {
			res := Result{Peer: pn, Durability: durabilityName(pn, pair), Drive: drives[pn], Skipped: skipped[pn]}
			if res.Skipped == "" {
				res = runPeer(ctx, o, w.with(drives[pn], ""), root, pn, pair)
				if !res.OK {
					errs = append(errs, fmt.Errorf("%s %s: %s", res.Peer, res.Durability, failure(res)))
				}
			}
			switch pn {
			case peerMQNode:
				p.MQNode = res
				if w.sec != nil {
					// Right after the plain run, so both see the same
					// machine, with the same drive.
					sec := runPeer(ctx, o, w.with(drives[pn], ""), root, peerMQNodeSecure, pair)
					p.MQNodeSecure, p.SecureCost = &sec, newRatio(sec, p.MQNode)
					if !sec.OK {
						errs = append(errs, fmt.Errorf("%s %s: %s", sec.Peer, sec.Durability, failure(sec)))
					}
				}
			case peerJetStream:
				p.JetStream = res
			case peerRiver:
				p.River = &res
			}
		}
		p.Ratio = newRatio(p.MQNode, p.JetStream)
		if p.River != nil {
			p.RatioRiver = newRatio(p.MQNode, *p.River)
		}
		r.Pairs = append(r.Pairs, p)
	}
	for _, peerName := range o.backlogPeers {
		if len(o.backlogSteps) == 0 || ctx.Err() != nil {
			break
		}
		bl := runBacklog(ctx, o, w, root, peerName)
		if bl.Error != "" {
			errs = append(errs, fmt.Errorf("backlog %s: %s", peerName, bl.Error))
		}
		r.Backlogs = append(r.Backlogs, bl)
	}
	if !procAvailable() {
		r.Notes = append(r.Notes, "/proc is not available on this platform: RSS and CPU figures are 0")
	}
	r.OK = len(errs) == 0
	return r, errors.Join(errs...)
}

// durabilityName is how a peer calls durability dur (async or fsync).
func durabilityName(peerName, dur string) string {
	switch peerName {
	case peerJetStream:
		return map[string]string{durAsync: "default", durFsync: "sync_always"}[dur]
	case peerJetStreamR3:
		return map[string]string{durAsync: "default_r3", durFsync: "sync_always_r3"}[dur]
	case peerMQNodeR1:
		return map[string]string{durAsync: "async_r1_sync", durFsync: "fsync_r1_sync"}[dur]
	case peerRiver:
		return map[string]string{durAsync: "synchronous_commit_off", durFsync: "synchronous_commit_on"}[dur]
	}
	return dur
}

func failure(r Result) string {
	if r.Error != "" {
		return r.Error
	}
	return fmt.Sprintf("delivered %d of %d enqueued (%d lost)", r.Delivered, r.Enqueued, r.Lost)
}

func notes() []string {
	return []string{
		"each peer's server runs in its own child process; clients connect over loopback TCP; peers run one after the other",
		"async pairing: mqnode durability async (acked once in Badger's WAL in the OS page cache) vs JetStream file store default (acked once written to the OS, no fsync per message)",
		"fsync pairing: mqnode durability fsync (group commit: concurrent enqueues share one fsync) vs JetStream SyncAlways (an fsync per message)",
		"each peer runs with its drive (listed; see Drive in the JSON): with --tune the best of its grid, tuned per pairing: enqueue styles first (fastest enqueue/s), then with that pulling style and batch with one consumer, then consumers and ack style (fastest drain/s of both drain stages)",
		"enqueue: mqnode batch (a request per batch, waiting for its reply) or async (one task per call into mqnode.Enqueuer, which batches and pipelines); JetStream PublishAsync with a bound on PubAcks outstanding, waiting for every PubAck; River InsertMany / InsertManyFast",
		"drain: no-op consumers; mqnode acks a pulled batch in one Ack request; JetStream Fetch, FetchNoWait or Consume (Messages, PullMaxMessages) from a durable pull consumer, acking each message with msg.Ack() or msg.DoubleAck() (AckAll would settle other consumers' messages); River's own workers (MaxWorkers) with a FetchCooldown",
		"river: River on PostgreSQL (synchronous_commit off for async, on for fsync), PostgreSQL in a child; its RSS and CPU are not measured (0)",
	}
}

// runPeer runs the workload against one peer in its own child process.
func runPeer(ctx context.Context, o *nodeOptions, w *workload, root, peerName, pair string) Result {
	res := Result{Peer: peerName, Durability: durabilityName(peerName, pair), Drive: w.drive}
	label := peerName + " " + res.Durability
	fmt.Fprintf(w.log, "bench: %s: starting server\n", label)
	if err := runWorkload(ctx, o, w, root, peerName, pair, label, &res); err != nil {
		res.Error = err.Error()
		fmt.Fprintf(w.log, "bench: %s: %v\n", label, err)
	}
	res.Lost = res.Enqueued - res.Delivered
	res.OK = res.Error == "" && res.Lost == 0 && res.Enqueued == int64(o.count)
	return res
}

func runWorkload(ctx context.Context, o *nodeOptions, w *workload, root, peerName, pair, label string, res *Result) (err error) {
	dir, err := os.MkdirTemp(root, peerName+"-"+pair+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	so := serveOptions{peer: peerName, durability: pair, dir: dir, noTrace: o.noTrace}
	if peerName == peerMQNodeSecure {
		so.secrets = w.sec.Dir
	}
	if o.profileDir != "" {
		so.cpuProfile = filepath.Join(o.profileDir, peerName+"-"+res.Durability+".cpu.pprof")
		so.memProfile = filepath.Join(o.profileDir, peerName+"-"+res.Durability+".heap.pprof")
	}
	c, err := startChild(ctx, o.launch, so, w.log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.stop()) }()
	p, err := connect(ctx, peerName, c.url, w)
	if err != nil {
		return err
	}
	defer p.close()
	if err := p.prepare(ctx); err != nil {
		return err
	}
	smp := startSampler(c.pid, 100*time.Millisecond)
	defer smp.finish()
	cpu0, _ := readCPU(c.pid)
	afterEnqueue := func() {
		if m, err := readMemory(c.pid); err == nil {
			res.RSSAfterEnqueueMiB = mib(m.rss)
		}
	}
	if err := runPhases(ctx, p, w, o.count, label, res, afterEnqueue); err != nil {
		return err
	}
	if peerName == peerMQNodeR1 {
		if res.Replication, err = replFigures(ctx, p); err != nil {
			return err
		}
	}
	if peerName == peerRiver {
		// The child is only PostgreSQL's parent: its own RSS and CPU say
		// nothing of PostgreSQL's processes, so none are reported.
		return nil
	}
	if cpu1, err := readCPU(c.pid); err == nil {
		res.CPUS = (cpu1 - cpu0).Seconds()
	}
	peak := smp.finish()
	res.SampledPeakRSSMiB, res.PeakAnonMiB, res.PeakFileMiB = mib(peak.rss), mib(peak.anon), mib(peak.file)
	if m, err := readMemory(c.pid); err == nil {
		res.FinalRSSMiB, res.PeakRSSMiB = mib(m.rss), mib(m.hwm)
	}
	fmt.Fprintf(w.log, "bench: %s: drained %d tasks in %.2fs (%.0f tasks/s), peak RSS %.1f MiB\n",
		label, res.Delivered, res.DrainS, res.DrainPerS, res.PeakRSSMiB)
	return nil
}

// runPhases enqueues count tasks on p, checks the peer holds them, drains
// them and waits until the peer holds none, filling res's counts and
// rates.
// afterEnqueue, when set, runs between the phases.
func runPhases(ctx context.Context, p peer, w *workload, count int, label string, res *Result, afterEnqueue func()) error {
	t0 := time.Now()
	err := enqueueAll(ctx, p, w, 0, uint64(count), label)
	res.EnqueueS = time.Since(t0).Seconds()
	if err != nil {
		return err
	}
	res.Enqueued = int64(count)
	res.EnqueuePerS = float64(count) / res.EnqueueS
	fmt.Fprintf(w.log, "bench: %s: enqueued %d tasks in %.2fs (%.0f tasks/s)\n", label, count, res.EnqueueS, res.EnqueuePerS)
	if afterEnqueue != nil {
		afterEnqueue()
	}
	if n, err := p.stored(ctx); err != nil || n != int64(count) {
		return fmt.Errorf("after enqueue the peer holds %d tasks, want %d (err: %v)", n, count, err)
	}

	t := newTracker(uint64(count))
	t2 := time.Now()
	err = drainAll(ctx, p, w, t, label)
	if err == nil {
		err = p.flush()
	}
	if err == nil {
		err = waitFor(ctx, w.stall, func() (bool, error) {
			n, err := p.stored(ctx)
			return n == 0, err
		})
	}
	res.DrainS = time.Since(t2).Seconds()
	res.Delivered, res.Duplicates = t.unique.Load(), t.dups.Load()
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	if n := t.foreign.Load(); n > 0 {
		return fmt.Errorf("drain: %d deliveries carried an unknown task index", n)
	}
	res.DrainPerS = float64(res.Delivered) / res.DrainS
	res.EndToEndS = res.EnqueueS + res.DrainS
	return nil
}

// connect opens the client side of a peer.
func connect(ctx context.Context, peerName, url string, w *workload) (peer, error) {
	switch peerName {
	case peerMQNode, peerMQNodeR1:
		return dialMQNode(ctx, url, w, nil, nil)
	case peerMQNodeSecure:
		prod, err := w.sec.ClientOptions(secrets.RoleAdmin)
		if err != nil {
			return nil, err
		}
		cons, err := w.sec.ClientOptions(secrets.RoleWorker)
		if err != nil {
			return nil, err
		}
		return dialMQNode(ctx, url, w, prod, cons)
	case peerRiver:
		return dialRiver(ctx, url, w)
	}
	return dialJetStream(url, w, replicas(peerName))
}

// runner is what a bench command that starts child processes keeps of its
// cobra command: how to start them, and where the report and the progress
// go.
type runner struct {
	launch         Launcher
	stdout, stderr io.Writer
}

// reportCommand completes cmd as such a bench command: no arguments; it
// attaches r, validates the flags, runs, and prints the report (as JSON
// when *asJSON, else with table).
func reportCommand[R any](cmd *cobra.Command, r *runner, asJSON *bool, validate func() error,
	run func(context.Context) (*R, error), table func(io.Writer, *R) error) *cobra.Command {
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cc *cobra.Command, _ []string) error {
		r.launch = launcherFor(r.launch, cc)
		r.stdout, r.stderr = cc.OutOrStdout(), cc.ErrOrStderr()
		if err := validate(); err != nil {
			return err
		}
		return runReport(cc, run, output(*asJSON, table))
	}
	return cmd
}

// progressWriter returns w ready to take progress lines from this process
// and the children's stderr at once: os/exec copies a child's stderr into a
// writer that is not an *os.File from a goroutine of its own.
func progressWriter(w io.Writer) io.Writer {
	if _, ok := w.(*os.File); ok {
		return w
	}
	return &lockedWriter{w: w}
}

// lockedWriter serialises writes to w. It has no ReadFrom, so io.Copy into
// it goes through Write too.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
