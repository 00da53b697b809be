package main

import (
	"github.com/nats-io/nats.go"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/mqmesh/mqmesh/backlog"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/mqmesh/mqmesh/internal/lifecycle"
	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
)

// defaultShutdownTimeout bounds the graceful stop after a signal.
const defaultShutdownTimeout = 30 * time.Second

// nodeOptions are the flags of `mqmesh node`.
type nodeOptions struct {
	ConfigFile      string
	JSON            bool
	PrintConfig     bool
	LogLevel        string
	LogFormat       string
	ShutdownTimeout time.Duration

	// Mesh is --mesh: join a mesh even without a mesh section or flag.
	Mesh bool
	// Ops are the operations endpoint flags (--http; ops.go).
	Ops opsFlags
	// security are --secrets and --insecure (over the file's section).
	security securitySection

	// flags and meshFlags are bound to the config flags; only those set
	// are used.
	flags     mqnode.Config
	meshFlags meshConfig
	// cfg is the config file with the set flags applied (see complete).
	cfg mqnode.Config
	// mesh is cfg's mesh section, defaulted; nil for a standalone node.
	mesh *meshConfig
}

// nodeReadyJSON is the --json line `mqmesh node` prints once it serves.
type nodeReadyJSON struct {
	Name       string `json:"name"`
	IDC        string `json:"idc"`
	URL        string `json:"url"` // "" when listen is "none"
	Data       string `json:"data"`
	Durability string `json:"durability"`
	Version    string `json:"version"`
	// Gossip is the mesh gossip address host:port ("" when standalone).
	Gossip string `json:"gossip"`
}

func newNodeCommand() *cobra.Command {
	o := &nodeOptions{flags: mqnode.Config{}.WithDefaults(), meshFlags: *newMeshConfig()}
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run an MQ node until SIGINT or SIGTERM",
		Long: `Run an MQ node: a durable task store and an embedded NATS server.

The configuration comes from --config (YAML, see configs/node.yaml), then
from the flags that are set; anything left out takes its default, so
'mqmesh node' alone serves a standalone node from ./data on 127.0.0.1:4222.

With a mesh section in the file (see configs/mesh/), a mesh flag, or
--mesh, the node joins a mesh: it gossips its membership (hashicorp/
memberlist) and links its NATS server to the other nodes, by routes inside
its IDC and by gateways to other IDCs. Naming any one member with --seed
is enough to join; no seed starts a new mesh. Mesh defaults: gossip on the
host of --listen port 7946, routes on port 6222, gateways on 7222, profile
lan. The gossip key comes from secret_key or $` + mesh.GossipKeyEnv + `.

With --secrets (see 'mqmesh secrets init') every link is authenticated and
encrypted; SIGHUP reloads the secrets directory (role keys added to or
removed from roles.json take effect at once) and the gossip keyring follows
gossip.key as it changes. Without secrets a node whose client, route,
gateway or gossip listener is not on loopback refuses to start (--insecure
overrides).

Once the node serves, its client URL (and gossip address) is printed on
stdout; logs go to stderr. SIGINT or SIGTERM stops it gracefully: a mesh
member announces its leave first (a second signal kills it; a killed
member is detected as failed).`,
		Example: `  mqmesh node
  mqmesh node --config configs/node.yaml --listen 0.0.0.0:4222
  mqmesh node --config node.yaml --print-config
  mqmesh node --config configs/mesh/idc-a-host1.yaml
  mqmesh node --idc east --name n2 --listen 10.0.0.2:4222 --seed 10.0.0.1:7946`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.complete(cmd.Flags()); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			if o.PrintConfig {
				return o.printConfig(cmd.OutOrStdout())
			}
			return o.run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.StringVarP(&o.ConfigFile, "config", "c", "", "YAML config file; flags that are set override it")
	fs.BoolVar(&o.PrintConfig, "print-config", false, "print the effective config as YAML and exit")
	fs.BoolVar(&o.JSON, "json", false, "print the ready line as a JSON object")
	fs.StringVar(&o.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.LogFormat, "log-format", "text", "log format: text or json")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", defaultShutdownTimeout, "how long a graceful stop may take")
	bindConfigFlags(fs, &o.flags)
	fs.StringVar(&o.security.Secrets, "secrets", os.Getenv(SecretsEnv), "secrets directory (see 'mqmesh secrets init'): TLS and authentication on every link (default $"+SecretsEnv+")")
	fs.BoolVar(&o.security.Insecure, "insecure", false, "start without --secrets even when listening beyond loopback (anyone who reaches the ports controls the node)")
	fs.BoolVar(&o.Mesh, "mesh", false, "join a mesh (implied by a mesh section or any mesh flag; --mesh=false runs standalone)")
	bindMeshFlags(fs, &o.meshFlags)
	bindOpsFlags(fs, &o.Ops, true)
	cmd.AddCommand(newNodeRepairCommand())
	return cmd
}

