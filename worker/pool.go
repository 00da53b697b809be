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
	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
)

// Pool runs handlers for queues with a fixed number of slots, pulling from
// its own node first and helping other nodes with spare capacity.
//
// Lifecycle: New, Handle for each queue, Start once; then Stop (graceful:
// stop pulling, let running handlers finish and ack) or Kill (hard: cancel
// running handlers; their tasks come back through lease release). Both are
// safe twice.
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

	mu      sync.Mutex
	clients map[Origin]*mqnode.Client
	ackers  map[Origin]*acker
	started bool

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
	once      sync.Once

	stats   counters
	metrics *poolMetrics // histograms (metrics.go)
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
	if p.started {
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
// starts pulling.
func (p *Pool) Start(ctx context.Context) error {
	p.mu.Lock()
	if p.started {
		p.mu.Unlock()
		return errors.New("worker: Start called twice")
	}
	p.started = true
	p.mu.Unlock()
	if len(p.handlers) == 0 {
		return errors.New("worker: no handlers registered")
	}
	p.watcher = backlog.NewWatcher(p.nc, p.view, p.cfg.IDC, p.cfg.Node, p.cfg.Logger)
	var err error
	switch {
	case p.cfg.FilterFile != "":
		err = p.watcher.WatchFile(p.cfg.FilterFile)
	case p.cfg.Filters != nil:
		err = p.watcher.Apply(*p.cfg.Filters)
	default:
		f := backlog.DefaultFilters()
		if p.cfg.Node == "" {
			delete(f.Tiers, "local")
		}
		err = p.watcher.Apply(f)
	}
	if err != nil {
		p.watcher.Close()
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
			p.watcher.Close()
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
// to be sent (or ctx to end), then leaves the mesh.
func (p *Pool) Stop(ctx context.Context) error {
	var err error
	p.once.Do(func() {
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
		p.teardown(true)
	})
	return err
}

// Kill stops at once: running handlers are cancelled and not acked; their
// tasks come back when the nodes release this pool's leases (it leaves the
// mesh) or the leases expire.
func (p *Pool) Kill() { p.stopHard(true) }

// Crash is Kill without a graceful leave, as if the process died: nodes
// learn it when gossip detects the failure. For the simulator and tests.
func (p *Pool) Crash() { p.stopHard(false) }

// stopHard cancels every handler, waits for the loops to end and tears
// down, leaving the mesh gracefully or not.
func (p *Pool) stopHard(leave bool) {
	p.once.Do(func() {
		p.killed.Store(true)
		p.cancelRun()
		close(p.fetchStop)
		p.fetchWG.Wait()
		p.runWG.Wait()
		p.teardown(leave)
	})
}

func (p *Pool) teardown(leave bool) {
	p.cancelRun()
	p.mu.Lock()
	ackers := p.ackers
	p.ackers = map[Origin]*acker{}
	p.mu.Unlock()
	for _, a := range ackers {
		a.close()
	}
	if p.watcher != nil {
		p.watcher.Close()
	}
	if p.stopFeed != nil {
		p.stopFeed()
	}
	if p.mesh != nil {
		if leave {
			_ = p.mesh.Leave(2 * time.Second)
		} else {
			_ = p.mesh.Shutdown()
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
