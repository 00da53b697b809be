package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/internal/meshtest"
	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/throttle"
	"github.com/mqmesh/mqmesh/worker"
)

// Queue is the queue the simulated load uses.
const Queue = "push"

// simHost is one host of the simulated mesh.
type simHost struct {
	index      int
	idc, name  string
	workerOnly bool
	dataDir    string
	slots      int

	mu      sync.Mutex
	node    *meshtest.Node // lifecycle part of the node (agent, client)
	agent   *mesh.NodeAgent
	client  *mqnode.Client
	worker  *hostPool // lifecycle part of the pool (pool, its conn)
	pool    *worker.Pool
	gen     int
	nodeUp  atomic.Bool
	poolUp  atomic.Bool
	removed atomic.Bool
}

// run is one mode of a scenario.
type run struct {
	s          Scenario
	mode       string
	log        *slog.Logger
	dir        string
	hosts      []*simHost
	backends   *backends
	metrics    *metrics
	filters    backlog.Filters
	progress   func(mode string, s Sample)
	noticeBase atomic.Uint64 // notices of pools that were replaced
	links      *links
	hog        hog                 // cpu-hog's burners
	cpu        throttle.CPUSampler // for the samples: what the throttle reads
	bg         sync.WaitGroup      // host removals in progress
	deploy     *deploys            // bad deploys and replays (replay.go)
	// sec are the run's secrets (made in dir): every node, pool and link
	// runs secured, as a real mesh does.
	sec *secrets.Set
	// cluster runs the hosts' nodes: the in-process mesh the tests use.
	cluster *meshtest.Cluster
}

// Options tune a run.
type Options struct {
	// Dir holds the Badger stores, one subdirectory per mode (a temp dir
	// per mode when empty); each mode's is removed when it ends.
	Dir string
	// Logger receives the simulated components' logs (default: warnings
	// and errors on stderr).
	Logger *slog.Logger
	// Progress, when set, is called with every sample.
	Progress func(mode string, s Sample)
}

func newRun(s Scenario, mode string, opt Options) (*run, error) {
	// The mode's own directory, removed by teardown.
	dir := filepath.Join(opt.Dir, mode)
	if opt.Dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "mqmesh-sim-"+mode+"-*"); err != nil {
			return nil, err
		}
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	r := &run{s: s, mode: mode, log: log, dir: dir, backends: newBackends(s), metrics: newMetrics(), deploy: newDeploys(), progress: opt.Progress, links: newLinks(), cpu: cpuSampler(s.Throttle.CPU.Sampler)}
	f, err := filterFor(s.Filter)
	if err != nil {
		return nil, err
	}
	r.filters = f
	secDir := filepath.Join(dir, "secrets")
	if err := secrets.Init(secDir, false); err != nil {
		return nil, err
	}
	if r.sec, err = secrets.Load(secDir); err != nil {
		return nil, err
	}
	if r.cluster, err = meshtest.Start(context.Background(), meshtest.Options{Dir: dir, Security: r.sec, Logger: log}); err != nil {
		return nil, err
	}
	i := 0
	for _, idc := range s.Topology.IDCs {
		for j := 1; j <= idc.Hosts; j++ {
			r.hosts = append(r.hosts, &simHost{index: i, idc: idc.Name, name: HostName(idc.Name, j), slots: idc.Slots, dataDir: filepath.Join(dir, HostName(idc.Name, j))})
			i++
		}
		for j := 1; j <= idc.WorkerHosts; j++ {
			r.hosts = append(r.hosts, &simHost{index: i, idc: idc.Name, name: WorkerHostName(idc.Name, j), slots: idc.Slots, workerOnly: true})
			i++
		}
	}
	return r, nil
}

func (r *run) host(name string) *simHost {
	for _, h := range r.hosts {
		if h.name == name {
			return h
		}
	}
	return nil
}

// startNode starts (or restarts) the node of a host: a node of the run's
// cluster, joining through the live nodes (never h's own dead address).
func (r *run) startNode(ctx context.Context, h *simHost) error {
	gwListen, gwAdvertise, err := r.links.gateway(h.name)
	if err != nil {
		return err
	}
	cfg := r.cluster.NodeConfig(h.idc, h.name)
	cfg.GatewayListen, cfg.GatewayAdvertise, cfg.Host = gwListen, gwAdvertise, h.name
	cfg.Node.DataDir, cfg.Node.Durability = h.dataDir, mqnode.Durability(r.s.Durability)
	// Every simulated host shares this machine's CPU, so its usage says
	// nothing of one host: the CPU throttle is off unless the scenario
	// enables it (see Throttle).
	cfg.Node.Throttle, cfg.Node.CPUSampler = r.s.Throttle.Config(r.mode), cpuSampler(r.s.Throttle.CPU.Sampler)
	cfg.Node.QueueDefaults = mqnode.QueueConfig{BackoffBase: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond, MaxAttempts: 1000,
		KeepSettled: r.s.keepSettled()}
	cfg.Node.Replicas, cfg.Node.Buddy = replicasOf(r.mode), simBuddy
	n, err := r.cluster.StartNode(ctx, cfg)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.node, h.agent, h.client = n, n.Agent(), n.Client()
	h.mu.Unlock()
	h.nodeUp.Store(true)
	return nil
}

