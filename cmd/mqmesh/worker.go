package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/worker"
)

// defaultWorkerReport is the interval of the stats lines of `mqmesh worker`.
const defaultWorkerReport = 10 * time.Second

// workerOptions are the flags of `mqmesh worker`.
type workerOptions struct {
	ConfigFile      string
	JSON            bool
	Report          time.Duration
	Log             logFlags
	ShutdownTimeout time.Duration
	// Completions, when set, is a file the pool appends the id of every
	// task its handlers finished to (before the ack), one per line.
	Completions string
	// Ops are the operations endpoint flags (--http; ops.go).
	Ops opsFlags
	// sec are --secrets and --role (default worker).
	sec securityFlags

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
		Host    string            `json:"host"` // the host its node gossips, or the OS host name
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
	o := &workerOptions{sec: securityFlags{def: secrets.RoleWorker}}
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
	o.sec.bind(fs)
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", defaultShutdownTimeout, "how long a graceful stop may wait for running handlers")
	fs.StringVar(&o.Completions, "completions", "", "append the id of every task a handler finished (before its ack) to this file, one per line: an audit trail for completeness checks")
	bindOpsFlags(fs, &o.Ops, false)
	return cmd
}

// bindWorkerFlags registers the flags of the worker config's keys, bound
// to c's fields. Registering leaves c unchanged.
func bindWorkerFlags(fs *pflag.FlagSet, c *workerFile) {
	fs.StringVarP(&c.Server, "server", "s", c.Server, "NATS client URL of the pool's own node (worker-only host: a node of its IDC)")
	fs.StringVar(&c.ID, "id", c.ID, "pool id, unique in the mesh; a subject token (default <host>-<pid>)")
	fs.StringVar(&c.IDC, "idc", c.IDC, "IDC of the pool (default: the IDC of the node at --server)")
	fs.StringVar(&c.Host, "host", c.Host, "name of this host in reports and the membership (default: the host its own node gossips, else the OS host name)")
	fs.StringVar(&c.Node, "node", c.Node, `the own node's name; "" for a worker-only host (default: the node at --server)`)
	fs.IntVar(&c.Slots, "slots", c.Slots, fmt.Sprintf("handlers that run at once (default %d)", worker.DefaultSlots))
	fs.StringVar(&c.FilterFile, "filter", c.FilterFile, "backlog filter file (see configs/filters/), watched for changes (default: local and IDC tiers)")
}

// bindWorkerMeshFlags registers the gossip flags, bound to m's fields.
func bindWorkerMeshFlags(fs *pflag.FlagSet, m *mesh.Config) {
	fs.StringSliceVar(&m.Seeds, "seed", m.Seeds, "gossip address host:port of a mesh member: join the mesh as a worker member (repeatable)")
	fs.StringVar(&m.BindAddr, "gossip-bind", m.BindAddr, "gossip IP address of the pool (default "+mesh.DefaultBindAddr+")")
	fs.IntVar(&m.BindPort, "gossip-port", m.BindPort, fmt.Sprintf("gossip port of the pool (default: a free one, %d; the host's node has %d)", mesh.RandomPort, mesh.DefaultBindPort))
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

// Validate checks the options and the config as far as it is known before
// the node is asked (its IDC and name may be learned from it).
func (o *workerOptions) Validate() error {
	if err := o.Log.validate(); err != nil {
		return err
	}
	if err := o.sec.validate(); err != nil {
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
