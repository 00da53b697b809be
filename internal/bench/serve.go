package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/throttle"
)

// Peers and durabilities understood by `bench serve`.
const (
	peerMQNode = "mqnode"
	// peerMQNodeSecure is mqnode with TLS and role authentication (the
	// secrets of --secrets): the cost of security, beside peerMQNode.
	peerMQNodeSecure = "mqnode+tls"
	peerJetStream    = "jetstream"

	durAsync = "async" // mqnode async; JetStream default (no fsync per message)
	durFsync = "fsync" // mqnode group commit; JetStream SyncAlways

	// The children of `bench cpu` besides its node (cpu_child.go).
	peerWorker = "worker" // a worker pool whose handler burns CPU
	peerHog    = "hog"    // a busy loop on one core
)

// serveOptions are the flags of the hidden `bench serve` command.
type serveOptions struct {
	peer, durability, dir string
	secrets               string // peerMQNodeSecure: the secrets directory
	cpuProfile            string // write a CPU profile of the server's life here
	memProfile            string // write a heap profile here at shutdown
	// throttle, for mqnode: "" keeps bench node's setting (CPU throttle
	// off); on (defaults) or off (all off) runs the node as `mqmesh node`
	// does, with a backlog publisher, for bench cpu.
	throttle string
	// listen, for mqnode: the client address (default 127.0.0.1:0);
	// bench remote listens on a veth address in a network namespace.
	listen string
	// pageout, for mqnode: its PageOutInterval (0: the node's default).
	pageout time.Duration
	// noTrace, for mqnode: run without the task trace (Config.Trace
	// Disabled), to measure what the trace costs.
	noTrace bool
	worker  workerOptions // peer worker
	hogFor  time.Duration // peer hog: exit after this long at the latest
	// ownSession starts the child in a session of its own (not a flag of
	// serve: how the parent starts it).
	ownSession bool
}

// Throttle settings of a node for `bench cpu`.
const (
	throttleOn  = "on"
	throttleOff = "off"
	// throttleHost is the CPU throttle on the whole host's CPU usage (the
	// signal before the node's own starvation became the default).
	throttleHost = "host"
)

func (o serveOptions) args() []string {
	a := []string{"--peer", o.peer, "--durability", o.durability, "--dir", o.dir}
	if o.cpuProfile != "" {
		a = append(a, "--cpuprofile", o.cpuProfile)
	}
	if o.memProfile != "" {
		a = append(a, "--memprofile", o.memProfile)
	}
	if o.throttle != "" {
		a = append(a, "--throttle", o.throttle)
	}
	if o.listen != "" {
		a = append(a, "--listen", o.listen)
	}
	if o.secrets != "" {
		a = append(a, "--secrets", o.secrets)
	}
	if o.pageout != 0 {
		a = append(a, "--pageout", o.pageout.String())
	}
	if o.noTrace {
		a = append(a, "--no-trace")
	}
	switch o.peer {
	case peerWorker:
		a = append(a, o.worker.args()...)
	case peerHog:
		a = append(a, "--hog-for", o.hogFor.String())
	}
	return a
}

func (o serveOptions) validate() error {
	switch o.peer {
	case peerWorker:
		return o.worker.validate()
	case peerHog:
		if o.hogFor <= 0 {
			return errors.New("--hog-for must be positive")
		}
		return nil
	case peerMQNode, peerJetStream, peerRiver, peerJetStreamR3, peerMQNodeR1:
	case peerMQNodeSecure:
		if o.secrets == "" {
			return errors.New("--secrets is required for mqnode+tls")
		}
	default:
		return fmt.Errorf("--peer %q: want %s, %s, %s, %s, %s, %s, %s or %s", o.peer, peerMQNode, peerMQNodeSecure, peerMQNodeR1, peerJetStream, peerJetStreamR3, peerRiver, peerWorker, peerHog)
	}
	if o.throttle != "" && (o.peer != peerMQNode || o.throttle != throttleOn && o.throttle != throttleOff && o.throttle != throttleHost) {
		return fmt.Errorf("--throttle %q: only for mqnode, want %s, %s or %s", o.throttle, throttleOn, throttleOff, throttleHost)
	}
	if o.durability != durAsync && o.durability != durFsync {
		return fmt.Errorf("--durability %q: want %s or %s", o.durability, durAsync, durFsync)
	}
	if o.dir == "" && o.peer != peerRiver {
		return errors.New("--dir is required")
	}
	return nil
}