// complete builds the config: the file (if any), then the set flags; and
// the mesh section, defaulted, when the node joins a mesh.
func (o *nodeOptions) complete(fs *pflag.FlagSet) error {
	o.cfg, o.mesh = mqnode.Config{}, nil
	sec := securitySection{Secrets: os.Getenv(SecretsEnv)}
	if o.ConfigFile != "" {
		cfg, err := loadConfig(o.ConfigFile)
		if err != nil {
			return err
		}
		o.cfg, o.mesh = cfg.Config, cfg.Mesh
		if cfg.SecuritySection.Secrets != "" {
			sec.Secrets = cfg.SecuritySection.Secrets
		}
		sec.Insecure = cfg.SecuritySection.Insecure
	}
	if fs.Changed("secrets") {
		sec.Secrets = o.security.Secrets
	}
	if fs.Changed("insecure") {
		sec.Insecure = o.security.Insecure
	}
	o.security = sec
	if err := applyConfigFlags(fs, &o.cfg); err != nil {
		return err
	}
	join := o.mesh != nil || meshFlagsSet(fs)
	if fs.Changed("mesh") {
		if !o.Mesh && meshFlagsSet(fs) {
			return errors.New("--mesh=false: mesh flags given too")
		}
		join = o.Mesh
	}
	if !join {
		o.mesh = nil
		return nil
	}
	if o.mesh == nil {
		o.mesh = newMeshConfig()
	}
	if err := applySetFlags(fs, func(onto *pflag.FlagSet) { bindMeshFlags(onto, o.mesh) }); err != nil {
		return err
	}
	*o.mesh = o.mesh.withDefaults(o.cfg.WithDefaults().Listen)
	return nil
}

