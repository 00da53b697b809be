package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/internal/lifecycle"
	"github.com/mqmesh/mqmesh/internal/ratelog"
	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
)

// Pool runs handlers for queues with a fixed number of slots, pulling from
// its own node first and helping other nodes with spare capacity.
//
// Lifecycle (package internal/lifecycle): New, Handle for each queue,
// Start once; then Stop (graceful: stop pulling, let running handlers
// finish and ack, leave the mesh) or Kill (as a crash: cancel running
// handlers unacked, no leave; their tasks come back when the nodes see the
// pool's member fail and release its leases, or the leases expire). Both
// are idempotent and safe before Start.
type Pool struct {
	cfg  Config
	log  *slog.Logger
	nc   *nats.Conn
	view *backlog.View

	handlers map[string]*registered
	// slots: one per running handler (Slots); credits: every task held,
	// up to Slots plus the prefetch (prefetch.go).
	slots   chan struct{}
	credits *credits
	sizer   *sizer
	// waiting counts the tasks pulled and not yet in a slot (prefetched).
	waiting atomic.Int64

	life    lifecycle.Guard
	mu      sync.Mutex
	clients map[Origin]*mqnode.Client
	ackers  map[Origin]*acker

	// schedMu guards sched, the fetch loops' shared deterministic core.
	schedMu sync.Mutex
	sched   *Scheduler

	watcher  *backlog.Watcher
	mesh     *mesh.Mesh
	stopFeed func()

	fetchStop chan struct{}
	fetchWG   sync.WaitGroup
	runWG     sync.WaitGroup
	runCtx    context.Context
	// runShards are children of runCtx the handlers' contexts derive from,
	// in turn: one parent for all would serialize every task's start and
	// end on its mutex.
	runShards [runShardCount]context.Context
	nextShard atomic.Uint32
	cancelRun context.CancelFunc
	killed    atomic.Bool

	stats counters
	// pullWarn rate-limits the warning of failed pulls of the own node.
	pullWarn ratelog.Limiter
	metrics  *poolMetrics // histograms (metrics.go)
	// beforeAck, when set (tests), runs after a handler returned and
	// before its ack is sent; returning false drops the ack.
	beforeAck func(*Task, Result) bool
}

type registered struct {
	queue   string
	h       Handler
	timeout time.Duration
}

// New returns a pool that talks to the mesh over nc (a connection to the
// pool's own node, or to any node of its IDC on a worker-only host).
func New(nc *nats.Conn, cfg Config) (*Pool, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("worker: config: %w", err)
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "worker", "pool", cfg.ID, "idc", cfg.IDC),
		nc:       nc,
		view:     backlog.NewView(nil),
		handlers: map[string]*registered{},
		slots:    make(chan struct{}, cfg.Slots),
		credits:  newCredits(cfg.Slots),
		sizer:    &sizer{slots: cfg.Slots, cap: max(cfg.MaxPrefetch, 0), floor: cfg.Policy.LocalBatch},
		sched: NewScheduler(SchedulerConfig{IDC: cfg.IDC, Node: cfg.Node, Policy: cfg.Policy,
			Rand: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}),
		clients:   map[Origin]*mqnode.Client{},
		ackers:    map[Origin]*acker{},
		fetchStop: make(chan struct{}),
		runCtx:    ctx,
		cancelRun: cancel,
		metrics:   newPoolMetrics(),
		pullWarn:  ratelog.Limiter{Every: 10 * time.Second},
	}
	cancels := []context.CancelFunc{cancel}
	for i := range p.runShards {
		var c context.CancelFunc
		p.runShards[i], c = context.WithCancel(ctx)
		cancels = append(cancels, c)
	}
	p.cancelRun = func() {
		for _, c := range cancels {
			c()
		}
	}
	p.life.Name = "worker: pool"
	return p, nil
}

// runShardCount is the number of runCtx children handlers' contexts spread
// over.
const runShardCount = 16

// runParent returns the context a handler's context derives from.
func (p *Pool) runParent() context.Context {
	return p.runShards[p.nextShard.Add(1)%runShardCount]
}

