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
	cmd.AddCommand(newBroadcastCommand(), newCPUCommand(launch))
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
	lease, stall         time.Duration
	profileDir           string
	secure               bool
	runner
}

func newNodeCommand(launch Launcher) *cobra.Command {
	o := &nodeOptions{runner: runner{launch: launch}}
	cmd := reportCommand(&cobra.Command{
		Use:   "node",
		Short: "Compare mqnode with an embedded NATS JetStream work queue on the same workload",
		Long: "Runs an mqnode and a NATS JetStream work-queue stream, each in its own child process, through\n" +
			"the same enqueue and drain workload over loopback TCP, and reports throughput, end-to-end time,\n" +
			"RSS and the mqnode/JetStream ratios. See the package documentation of internal/bench.",
	}, &o.runner, &o.json, o.validate, func(ctx context.Context) (*Report, error) { return runNode(ctx, o) }, writeTable)
	f := cmd.Flags()
	f.IntVar(&o.count, "count", 200_000, "tasks per run")
	f.IntVar(&o.size, "size", 256, "payload bytes per task (at least 8: the task index)")
	f.IntVar(&o.batch, "batch", 100, "tasks per enqueue request and per pull")
	f.IntVar(&o.producers, "producers", 8, "concurrent producer goroutines")
	f.IntVar(&o.consumers, "consumers", 4, "concurrent consumer goroutines")
	f.StringSliceVar(&o.pairs, "pairs", []string{durAsync, durFsync}, "pairings to run: async (mqnode async vs JetStream default), fsync (mqnode group commit vs JetStream SyncAlways), or none")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	f.StringVar(&o.dir, "dir", "", "root of the temporary data directories (default: the system temp dir)")
	f.IntSliceVar(&o.backlogSteps, "backlog-steps", nil, "also grow an mqnode backlog to each of these sizes without draining, recording RSS per step (e.g. 200000,1000000,2000000)")
	f.StringVar(&o.backlogDurability, "backlog-durability", durAsync, "durability of the backlog runs: async or fsync (JetStream: default or SyncAlways)")
	f.StringSliceVar(&o.backlogPeers, "backlog-peers", []string{peerMQNode}, "peers to grow a backlog on: mqnode, jetstream")
	f.DurationVar(&o.lease, "lease", 30*time.Second, "lease (mqnode) and ack wait (JetStream) of pulled tasks")
	f.StringVar(&o.profileDir, "profile-dir", "", "write CPU and heap profiles of each server process to this directory (<peer>-<durability>.cpu.pprof, .heap.pprof)")
	f.BoolVar(&o.secure, "secure", true, "also run mqnode with TLS and role authentication (mqnode+tls) in every pairing, beside the plain one: the cost of security")
	f.DurationVar(&o.stall, "stall-timeout", 2*time.Minute, "fail a phase that makes no progress for this long")
	return cmd
}

func (o *nodeOptions) validate() error {
	var errs []error
	if o.count < 1 || o.batch < 1 || o.producers < 1 || o.consumers < 1 {
		errs = append(errs, errors.New("--count, --batch, --producers and --consumers must be at least 1"))
	}
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
		if p != durAsync && p != durFsync {
			errs = append(errs, fmt.Errorf("--pairs %q: want async, fsync or none", p))
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
	root, err := os.MkdirTemp(o.dir, "mqmesh-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(root)
	w := newWorkload(o, progressWriter(o.stderr))
	r := &Report{
		Schema: ReportSchema,
		Config: Config{
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
	var errs []error
	for _, pair := range o.pairs {
		if ctx.Err() != nil {
			errs = append(errs, context.Cause(ctx))
			break
		}
		p := Pair{Pair: pair}
		p.MQNode = runPeer(ctx, o, w, root, peerMQNode, pair)
		results := []Result{p.MQNode}
		if w.sec != nil {
			// Right after the plain run, so both see the same machine.
			sec := runPeer(ctx, o, w, root, peerMQNodeSecure, pair)
			p.MQNodeSecure, p.SecureCost = &sec, newRatio(sec, p.MQNode)
			results = append(results, sec)
		}
		p.JetStream = runPeer(ctx, o, w, root, peerJetStream, pair)
		p.Ratio = newRatio(p.MQNode, p.JetStream)
		results = append(results, p.JetStream)
		for _, res := range results {
			if !res.OK {
				errs = append(errs, fmt.Errorf("%s %s: %s", res.Peer, res.Durability, failure(res)))
			}
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
	if peerName == peerJetStream {
		return map[string]string{durAsync: "default", durFsync: "sync_always"}[dur]
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
		"enqueue: mqnode sends one request per batch and waits for its reply; JetStream uses PublishAsync with at most producers x batch PubAcks outstanding and waits for every PubAck",
		"drain: no-op consumers; mqnode acks a pulled batch in one Ack request; JetStream acks each message with msg.Ack(), the JetStream idiom (AckAll would settle other consumers' messages), pulling with FetchNoWait/Fetch from a durable pull consumer",
	}
}

// runPeer runs the workload against one peer in its own child process.
func runPeer(ctx context.Context, o *nodeOptions, w *workload, root, peerName, pair string) Result {
	res := Result{Peer: peerName, Durability: durabilityName(peerName, pair)}
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
	so := serveOptions{peer: peerName, durability: pair, dir: dir}
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

	t0 := time.Now()
	err = enqueueAll(ctx, p, w, 0, uint64(o.count), label)
	res.EnqueueS = time.Since(t0).Seconds()
	if err != nil {
		return err
	}
	res.Enqueued = int64(o.count)
	res.EnqueuePerS = float64(o.count) / res.EnqueueS
	if m, err := readMemory(c.pid); err == nil {
		res.RSSAfterEnqueueMiB = mib(m.rss)
	}
	fmt.Fprintf(w.log, "bench: %s: enqueued %d tasks in %.2fs (%.0f tasks/s)\n", label, o.count, res.EnqueueS, res.EnqueuePerS)
	if n, err := p.stored(ctx); err != nil || n != int64(o.count) {
		return fmt.Errorf("after enqueue the peer holds %d tasks, want %d (err: %v)", n, o.count, err)
	}

	t := newTracker(uint64(o.count))
	t2 := time.Now()
	err = drainAll(ctx, p, w, t, label)
	if err == nil {
		err = p.flush()
	}
	if err == nil {
		err = waitFor(ctx, o.stall, func() (bool, error) {
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

// connect opens the client side of a peer.
func connect(ctx context.Context, peerName, url string, w *workload) (peer, error) {
	switch peerName {
	case peerMQNode:
		return dialMQNode(ctx, url, w.lease, nil, nil)
	case peerMQNodeSecure:
		prod, err := w.sec.ClientOptions(secrets.RoleAdmin)
		if err != nil {
			return nil, err
		}
		cons, err := w.sec.ClientOptions(secrets.RoleWorker)
		if err != nil {
			return nil, err
		}
		return dialMQNode(ctx, url, w.lease, prod, cons)
	}
	return dialJetStream(url, w)
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
