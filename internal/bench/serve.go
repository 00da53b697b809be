package bench

import (
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

	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/throttle"
)

// Peers and durabilities understood by `bench serve`.
const (
	peerMQNode    = "mqnode"
	peerJetStream = "jetstream"

	durAsync = "async" // mqnode async; JetStream default (no fsync per message)
	durFsync = "fsync" // mqnode group commit; JetStream SyncAlways
)

// serveOptions are the flags of the hidden `bench serve` command.
type serveOptions struct {
	peer, durability, dir string
	cpuProfile            string // write a CPU profile of the server's life here
	memProfile            string // write a heap profile here at shutdown
}

func (o serveOptions) args() []string {
	a := []string{"--peer", o.peer, "--durability", o.durability, "--dir", o.dir}
	if o.cpuProfile != "" {
		a = append(a, "--cpuprofile", o.cpuProfile)
	}
	if o.memProfile != "" {
		a = append(a, "--memprofile", o.memProfile)
	}
	return a
}

func (o serveOptions) validate() error {
	if o.peer != peerMQNode && o.peer != peerJetStream {
		return fmt.Errorf("--peer %q: want %s or %s", o.peer, peerMQNode, peerJetStream)
	}
	if o.durability != durAsync && o.durability != durFsync {
		return fmt.Errorf("--durability %q: want %s or %s", o.durability, durAsync, durFsync)
	}
	if o.dir == "" {
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
	cmd.Flags().StringVar(&o.peer, "peer", "", "mqnode or jetstream")
	cmd.Flags().StringVar(&o.durability, "durability", durAsync, "async or fsync")
	cmd.Flags().StringVar(&o.dir, "dir", "", "data directory")
	cmd.Flags().StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the server to this file")
	cmd.Flags().StringVar(&o.memProfile, "memprofile", "", "write a heap profile of the server to this file when it stops")
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
	)
	switch o.peer {
	case peerMQNode:
		dur := mqnode.DurabilityAsync
		if o.durability == durFsync {
			dur = mqnode.DurabilityFsync
		}
		n, err := mqnode.New(mqnode.Config{
			Name: "bench", DataDir: o.dir, Listen: "127.0.0.1:0", Durability: dur, Logger: log,
			// The bench saturates the host on purpose to compare storage
			// paths; the CPU throttle would slow dispatch to leave headroom.
			Throttle: throttle.Config{CPU: throttle.CPUConfig{Disabled: true}},
		})
		if err != nil {
			return err
		}
		if err := n.Start(ctx); err != nil {
			return err
		}
		url = n.ClientURL()
		shutdown = func() error {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return n.Stop(sctx)
		}
	case peerJetStream:
		ns, err := server.NewServer(jetStreamServerOptions(o.dir, o.durability == durFsync))
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(30 * time.Second) {
			ns.Shutdown()
			return errors.New("jetstream: server not ready within 30s")
		}
		url = ns.ClientURL()
		shutdown = func() error {
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil
		}
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
