package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/worker"
	"github.com/mqmesh/mqmesh/worker/demo"
)

// defaultWorkerReport is the interval of the stats lines of `mqmesh worker`.
const defaultWorkerReport = 10 * time.Second

// workerFile is a worker config file: the keys of worker.Config at the top
// level, the URL of the node to connect to, and a demo handler per queue.
type workerFile struct {
	worker.Config `yaml:",inline"`
	// Server is the NATS URL of the pool's own node (on a worker-only
	// host: any node of its IDC). Default nats://127.0.0.1:4222.
	Server string `yaml:"server"`
	// Queues maps each queue to its demo handler.
	Queues demo.Queues `yaml:"queues"`
}

// workerOptions are the flags of `mqmesh worker`.
type workerOptions struct {
	ConfigFile      string
	JSON            bool
	Report          time.Duration
	Log             logFlags
	ShutdownTimeout time.Duration

	// flags and meshFlags are bound to the config flags; only those given
	// override the file.
	flags     workerFile
	meshFlags mesh.Config
	// cfg is the file with the given flags applied (see complete).
	cfg workerFile
	// nodeGiven says the own node was named (by --node or the file's node
	// key), "" meaning a worker-only host; otherwise it is learned from the
	// node at the server URL, as is an empty IDC.
	nodeGiven bool
}

// Lines `mqmesh worker --json` prints on stdout, one JSON object a line,
// told apart by their event.
type (
	workerReadyJSON struct {
		Event   string            `json:"event"` // "ready"
		ID      string            `json:"id"`
		IDC     string            `json:"idc"`
		Node    string            `json:"node"` // "" on a worker-only host
		Server  string            `json:"server"`
		Slots   int               `json:"slots"`
		Queues  []workerQueueJSON `json:"queues"`
		Mesh    bool              `json:"mesh"` // a gossip member of the mesh
		Version string            `json:"version"`
	}
	workerQueueJSON struct {
		Queue   string `json:"queue"`
		Kind    string `json:"kind"`
		Latency string `json:"latency"`
	}
	// workerStatsJSON is a stats line (event "stats", every --report) and
	// the last line after the pool stopped (event "stopped"). Counters are
	// totals since start; ProcessedPerSec is over the last interval.
	workerStatsJSON struct {
		Event           string     `json:"event"`
		Time            time.Time  `json:"time"`
		ID              string     `json:"id"`
		Processed       tierCounts `json:"processed"`
		ProcessedPerSec float64    `json:"processed_per_sec"`
		Pulls           tierCounts `json:"pulls"`
		EmptyPulls      tierCounts `json:"empty_pulls"`
		Retries         uint64     `json:"retries"`
		GiveUps         uint64     `json:"give_ups"`
		Extensions      uint64     `json:"lease_extensions"`
		LeasesLost      uint64     `json:"leases_lost"`
		AckErrors       uint64     `json:"ack_errors"`
		Busy            int64      `json:"busy"`
	}
	// tierCounts splits a counter by where the task came from or the pull
	// went: the own node, another node of the IDC, another IDC.
	tierCounts struct {
		Local    uint64 `json:"local"`
		SameIDC  uint64 `json:"same_idc"`
		OtherIDC uint64 `json:"other_idc"`
	}
)