func newServeCommand() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:    "serve",
		Short:  "Run one peer's server for bench node (internal: started by bench node)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			return serve(ctx, o, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&o.peer, "peer", "", "mqnode, mqnode+tls, mqnode-r1, jetstream, jetstream-r3, river, worker or hog")
	cmd.Flags().StringVar(&o.durability, "durability", durAsync, "async or fsync")
	cmd.Flags().StringVar(&o.dir, "dir", "", "data directory")
	cmd.Flags().StringVar(&o.secrets, "secrets", "", "mqnode+tls: the secrets directory")
	cmd.Flags().StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the server to this file")
	cmd.Flags().StringVar(&o.memProfile, "memprofile", "", "write a heap profile of the server to this file when it stops")
	cmd.Flags().StringVar(&o.throttle, "throttle", "", "mqnode for bench cpu: on (defaults) or off, with a backlog publisher")
	cmd.Flags().DurationVar(&o.hogFor, "hog-for", 0, "hog: exit after this long at the latest")
	cmd.Flags().StringVar(&o.listen, "listen", "", "mqnode: client address host:port (default 127.0.0.1:0)")
	cmd.Flags().DurationVar(&o.pageout, "pageout", 0, "mqnode: page-out interval of mapped store files (0: the node's default)")
	cmd.Flags().BoolVar(&o.noTrace, "no-trace", false, "mqnode: run without the task trace")
	o.worker.flags(cmd.Flags())
	return cmd
}

// serve starts the peer's server on 127.0.0.1 at a random port, writes its
// client URL as one line to stdout, and runs until stdin reaches EOF or ctx
// ends; then it shuts the server down.
func serve(ctx context.Context, o serveOptions, stdin io.Reader, stdout, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var (
		url      string
		shutdown func() error
		err      error
	)
	switch o.peer {
	case peerHog:
		return hog(ctx, o.hogFor, stdin, stdout)
	case peerWorker:
		url, shutdown, err = startPoolChild(ctx, o.worker, log)
	case peerMQNode, peerMQNodeSecure:
		url, shutdown, err = startMQNode(ctx, o, log)
	case peerJetStream:
		url, shutdown, err = startJetStream(o)
	case peerJetStreamR3:
		url, shutdown, err = startJetStreamCluster(o)
	case peerMQNodeR1:
		url, shutdown, err = startMQNodePair(ctx, o, log)
	case peerRiver:
		url, shutdown, err = startPostgres(ctx, o.durability == durAsync, stderr)
	}
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(stdout, url); err != nil {
		return errors.Join(err, shutdown())
	}
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(eof)
	}()
	select {
	case <-eof:
	case <-ctx.Done():
	}
	var perr error
	if o.memProfile != "" {
		perr = writeHeapProfile(o.memProfile)
	}
	return errors.Join(perr, shutdown())
}

// startJetStream starts the JetStream peer and returns its URL and how to
// stop it.
func startJetStream(o serveOptions) (string, func() error, error) {
	ns, err := server.NewServer(jetStreamServerOptions(o.dir, o.durability == durFsync))
	if err != nil {
		return "", nil, fmt.Errorf("jetstream: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return "", nil, errors.New("jetstream: server not ready within 30s")
	}
	return ns.ClientURL(), func() error {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil
	}, nil
}

// startMQNode starts the mqnode peer and returns its URL and how to stop it.
func startMQNode(ctx context.Context, o serveOptions, log *slog.Logger) (string, func() error, error) {
	dur := nodeDurability(o.durability)
	// bench node saturates the host on purpose to compare storage paths;
	// the CPU throttle would slow dispatch to leave headroom.
	th := throttle.Config{CPU: throttle.CPUConfig{Disabled: true}}
	switch o.throttle {
	case throttleOn:
		th = throttle.Config{}
	case throttleOff:
		th = throttle.Config{Disabled: true}
	case throttleHost:
		th = throttle.Config{CPU: throttle.CPUConfig{Signal: throttle.SignalHost}}
	}
	var sec *secrets.Set
	if o.peer == peerMQNodeSecure {
		var err error
		if sec, err = secrets.Load(o.secrets); err != nil {
			return "", nil, err
		}
	}
	n, err := mqnode.New(mqnode.Config{
		Name: "bench", DataDir: o.dir, Listen: cmp.Or(o.listen, "127.0.0.1:0"), Durability: dur, Logger: log, Throttle: th,
		Security: sec, PageOutInterval: o.pageout, Trace: mqnode.TraceConfig{Disabled: o.noTrace},
	})
	if err != nil {
		return "", nil, err
	}
	if err := n.Start(ctx); err != nil {
		return "", nil, err
	}
	stopNode := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return n.Stop(sctx)
	}
	if o.throttle == "" {
		return n.ClientURL(), stopNode, nil
	}
	// As `mqmesh node` runs a node without a mesh: with its backlog
	// publisher, which the host's worker pool listens to.
	pub, nc, err := mesh.StartPublisher(ctx, n, [backlog.NumTiers]backlog.TierPolicy{})
	if err != nil {
		return "", nil, errors.Join(err, stopNode())
	}
	return n.ClientURL(), func() error {
		pub.Kill()
		nc.Close()
		return stopNode()
	}, nil
}

// nodeDurability is mqnode's durability of a serve --durability.
func nodeDurability(d string) mqnode.Durability {
	if d == durFsync {
		return mqnode.DurabilityFsync
	}
	return mqnode.DurabilityAsync
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	return errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close())
}

// jetStreamServerOptions configures the embedded JetStream peer: loopback,
// random port, file storage in dir; syncAlways fsyncs every write.
func jetStreamServerOptions(dir string, syncAlways bool) *server.Options {
	return &server.Options{
		ServerName: "bench-jetstream",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   dir,
		SyncAlways: syncAlways,
		NoSigs:     true,
		NoLog:      true,
	}
}
