package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/worker"
	"github.com/mqmesh/mqmesh/worker/demo"
)

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
	var audit *completionLog
	if o.Completions != "" {
		if audit, err = openCompletionLog(o.Completions); err != nil {
			return err
		}
		defer audit.Close()
	}
	pool, handlers, err := newDemoPool(c.Conn(), cfg, o.cfg.Queues, audit)
	if err != nil {
		return err
	}
	if err := pool.Start(ctx); err != nil {
		return err
	}
	cfg = pool.Config()
	set, err := o.sec.load()
	if err != nil {
		pool.Kill()
		return err
	}
	ops, err := o.Ops.startWorkerOps(pool, c.Conn(), set, log)
	if err != nil {
		pool.Kill()
		return err
	}
	if err := o.printReady(stdout, cfg, handlers); err != nil {
		pool.Kill()
		return err
	}
	defer announceOps(ops, stdout, o.JSON)()
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
	auth, err := o.sec.natsOptions()
	if err != nil {
		return nil, err
	}
	c, err := mqnode.Dial(ctx, server, append(auth,
		nats.Name("mqmesh-worker"),
		nats.Timeout(mqnode.DefaultRequestTimeout),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from the node; reconnecting", "server", server, "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("reconnected", "server", nc.ConnectedUrlRedacted()) }),
	)...)
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
	if cfg.Host == "" && cfg.Node == name {
		cfg.Host = nodeHost(c, idc, name)
	}
	cfg.Logger = base
	if cfg.Mesh != nil {
		set, err := o.sec.load()
		if err != nil {
			return cfg, err
		}
		if set != nil {
			m := *cfg.Mesh
			if m.Keyring, err = set.GossipKeys(); err != nil {
				return cfg, fmt.Errorf("--secrets: %w", err)
			}
			m.KeyringFile = filepath.Join(set.Dir, secrets.FileGossipKey)
			cfg.Mesh = &m
		}
	}
	if err := cfg.WithDefaults().Validate(); err != nil {
		return cfg, fmt.Errorf("worker config: %w", err)
	}
	return cfg, nil
}

// nodeHost is the host name the node idc/name reports (its mesh host; ""
// for a standalone node or when it does not answer: the OS host name is
// then used), so a pool on a host names it as its node does.
func nodeHost(c *mqnode.Client, idc, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	info, err := c.Info(ctx)
	if err != nil || info.GetName() != name || info.GetIdc() != idc {
		return ""
	}
	return info.GetHost()
}

// newDemoPool returns a pool with the demo handler of every queue.
// A non-nil audit records every task a handler finished.
func newDemoPool(nc *nats.Conn, cfg worker.Config, queues demo.Queues, audit *completionLog) (*worker.Pool, map[string]*demo.Handler, error) {
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
		if err := pool.Handle(queue, audit.wrap(h.Handle), h.Spec().HandlerOptions()...); err != nil {
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
			Event: "ready", ID: cfg.ID, IDC: cfg.IDC, Host: cfg.WithDefaults().Host, Node: cfg.Node, Server: o.cfg.Server,
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
	line := fmt.Sprintf("mqmesh worker %s (idc %s, host %s, %s) ready: %d slots, queues %s; server %s",
		cfg.ID, cfg.IDC, cfg.WithDefaults().Host, where, cfg.Slots, strings.Join(names, ", "), o.cfg.Server)
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