func newWorkerCommand() *cobra.Command {
	o := &workerOptions{}
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker pool with built-in demo handlers until SIGINT or SIGTERM",
		Long: `Run a worker pool whose handlers are built-in demos, configured per queue in
--config (YAML, see configs/worker.yaml), so a mesh can be exercised without
writing Go. Handler kinds: sleep (a latency: fixed, uniform or lognormal),
flaky (fails and gives up at given rates), fanout (returns subtasks to
another queue); a per-IDC slowdown degrades a handler in one IDC.

The pool pulls its own node first and lends spare slots to other nodes with
backlog, in its IDC before other IDCs (as far as its backlog filter, --filter,
lets it hear of them). --server is the own node's client URL; when the IDC
or the node is not given, the pool asks that node. --node "" makes a
worker-only host (no own node: its first tier is its IDC). With --seed (or a
mesh section) the pool joins the mesh as a gossip member, so nodes release
its leases the moment it dies.

A ready line is printed on stdout, then a stats line every --report
(processed tasks and pulls by tier: local, same-idc, other-idc), and a last
one after the stop; --json prints them as JSON lines. Logs go to stderr.
SIGINT or SIGTERM stops gracefully: no more pulls, running handlers finish
and are acked. A second signal kills: handlers are cancelled unacked and
their tasks come back when their leases are released.`,
		Example: `  mqmesh worker --config configs/worker.yaml
  mqmesh worker --config worker.yaml --server nats://10.0.0.2:4222 --slots 64 --report 5s --json
  mqmesh worker --config worker.yaml --idc east --node "" --server nats://10.0.0.3:4222
  mqmesh worker --config worker.yaml --seed 10.0.0.2:7946 --gossip-bind 10.0.0.2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.complete(cmd.Flags()); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.StringVarP(&o.ConfigFile, "config", "c", "", "YAML worker config file with the queues and their demo handlers (required); flags that are set override it")
	o.flags.Server = defaultServer
	bindWorkerFlags(fs, &o.flags)
	bindWorkerMeshFlags(fs, &o.meshFlags)
	fs.DurationVar(&o.Report, "report", defaultWorkerReport, "interval of the stats lines on stdout (0: none)")
	fs.BoolVar(&o.JSON, "json", false, "print the ready and stats lines as JSON lines")
	o.Log.bind(fs)
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", defaultShutdownTimeout, "how long a graceful stop may wait for running handlers")
	return cmd
}

// bindWorkerFlags registers the flags of the worker config's keys, bound
// to c's fields. Registering leaves c unchanged.
func bindWorkerFlags(fs *pflag.FlagSet, c *workerFile) {
	fs.StringVarP(&c.Server, "server", "s", c.Server, "NATS client URL of the pool's own node (worker-only host: a node of its IDC)")
	fs.StringVar(&c.ID, "id", c.ID, "pool id, unique in the mesh; a subject token (default <host>-<pid>)")
	fs.StringVar(&c.IDC, "idc", c.IDC, "IDC of the pool (default: the IDC of the node at --server)")
	fs.StringVar(&c.Node, "node", c.Node, `the own node's name; "" for a worker-only host (default: the node at --server)`)
	fs.IntVar(&c.Slots, "slots", c.Slots, fmt.Sprintf("handlers that run at once (default %d)", worker.DefaultSlots))
	fs.StringVar(&c.FilterFile, "filter", c.FilterFile, "backlog filter file (see configs/filters/), watched for changes (default: local and IDC tiers)")
}

// bindWorkerMeshFlags registers the gossip flags, bound to m's fields.
func bindWorkerMeshFlags(fs *pflag.FlagSet, m *mesh.Config) {
	fs.StringSliceVar(&m.Seeds, "seed", m.Seeds, "gossip address host:port of a mesh member: join the mesh as a worker member (repeatable)")
	fs.StringVar(&m.BindAddr, "gossip-bind", m.BindAddr, "gossip IP address of the pool (default "+mesh.DefaultBindAddr+")")
	fs.IntVar(&m.BindPort, "gossip-port", m.BindPort, "gossip port of the pool (0 picks a free one)")
	fs.StringVar((*string)(&m.Profile), "profile", string(m.Profile), "gossip timings: lan, wan or local (default lan)")
}

// complete builds the config: the file, then the flags that were given.
func (o *workerOptions) complete(fs *pflag.FlagSet) error {
	if o.ConfigFile == "" {
		return errors.New("--config is required: the queues and their demo handlers (see configs/worker.yaml)")
	}
	cfg, nodeGiven, err := loadWorkerConfig(o.ConfigFile)
	if err != nil {
		return err
	}
	if err := applySetFlags(fs, func(onto *pflag.FlagSet) { bindWorkerFlags(onto, &cfg) }); err != nil {
		return err
	}
	nodeGiven = nodeGiven || fs.Changed("node")
	if cfg.Server == "" && !fs.Changed("server") {
		cfg.Server = defaultServer
	}
	if cfg.Mesh == nil && !fs.Changed("seed") {
		var given error
		names := pflag.NewFlagSet("mesh", pflag.ContinueOnError)
		bindWorkerMeshFlags(names, &mesh.Config{})
		names.VisitAll(func(f *pflag.Flag) {
			if given == nil && fs.Changed(f.Name) {
				given = fmt.Errorf("--%s: the pool joins no mesh: give --seed (or a mesh section in the config file)", f.Name)
			}
		})
		if given != nil {
			return given
		}
	} else {
		m := mesh.Config{}
		if cfg.Mesh != nil {
			m = *cfg.Mesh
		}
		if err := applySetFlags(fs, func(onto *pflag.FlagSet) { bindWorkerMeshFlags(onto, &m) }); err != nil {
			return err
		}
		cfg.Mesh = &m
	}
	o.cfg, o.nodeGiven = cfg, nodeGiven
	return nil
}

