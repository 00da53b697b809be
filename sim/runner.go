package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/backlog"
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
	agent   *mesh.NodeAgent
	client  *mqnode.Client
	poolNC  *nats.Conn
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

// startNode starts (or restarts) the node of a host.
func (r *run) startNode(ctx context.Context, h *simHost) error {
	seeds := r.seeds(h)
	gwListen, gwAdvertise, err := r.links.gateway(h.name)
	if err != nil {
		return err
	}
	a, err := mesh.NewNodeAgent(mesh.NodeAgentConfig{
		GatewayListen: gwListen, GatewayAdvertise: gwAdvertise,
		Node: mqnode.Config{Name: h.name, IDC: h.idc, DataDir: h.dataDir, Listen: "127.0.0.1:0",
			Durability: mqnode.Durability(r.s.Durability), Logger: r.log,
			// Every simulated host shares this machine's CPU, so its usage
			// says nothing of one host: the CPU throttle is off unless the
			// scenario enables it (see Throttle).
			Throttle: r.s.Throttle.Config(r.mode), CPUSampler: cpuSampler(r.s.Throttle.CPU.Sampler),
			QueueDefaults: mqnode.QueueConfig{BackoffBase: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond, MaxAttempts: 1000,
				KeepSettled: r.s.keepSettled()},
			Security: r.sec, Replicas: replicasOf(r.mode), Buddy: simBuddy},
		Mesh: mesh.Config{BindAddr: "127.0.0.1", Seeds: seeds, Profile: mesh.ProfileLocal, Logger: r.log},
		Host: h.name,
	})
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return fmt.Errorf("start node %s: %w", h.name, err)
	}
	c, err := a.Node.Client()
	if err != nil {
		_ = a.Kill()
		return fmt.Errorf("client of node %s: %w", h.name, err)
	}
	h.mu.Lock()
	h.agent, h.client = a, c
	h.mu.Unlock()
	h.nodeUp.Store(true)

	return nil
}

// seeds are the gossip addresses of the live nodes other than h's own (a
// restarted host must not name its own dead address).
func (r *run) seeds(h *simHost) []string {
	var out []string
	for _, o := range r.hosts {
		if o == h || o.workerOnly || !o.nodeUp.Load() {
			continue
		}
		o.mu.Lock()
		if o.agent != nil {
			out = append(out, o.agent.Mesh.GossipAddr())
		}
		o.mu.Unlock()
		if len(out) == 3 {
			break
		}
	}
	return out
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
	agent := nh.agent
	nh.mu.Unlock()
	auth, err := r.sec.InProcessOptions(secrets.RoleWorker)
	if err != nil {
		return err
	}
	keys, err := r.sec.GossipKeys()
	if err != nil {
		return err
	}
	nc, err := agent.Node.Connect(auth...)
	if err != nil {
		return fmt.Errorf("pool of %s: connect to node %s: %w", h.name, nh.name, err)
	}
	h.mu.Lock()
	h.gen++
	gen := h.gen
	h.mu.Unlock()
	cfg := worker.Config{
		ID: fmt.Sprintf("pool-%s-g%d", h.name, gen), IDC: h.idc, Host: h.name, Slots: h.slots, Seed: r.s.Seed + uint64(h.index)*7919 + uint64(gen),
		Lease: 10 * time.Second, Mesh: &mesh.Config{BindAddr: "127.0.0.1", Seeds: r.seeds(h), Profile: mesh.ProfileLocal, Logger: r.log, Keyring: keys},
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
	if h.workerOnly {
		delete(f.Tiers, "local")
	}
	cfg.Filters = &f
	p, err := worker.New(nc, cfg)
	if err == nil {
		err = p.Handle(Queue, r.handler(h))
	}
	if err == nil {
		err = p.Start(ctx)
	}
	if err != nil {
		nc.Close()
		return fmt.Errorf("start pool %s: %w", h.name, err)
	}
	h.mu.Lock()
	h.pool, h.poolNC = p, nc
	h.mu.Unlock()
	h.poolUp.Store(true)
	return nil
}

// stopPool ends a host's pool: crash (no leave) or graceful.
func (r *run) stopPool(h *simHost, graceful bool) {
	h.mu.Lock()
	p, nc := h.pool, h.poolNC
	h.pool, h.poolNC = nil, nil
	h.mu.Unlock()
	if p == nil {
		return
	}
	h.poolUp.Store(false)
	r.noticeBase.Add(noticesOf(p))
	if graceful {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = p.Stop(ctx)
		cancel()
	} else {
		p.Crash()
	}
	nc.Close()
}

func (r *run) stopNode(h *simHost, graceful bool) {
	h.mu.Lock()
	a, c := h.agent, h.client
	h.agent, h.client = nil, nil
	h.mu.Unlock()
	if a == nil {
		return
	}
	h.nodeUp.Store(false)
	c.Close()
	if graceful {
		_ = a.Stop(context.Background())
	} else {
		_ = a.Kill()
	}
}

func noticesOf(p *worker.Pool) uint64 {
	st := p.View().Stats()
	var n uint64
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
	nodes := 0
	for _, h := range r.hosts {
		if !h.workerOnly {
			nodes++
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok := true
		for _, h := range r.hosts {
			if !h.workerOnly && len(h.agent.Mesh.Alive(func(m mesh.Member) bool { return m.Meta.Role == mesh.RoleNode })) != nodes {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("the mesh did not form within 30s")
		}
		time.Sleep(20 * time.Millisecond)
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