// Validate checks the options and the node config.
func (o *nodeOptions) Validate() error {
	if _, err := parseLevel(o.LogLevel); err != nil {
		return err
	}
	if o.LogFormat != "text" && o.LogFormat != "json" {
		return fmt.Errorf("--log-format %q: want text or json", o.LogFormat)
	}
	if o.ShutdownTimeout <= 0 {
		return fmt.Errorf("--shutdown-timeout %s: must be positive", o.ShutdownTimeout)
	}
	if err := o.cfg.WithDefaults().Validate(); err != nil {
		return fmt.Errorf("node config: %w", err)
	}
	if o.mesh != nil {
		return o.mesh.validate(o.cfg.WithDefaults())
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

func (o *nodeOptions) logger(w io.Writer) *slog.Logger {
	level, _ := parseLevel(o.LogLevel) // checked by Validate
	opts := &slog.HandlerOptions{Level: level}
	if o.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func (o *nodeOptions) printConfig(w io.Writer) error {
	b, err := yaml.Marshal(fileConfig{Config: o.cfg.WithDefaults(), Mesh: o.mesh, SecuritySection: o.security})
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	_, err = w.Write(b)
	return err
}

// service is what `mqmesh node` runs: a *standaloneNode, or a
// *mesh.NodeAgent (the node as a mesh member).
type service = lifecycle.Part

// standaloneNode is a node without a mesh that still publishes its backlog, so
// workers on its host (and worker-only hosts attached to it) hear it. It
// keeps the lifecycle contract (package internal/lifecycle).
type standaloneNode struct {
	cfg  mqnode.Config
	life lifecycle.Guard
	n    *mqnode.Node
	pub  *backlog.Publisher
	nc   *nats.Conn
}

func newStandaloneNode(cfg mqnode.Config) (*standaloneNode, error) {
	n, err := mqnode.New(cfg)
	if err != nil {
		return nil, err
	}
	s := &standaloneNode{cfg: cfg, n: n}
	s.life.Name = "standalone node"
	return s, nil
}

func (s *standaloneNode) Start(ctx context.Context) error {
	return s.life.Start(ctx, func() error {
		if err := s.n.Start(ctx); err != nil {
			return err
		}
		var err error
		if s.pub, s.nc, err = mesh.StartPublisher(ctx, s.n, [backlog.NumTiers]backlog.TierPolicy{}); err != nil {
			// The node started: stop it and put a fresh one in its place,
			// so a new Start may follow.
			s.n.Kill()
			n, nerr := mqnode.New(s.cfg)
			if nerr == nil {
				s.n = n
			}
			return errors.Join(err, nerr)
		}
		return nil
	})
}

func (s *standaloneNode) Stop(ctx context.Context) error {
	return s.life.Stop(func() error {
		_ = s.pub.Stop(ctx)
		s.nc.Close()
		return s.n.Stop(ctx)
	})
}

func (s *standaloneNode) Kill() {
	s.life.Kill(func() {
		s.pub.Kill()
		s.nc.Close()
		s.n.Kill()
	})
}

// run starts the node (as a mesh member when configured), reports it
// ready, and stops it gracefully when ctx ends or a signal arrives; a mesh
// member announces its leave.
func (o *nodeOptions) run(ctx context.Context, stdout, stderr io.Writer) (err error) {
	ctx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	cfg := o.cfg
	cfg.Logger = o.logger(stderr)
	if err := o.secure(&cfg); err != nil {
		return err
	}
	var (
		svc   service
		n     *mqnode.Node
		agent *mesh.NodeAgent
		pub   func() *backlog.Publisher
	)
	if o.mesh == nil {
		sn, err := newStandaloneNode(cfg)
		if err != nil {
			return err
		}
		n = sn.n
		svc, pub = sn, func() *backlog.Publisher { return sn.pub }
	} else {
		ac := o.mesh.agentConfig(cfg)
		if cfg.Security != nil {
			// Gossip keys rotate while the node runs (secrets gossip-key).
			ac.Mesh.KeyringFile = filepath.Join(o.security.Secrets, secrets.FileGossipKey)
		}
		if agent, err = mesh.NewNodeAgent(ac); err != nil {
			return err
		}
		svc, n = agent, agent.Node
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	defer func() {
		stopSignals() // from here a second signal kills the process
		cfg.Logger.Info("stopping node", "timeout", o.ShutdownTimeout, "mesh", agent != nil)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ShutdownTimeout)
		defer cancel()
		if serr := svc.Stop(sctx); serr != nil {
			err = errors.Join(err, fmt.Errorf("stop node: %w", serr))
		}
	}()
	if cfg.Security != nil {
		stopHUP := o.reloadOnHUP(n, cfg.Logger)
		defer stopHUP()
	}
	gossip := ""
	if agent != nil {
		gossip = agent.Mesh.GossipAddr()
	}
	ops, err := o.Ops.startNodeOps(n, agent, pub, o.security.Insecure, cfg.Logger)
	if err != nil {
		return err
	}
	if err := o.printReady(stdout, n, gossip); err != nil {
		return err
	}
	defer announceOps(ops, stdout, o.JSON)()
	<-ctx.Done()
	return nil
}

// printReady prints the ready line; gossip is "" for a standalone node.
func (o *nodeOptions) printReady(w io.Writer, n *mqnode.Node, gossip string) error {
	c := n.Config()
	if o.JSON {
		// One line, so a supervisor can read it like the text form.
		return json.NewEncoder(w).Encode(nodeReadyJSON{
			Name: c.Name, IDC: c.IDC, URL: n.ClientURL(), Data: c.DataDir,
			Durability: string(c.Durability), Version: mqnode.Version, Gossip: gossip,
		})
	}
	where := "at " + n.ClientURL()
	if c.Listen == mqnode.ListenNone {
		where = "without a listener (in-process clients only)"
	}
	if gossip != "" {
		where += ", mesh gossip at " + gossip
	}
	_, err := fmt.Fprintf(w, "mqmesh node %s (idc %s) ready %s\n", c.Name, c.IDC, where)
	return err
}

// secure loads --secrets into cfg, or, without secrets, refuses a node
// with any listener beyond loopback unless --insecure (then it warns).
func (o *nodeOptions) secure(cfg *mqnode.Config) error {
	if o.security.Secrets != "" {
		set, err := secrets.Load(o.security.Secrets)
		if err != nil {
			return fmt.Errorf("--secrets: %w", err)
		}
		if err := set.CheckNode(); err != nil {
			return fmt.Errorf("--secrets: %w", err)
		}
		cfg.Security = set
		return nil
	}
	open := o.exposedListeners()
	if len(open) == 0 {
		return nil
	}
	if !o.security.Insecure {
		return fmt.Errorf("refusing to start: %s is not loopback and no secrets are given: add --secrets DIR (create one with 'mqmesh secrets init DIR'), or --insecure to run unprotected", open[0])
	}
	cfg.Logger.Warn("INSECURE: listening beyond loopback without secrets: anyone who reaches these ports can read, forge and delete tasks", "listeners", open)
	return nil
}

// exposedListeners are the node's listeners (client, route, gateway,
// gossip) not bound to loopback, as "what addr".
func (o *nodeOptions) exposedListeners() []string {
	var out []string
	check := func(what, addr string) {
		if addr != "" && addr != mqnode.ListenNone && !isLoopback(addr) {
			out = append(out, what+" "+addr)
		}
	}
	check("listen", o.cfg.WithDefaults().Listen)
	if o.mesh != nil {
		check("cluster_listen", o.mesh.ClusterListen)
		check("gateway_listen", o.mesh.GatewayListen)
		check("gossip bind", o.mesh.BindAddr)
	}
	return out
}

// reloadOnHUP reloads the secrets directory on SIGHUP (role keys added to
// or removed from roles.json take effect without a restart); call the
// returned func to stop.
func (o *nodeOptions) reloadOnHUP(n *mqnode.Node, log *slog.Logger) func() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-hup:
				set, err := secrets.Load(o.security.Secrets)
				if err == nil {
					err = n.SetSecurity(set)
				}
				if err != nil {
					log.Error("SIGHUP: secrets not reloaded, the old ones stay", "dir", o.security.Secrets, "err", err)
				} else {
					log.Info("SIGHUP: secrets reloaded", "dir", o.security.Secrets)
				}
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-stopped
	}
}