// loadWorkerConfig reads a worker config file strictly (an unknown key is
// an error naming the key and its line). nodeGiven says the file has a
// node key ("" = a worker-only host).
func loadWorkerConfig(path string) (cfg workerFile, nodeGiven bool, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, false, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, false, fmt.Errorf("config %s: %w", path, friendlyYAMLError(err))
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return cfg, false, fmt.Errorf("config %s: want one YAML document, found more", path)
	}
	// The file decoded strictly; this second, loose pass only asks whether
	// the node key is there at all.
	var probe struct {
		Node *string `yaml:"node"`
	}
	_ = yaml.Unmarshal(b, &probe)
	return cfg, probe.Node != nil, nil
}

// friendlyYAMLError names the config sections instead of Go types, and
// reminds of duration units.
func friendlyYAMLError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		r := strings.NewReplacer(
			"in type main.workerFile", "in the worker config",
			"in type demo.Spec", "in a queue's handler (kind, latency, error_rate, give_up_rate, retry_delay, fanout, slowdown, timeout, seed)",
			"in type demo.latencyFields", "in latency (dist, value, min, max, median, p99)",
			"in type demo.Fanout", "in fanout (queue, count, max_count, delay)",
			"in type demo.Slowdown", "in a slowdown (latency_factor, error_rate)",
			"in type worker.PolicyConfig", "in policy",
			"in type mesh.Config", "in mesh",
		)
		for i, e := range te.Errors {
			te.Errors[i] = r.Replace(e)
		}
	}
	if strings.Contains(err.Error(), "into time.Duration") {
		err = fmt.Errorf("%w\n  (a duration is a number with a unit: 500ms, 30s, 10m)", err)
	}
	return err
}

// Validate checks the options and the config as far as it is known before
// the node is asked (its IDC and name may be learned from it).
func (o *workerOptions) Validate() error {
	if err := o.Log.validate(); err != nil {
		return err
	}
	if o.ShutdownTimeout <= 0 {
		return fmt.Errorf("--shutdown-timeout %s: must be positive", o.ShutdownTimeout)
	}
	if o.Report < 0 {
		return fmt.Errorf("--report %s: must not be negative (0: no stats lines)", o.Report)
	}
	c := o.cfg
	var errs []error
	if c.Server == "" {
		errs = append(errs, errors.New("server (--server): empty URL"))
	}
	if c.Slots < 0 {
		errs = append(errs, fmt.Errorf("slots %d: must not be negative (0: default %d)", c.Slots, worker.DefaultSlots))
	}
	for _, f := range []struct {
		key string
		d   time.Duration
	}{{"lease", c.Lease}, {"extend_every", c.ExtendEvery}, {"handler_timeout", c.HandlerTimeout}} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("%s %s: must not be negative (0: the default)", f.key, f.d))
		}
	}
	// The IDC and the node may still be learned from the server: check the
	// rest with a stand-in.
	wc := c.Config
	if wc.IDC == "" {
		wc.IDC = "learned"
	}
	if err := wc.WithDefaults().Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.FilterFile != "" {
		if _, err := backlog.LoadFilters(c.FilterFile); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Mesh != nil {
		errs = append(errs, validateWorkerMesh(*c.Mesh))
	}
	errs = append(errs, c.Queues.WithDefaults().Validate())
	return errors.Join(errs...)
}

// validateWorkerMesh checks the gossip settings of the mesh section (the
// member's identity is the pool's, checked with the worker config).
func validateWorkerMesh(m mesh.Config) error {
	if len(m.Seeds) == 0 {
		return errors.New("mesh.seeds: none: a worker joins an existing mesh: name the gossip address of a member (--seed host:port)")
	}
	m.Meta = mesh.Meta{Role: mesh.RoleWorker, IDC: "stand-in", Name: "stand-in"}
	if err := m.WithDefaults().Validate(); err != nil {
		return fmt.Errorf("mesh: %w", err)
	}
	return nil
}

// logFlags are the logging flags of a long-running command. (`mqmesh
// node` has the same two flags on nodeOptions and could use this.)
type logFlags struct {
	Level  string
	Format string
}

func (l *logFlags) bind(fs *pflag.FlagSet) {
	fs.StringVar(&l.Level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&l.Format, "log-format", "text", "log format: text or json")
}