// nodeOf returns the agent a host's pool connects to: its own node, or
// (worker-only host) the first live node of its IDC.
func (r *run) nodeOf(h *simHost) *simHost {
	if !h.workerOnly {
		return h
	}
	for _, o := range r.hosts {
		if o.idc == h.idc && !o.workerOnly && o.nodeUp.Load() {
			return o
		}
	}
	return nil
}

func (r *run) startPool(ctx context.Context, h *simHost) error {
	nh := r.nodeOf(h)
	if nh == nil || !nh.nodeUp.Load() {
		return fmt.Errorf("no node for the pool of %s", h.name)
	}
	nh.mu.Lock()
	node := nh.node
	nh.mu.Unlock()
	h.mu.Lock()
	h.gen++
	gen := h.gen
	h.mu.Unlock()
	cfg := worker.Config{
		ID: fmt.Sprintf("pool-%s-g%d", h.name, gen), IDC: h.idc, Host: h.name, Slots: h.slots, Seed: r.s.Seed + uint64(h.index)*7919 + uint64(gen),
		Lease: 10 * time.Second, Mesh: r.cluster.WorkerMesh(),
		Logger: r.log,
	}
	if !h.workerOnly {
		cfg.Node = h.name
	}
	f := r.filters
	if r.mode == ModeBaseline {
		cfg.Policy.LocalOnly = true
		f = mustFilter("local-only")
		if h.workerOnly {
			// A worker-only host has no node of its own: in the baseline it
			// serves the node it is attached to.
			cfg.Node = nh.name
		}
	}
	if cfg.Node == "" {
		// No node of its own: no local tier. A copy, so the run's filters
		// (shared by every pool) keep theirs.
		f = backlog.Filters{Tiers: maps.Clone(f.Tiers)}
		delete(f.Tiers, "local")
	}
	cfg.Filters = &f
	hp := newHostPool(h.name, func() (*nats.Conn, error) { return r.cluster.Connect(node, secrets.RoleWorker) },
		func(nc *nats.Conn) (*worker.Pool, error) {
			p, err := worker.New(nc, cfg)
			if err == nil {
				err = p.Handle(Queue, r.handler(h))
			}
			return p, err
		})
	if err := hp.Start(ctx); err != nil {
		return err
	}
	h.mu.Lock()
	h.worker, h.pool = hp, hp.pool
	h.mu.Unlock()
	h.poolUp.Store(true)
	return nil
}

// stopPool ends a host's pool: crash (no leave) or graceful.
func (r *run) stopPool(h *simHost, graceful bool) {
	h.mu.Lock()
	hp := h.worker
	h.worker, h.pool = nil, nil
	h.mu.Unlock()
	if hp == nil {
		return
	}
	h.poolUp.Store(false)
	r.noticeBase.Add(noticesOf(hp.pool))
	if graceful {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = hp.Stop(ctx)
		cancel()
	} else {
		hp.Kill()
	}
}

func (r *run) stopNode(h *simHost, graceful bool) {
	h.mu.Lock()
	n := h.node
	h.node, h.agent, h.client = nil, nil, nil
	h.mu.Unlock()
	if n == nil {
		return
	}
	h.nodeUp.Store(false)
	if graceful {
		_ = n.Stop(context.Background())
	} else {
		n.Kill()
	}
}

// noticesOf counts the backlog messages a pool's view took: notices and
// summaries (one message each).
func noticesOf(p *worker.Pool) uint64 {
	st := p.View().Stats()
	n := st.Summaries
	for _, a := range st.Accepted {
		n += a
	}
	return n
}

// setup starts every node, waits for the mesh, then starts every pool.
func (r *run) setup(ctx context.Context) error {
	for _, h := range r.hosts {
		if !h.workerOnly {
			if err := r.startNode(ctx, h); err != nil {
				return err
			}
		}
	}
	if err := r.cluster.WaitFormed(ctx, 30*time.Second); err != nil {
		return err
	}
	errs := make([]error, len(r.hosts))
	var wg sync.WaitGroup
	for i, h := range r.hosts {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = r.startPool(ctx, h) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// teardown stops everything (abruptly: the run is over, nobody needs to
// hear the goodbyes) and removes the run's data.
func (r *run) teardown() {
	r.hog.calm()
	r.bg.Wait()
	var wg sync.WaitGroup
	for _, h := range r.hosts {
		wg.Add(1)
		go func(h *simHost) { defer wg.Done(); r.stopPool(h, false) }(h)
	}
	wg.Wait()
	for _, h := range r.hosts {
		wg.Add(1)
		go func(h *simHost) { defer wg.Done(); r.stopNode(h, false) }(h)
	}
	wg.Wait()
	r.links.close()
	_ = os.RemoveAll(r.dir)
}