// Handle registers the handler of a queue. Call before Start.
func (p *Pool) Handle(queue string, h Handler, opts ...HandlerOption) error {
	if err := subject.Validate("queue", queue); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if h == nil {
		return errors.New("worker: nil handler")
	}
	hc := handlerConfig{timeout: p.cfg.HandlerTimeout}
	for _, o := range opts {
		if err := o(&hc); err != nil {
			return err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.life.State() != lifecycle.Idle {
		return errors.New("worker: Handle after Start")
	}
	if _, dup := p.handlers[queue]; dup {
		return fmt.Errorf("worker: queue %q already has a handler", queue)
	}
	p.handlers[queue] = &registered{queue: queue, h: h, timeout: hc.timeout}
	return nil
}

// GossipAddr is the pool's gossip address ("" when it is not a mesh
// member or not started).
func (p *Pool) GossipAddr() string {
	if p.mesh == nil {
		return ""
	}
	return p.mesh.GossipAddr()
}

// View is the pool's backlog view.
func (p *Pool) View() *backlog.View { return p.view }

// Config returns the effective config.
func (p *Pool) Config() Config { return p.cfg }

// Start subscribes to backlog notices, joins the mesh (if configured) and
// starts pulling. A failed Start undoes what it began; a new Start may
// follow.
func (p *Pool) Start(ctx context.Context) error {
	return p.life.Start(ctx, func() error { return p.start(ctx) })
}

func (p *Pool) start(ctx context.Context) (err error) {
	p.mu.Lock()
	n := len(p.handlers)
	p.mu.Unlock()
	if n == 0 {
		return errors.New("worker: no handlers registered")
	}
	wc := backlog.WatcherConfig{IDC: p.cfg.IDC, Node: p.cfg.Node, FilterFile: p.cfg.FilterFile, Logger: p.cfg.Logger}
	switch {
	case p.cfg.FilterFile != "":
	case p.cfg.Filters != nil:
		wc.Filters = *p.cfg.Filters
	default:
		wc.Filters = backlog.DefaultFilters()
		if p.cfg.Node == "" {
			delete(wc.Filters.Tiers, "local")
		}
	}
	p.watcher = backlog.NewWatcher(p.nc, p.view, wc)
	if err := p.watcher.Start(ctx); err != nil {
		p.watcher = nil
		return err
	}
	if p.cfg.Mesh != nil {
		mc := *p.cfg.Mesh
		mc.Meta = mesh.Meta{Role: mesh.RoleWorker, IDC: p.cfg.IDC, Host: p.cfg.Host, Name: p.cfg.ID, Node: p.cfg.Node, Version: mqnode.Version}
		if mc.Logger == nil {
			mc.Logger = p.cfg.Logger
		}
		if p.mesh, err = mesh.New(mc); err == nil {
			err = p.mesh.Start(ctx)
		}
		if err != nil {
			p.watcher.Kill()
			p.watcher, p.mesh = nil, nil
			return fmt.Errorf("worker: join the mesh: %w", err)
		}
		p.stopFeed = p.mesh.FeedView(p.view)
	}
	for _, r := range p.handlers {
		p.fetchWG.Add(1)
		go p.fetch(r)
	}
	p.log.Info("worker pool started", "node", p.cfg.Node, "slots", p.cfg.Slots, "queues", len(p.handlers))
	return nil
}

// Stop stops pulling, waits for running handlers to finish and their acks
// to be sent, then leaves the mesh. When ctx ends first, the handlers still
// running are cancelled (unacked) and Stop returns an error saying so.
// Idempotent; safe before Start.
func (p *Pool) Stop(ctx context.Context) error {
	return p.life.Stop(func() error {
		var err error
		close(p.fetchStop)
		p.fetchWG.Wait()
		done := make(chan struct{})
		go func() { p.runWG.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			err = fmt.Errorf("worker: handlers still running at stop: %w", ctx.Err())
			p.killed.Store(true)
			p.cancelRun()
			<-done
		}
		p.teardown(ctx, true)
		return err
	})
}

// Kill stops at once, as if the process died (lifecycle contract): running
// handlers are cancelled and not acked, and the pool drops out of the mesh
// without a leave; its tasks come back when the nodes see its member fail
// and release its leases, or the leases expire. Idempotent; safe before
// Start.
func (p *Pool) Kill() {
	p.life.Kill(func() {
		p.killed.Store(true)
		p.cancelRun()
		close(p.fetchStop)
		p.fetchWG.Wait()
		p.runWG.Wait()
		p.teardown(context.Background(), false)
	})
}

func (p *Pool) teardown(ctx context.Context, leave bool) {
	p.cancelRun()
	p.mu.Lock()
	ackers := p.ackers
	p.ackers = map[Origin]*acker{}
	p.mu.Unlock()
	for _, a := range ackers {
		a.close()
	}
	if p.watcher != nil {
		p.watcher.Kill()
	}
	if p.stopFeed != nil {
		p.stopFeed()
	}
	if p.mesh != nil {
		if leave {
			_ = p.mesh.Stop(ctx)
		} else {
			p.mesh.Kill()
		}
	}
	p.log.Info("worker pool stopped", "killed", p.killed.Load())
}

func (p *Pool) client(o Origin) *mqnode.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.clientLocked(o)
}

func (p *Pool) ackerFor(o Origin) *acker {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.ackers[o]
	if a == nil {
		a = newAcker(p.clientLocked(o), p.log)
		p.ackers[o] = a
	}
	return a
}

func (p *Pool) clientLocked(o Origin) *mqnode.Client {
	c := p.clients[o]
	if c == nil {
		c = mqnode.NewClient(p.nc, o.IDC, o.Node)
		p.clients[o] = c
	}
	return c
}

// sleep waits d or until the pool stops fetching; false when stopping.
func (p *Pool) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.fetchStop:
		return false
	}
}