func (l logFlags) validate() error {
	if _, err := parseLevel(l.Level); err != nil {
		return err
	}
	if l.Format != "text" && l.Format != "json" {
		return fmt.Errorf("--log-format %q: want text or json", l.Format)
	}
	return nil
}

// logger returns a logger writing to w (the flags validated).
func (l logFlags) logger(w io.Writer) *slog.Logger {
	level, _ := parseLevel(l.Level)
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// run connects, starts the pool with a demo handler per queue, reports,
// and stops gracefully when ctx ends or a signal arrives (a second signal
// kills the pool).
func (o *workerOptions) run(ctx context.Context, stdout, stderr io.Writer) (err error) {
	base := o.Log.logger(stderr)
	log := base.With("component", "mqmesh-worker")
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	c, err := o.dial(ctx, log)
	if err != nil {
		return err
	}
	defer c.Close()
	cfg, err := o.resolve(c, base, log)
	if err != nil {
		return err
	}
	pool, handlers, err := newDemoPool(c.Conn(), cfg, o.cfg.Queues)
	if err != nil {
		return err
	}
	if err := pool.Start(ctx); err != nil {
		return err
	}
	cfg = pool.Config()
	if err := o.printReady(stdout, cfg, handlers); err != nil {
		pool.Kill()
		return err
	}
	rep := &workerReporter{o: o, w: stdout, pool: pool, last: time.Now()}
	var tick <-chan time.Time
	if o.Report > 0 {
		t := time.NewTicker(o.Report)
		defer t.Stop()
		tick = t.C
	}
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			waiting = false
		case sig := <-sigs:
			log.Info("signal: stopping gracefully (a second signal kills)", "signal", sig)
			waiting = false
		case <-tick:
			if err := rep.print("stats"); err != nil {
				log.Warn("stats line not written", "err", err)
			}
		}
	}
	err = o.stop(ctx, pool, sigs, log)
	return errors.Join(err, rep.print("stopped"))
}

// dial connects to the node at the server URL. The connection reconnects
// for as long as the pool runs.
func (o *workerOptions) dial(ctx context.Context, log *slog.Logger) (*mqnode.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, mqnode.DefaultRequestTimeout)
	defer cancel()
	server := o.cfg.Server
	c, err := mqnode.Dial(ctx, server,
		nats.Name("mqmesh-worker"),
		nats.Timeout(mqnode.DefaultRequestTimeout),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from the node; reconnecting", "server", server, "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("reconnected", "server", nc.ConnectedUrlRedacted()) }),
	)
	if err != nil {
		return nil, fmt.Errorf("server %s: %w", server, err)
	}
	return c, nil
}

// resolve completes the worker config: the IDC and the own node, when not
// given, are those of the node at the server URL.
func (o *workerOptions) resolve(c *mqnode.Client, base, log *slog.Logger) (worker.Config, error) {
	cfg := o.cfg.Config
	idc, name := c.Node()
	if cfg.IDC == "" {
		cfg.IDC = idc
	} else if cfg.IDC != idc {
		log.Warn("the node at the server URL is in another IDC than this pool", "server", o.cfg.Server, "node_idc", idc, "idc", cfg.IDC)
	}
	if !o.nodeGiven {
		cfg.Node = name
	}
	cfg.Logger = base
	if err := cfg.WithDefaults().Validate(); err != nil {
		return cfg, fmt.Errorf("worker config: %w", err)
	}
	return cfg, nil
}

// newDemoPool returns a pool with the demo handler of every queue.
func newDemoPool(nc *nats.Conn, cfg worker.Config, queues demo.Queues) (*worker.Pool, map[string]*demo.Handler, error) {
	pool, err := worker.New(nc, cfg)
	if err != nil {
		return nil, nil, err
	}
	cfg = pool.Config()
	handlers := make(map[string]*demo.Handler, len(queues))
	for queue, spec := range queues {
		h, err := demo.New(spec, demo.Env{IDC: cfg.IDC, Seed: demo.SeedFor(cfg.Seed, queue)})
		if err != nil {
			return nil, nil, fmt.Errorf("queues.%s: %w", queue, err)
		}
		if err := pool.Handle(queue, h.Handle, h.Spec().HandlerOptions()...); err != nil {
			return nil, nil, fmt.Errorf("queues.%s: %w", queue, err)
		}
		handlers[queue] = h
	}
	return pool, handlers, nil
}

// stop stops the pool gracefully within --shutdown-timeout; a signal
// meanwhile turns it into a hard stop.
func (o *workerOptions) stop(ctx context.Context, pool *worker.Pool, sigs <-chan os.Signal, log *slog.Logger) error {
	log.Info("stopping worker pool", "timeout", o.ShutdownTimeout, "busy", pool.Stats().Busy)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ShutdownTimeout)
	defer cancel()
	killed := make(chan os.Signal, 1)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case sig := <-sigs:
			log.Warn("second signal: killing the pool; running handlers are cancelled unacked", "signal", sig)
			killed <- sig
			cancel()
		case <-sctx.Done():
		}
	}()
	err := pool.Stop(sctx)
	cancel()
	<-watched
	select {
	case sig := <-killed:
		return fmt.Errorf("killed by a second signal (%s): running handlers were cancelled; their tasks return when their leases are released", sig)
	default:
	}
	if err != nil {
		return fmt.Errorf("%w (after --shutdown-timeout %s; their tasks return when their leases are released)", err, o.ShutdownTimeout)
	}
	return nil
}

// printReady prints the ready line.
func (o *workerOptions) printReady(w io.Writer, cfg worker.Config, handlers map[string]*demo.Handler) error {
	queues := make([]workerQueueJSON, 0, len(handlers))
	for q, h := range handlers {
		s := h.Spec()
		queues = append(queues, workerQueueJSON{Queue: q, Kind: string(s.Kind), Latency: s.Latency.String()})
	}
	slices.SortFunc(queues, func(a, b workerQueueJSON) int { return strings.Compare(a.Queue, b.Queue) })
	if o.JSON {
		return json.NewEncoder(w).Encode(workerReadyJSON{
			Event: "ready", ID: cfg.ID, IDC: cfg.IDC, Node: cfg.Node, Server: o.cfg.Server,
			Slots: cfg.Slots, Queues: queues, Mesh: cfg.Mesh != nil, Version: mqnode.Version,
		})
	}
	where := "node " + cfg.Node
	if cfg.Node == "" {
		where = "worker-only host"
	}
	names := make([]string, len(queues))
	for i, q := range queues {
		names[i] = q.Queue + " (" + q.Kind + ")"
	}
	line := fmt.Sprintf("mqmesh worker %s (idc %s, %s) ready: %d slots, queues %s; server %s",
		cfg.ID, cfg.IDC, where, cfg.Slots, strings.Join(names, ", "), o.cfg.Server)
	if cfg.Mesh != nil {
		line += "; mesh member via " + strings.Join(cfg.Mesh.Seeds, ",")
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

// workerReporter prints stats lines.
type workerReporter struct {
	o             *workerOptions
	w             io.Writer
	pool          *worker.Pool
	last          time.Time
	lastProcessed uint64
}

func tiers(a [4]uint64) tierCounts {
	return tierCounts{Local: a[worker.Local], SameIDC: a[worker.SameIDC], OtherIDC: a[worker.OtherIDC]}
}

func (t tierCounts) total() uint64 { return t.Local + t.SameIDC + t.OtherIDC }

func (t tierCounts) String() string {
	return fmt.Sprintf("local=%d same-idc=%d other-idc=%d", t.Local, t.SameIDC, t.OtherIDC)
}

// print writes one stats line of the given event.
func (r *workerReporter) print(event string) error {
	now := time.Now()
	st := r.pool.Stats()
	s := workerStatsJSON{
		Event: event, Time: now.UTC(), ID: r.pool.Config().ID,
		Processed: tiers(st.Processed), Pulls: tiers(st.Pulls), EmptyPulls: tiers(st.EmptyPulls),
		Retries: st.Retries, GiveUps: st.GiveUps, Extensions: st.Extensions,
		LeasesLost: st.LeaseLost, AckErrors: st.AckErrors, Busy: st.Busy,
	}
	total := s.Processed.total()
	if dt := now.Sub(r.last).Seconds(); dt > 0 {
		s.ProcessedPerSec = float64(total-r.lastProcessed) / dt
	}
	r.last, r.lastProcessed = now, total
	if r.o.JSON {
		return json.NewEncoder(r.w).Encode(s)
	}
	_, err := fmt.Fprintf(r.w, "%s: processed %s (%.1f/s) | pulls %s | empty %s | retries=%d give-ups=%d extensions=%d leases-lost=%d ack-errors=%d busy=%d\n",
		event, s.Processed, s.ProcessedPerSec, s.Pulls, s.EmptyPulls, s.Retries, s.GiveUps, s.Extensions, s.LeasesLost, s.AckErrors, s.Busy)
	return err
}
