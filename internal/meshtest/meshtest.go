// Package meshtest runs a mesh in one process, on loopback, with the real
// parts (mesh.NodeAgent: memberlist gossip, embedded NATS with routes and
// gateways, Badger stores) and security on, as a real mesh runs: TLS on
// routes and gateways, role credentials, an encrypted gossip keyring. It
// is the one in-process cluster of the mesh, backlog and worker tests, the
// broadcast benchmark and the simulator.
//
// In a test:
//
//	c := meshtest.New(t, meshtest.Options{IDCs: 2, NodesPerIDC: 2})
//	a1 := c.Nodes[0]                     // idcA/a1; a1.Agent(), a1.Client()
//	nc := c.Connect(t, a1, secrets.RoleWorker)
//	pool, _ := worker.New(nc, worker.Config{..., Mesh: c.WorkerMesh()})
//
// Outside tests (the benchmark, the simulator) Start and Cluster.Stop do
// the same with errors instead of t.Fatal. Nodes keep the lifecycle
// contract (Node); the cluster adds nodes (AddNode), builds restarts on
// the same data dir (Restart) and waits for views to converge (WaitFormed).
package meshtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/throttle"
)

// Options shape a cluster. Zero fields take the defaults noted.
type Options struct {
	// IDCs × NodesPerIDC nodes are started by Start: IDCs idcA, idcB, ...,
	// nodes a1, a2, ... in idcA, b1, ... in idcB (IDCName, NodeName).
	// Zero: no node (add them with AddNode).
	IDCs, NodesPerIDC int
	// Dir holds the nodes' data dirs (one per node name). Empty: a
	// temporary directory, removed by Stop.
	Dir string
	// Security is the mesh's secrets. Nil: a fresh set made in Dir
	// (meshtest.New uses secretstest's shared set instead).
	Security *secrets.Set
	// Insecure runs without secrets (a test of the insecure mode).
	Insecure bool
	// Logger receives every component's logs. Default: discarded.
	Logger *slog.Logger
	// Durability of the nodes. Default async (tests need speed, not fsync).
	Durability mqnode.Durability
	// Node adjusts each node's agent config before it starts (queue
	// defaults, throttle, gateway proxies...).
	Node func(*mesh.NodeAgentConfig)
	// FormWithin bounds WaitFormed at Start. Default 30s.
	FormWithin time.Duration
	// Seeds is how many seeds a new node names: the nodes started last,
	// newest first. Default 3; 1 makes a chain (each node knows only the
	// one before it, and gossip must spread the rest).
	Seeds int
}

// Cluster is a mesh of Nodes in this process.
type Cluster struct {
	opts    Options
	sec     *secrets.Set
	tempDir bool

	mu    sync.Mutex
	Nodes []*Node // in start order; restarts replace their entry
}

// IDCName is the name of the i-th IDC (0: idcA).
func IDCName(i int) string { return "idc" + string(rune('A'+i)) }

// NodeName is the name of the j-th node of the i-th IDC (0, 0: a1).
func NodeName(i, j int) string { return fmt.Sprintf("%c%d", 'a'+i, j+1) }

// Start starts the IDCs × NodesPerIDC nodes, one after the other (each
// joins through the nodes already up), and waits until every node sees
// every node alive. On error it stops what it started.
func Start(ctx context.Context, o Options) (c *Cluster, err error) {
	if o.Durability == "" {
		o.Durability = mqnode.DurabilityAsync
	}
	if o.FormWithin == 0 {
		o.FormWithin = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Seeds == 0 {
		o.Seeds = 3
	}
	c = &Cluster{opts: o}
	if c.opts.Dir == "" {
		if c.opts.Dir, err = os.MkdirTemp("", "meshtest-"); err != nil {
			return nil, err
		}
		c.tempDir = true
	}
	defer func() {
		if err != nil {
			c.Kill()
			c = nil
		}
	}()
	c.sec = o.Security
	if c.sec == nil && !o.Insecure {
		dir := filepath.Join(c.opts.Dir, "secrets")
		if err := secrets.Init(dir, false); err != nil {
			return c, err
		}
		if c.sec, err = secrets.Load(dir); err != nil {
			return c, err
		}
	}
	for i := range o.IDCs {
		for j := range o.NodesPerIDC {
			if _, err := c.AddNode(ctx, IDCName(i), NodeName(i, j)); err != nil {
				return c, err
			}
		}
	}
	if len(c.Nodes) > 0 {
		if err := c.WaitFormed(ctx, o.FormWithin); err != nil {
			return c, err
		}
	}
	return c, nil
}

// Security is the cluster's secrets (nil when insecure).
func (c *Cluster) Security() *secrets.Set { return c.sec }

// Dir is the directory of the nodes' data dirs.
func (c *Cluster) Dir() string { return c.opts.Dir }

// NodeConfig is the agent config a node named name of idc gets: loopback,
// free ports, the local gossip profile, the cluster's secrets, seeds
// (Seeds), then Options.Node.
func (c *Cluster) NodeConfig(idc, name string) mesh.NodeAgentConfig {
	cfg := mesh.NodeAgentConfig{
		Node: mqnode.Config{Name: name, IDC: idc, DataDir: filepath.Join(c.opts.Dir, name), Listen: "127.0.0.1:0",
			Durability: c.opts.Durability, Logger: c.opts.Logger, Security: c.sec,
			// Every node shares this machine's CPU: its usage says nothing
			// of one node.
			Throttle: throttle.Config{CPU: throttle.CPUConfig{Disabled: true}}},
		Mesh: mesh.Config{BindAddr: "127.0.0.1", BindPort: mesh.RandomPort, Seeds: c.Seeds(nil), Profile: mesh.ProfileLocal,
			Logger: c.opts.Logger},
		ClusterListen: "127.0.0.1:0", GatewayListen: "127.0.0.1:0",
		Host: "host-" + name,
	}
	if c.opts.Node != nil {
		c.opts.Node(&cfg)
	}
	return cfg
}

// AddNode starts a node named name in idc (NodeConfig) and adds it to
// Nodes.
func (c *Cluster) AddNode(ctx context.Context, idc, name string) (*Node, error) {
	return c.StartNode(ctx, c.NodeConfig(idc, name))
}

// StartNode starts a node with cfg (usually NodeConfig's, adjusted) and
// puts it in Nodes, in the place of a node of the same name (a restart),
// else last.
func (c *Cluster) StartNode(ctx context.Context, cfg mesh.NodeAgentConfig) (*Node, error) {
	n := NewNode(cfg)
	if err := n.Start(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, o := range c.Nodes {
		if o.Name == n.Name {
			c.Nodes[i] = n
			return n, nil
		}
	}
	c.Nodes = append(c.Nodes, n)
	return n, nil
}

// Restart starts a new node in the place of old (stopped or killed) on
// the same data dir and config, with the seeds of now (none when noSeed:
// it must rejoin through the members it remembers) and, when port is not
// 0, that gossip port (as a restarted host keeps its own).
func (c *Cluster) Restart(ctx context.Context, old *Node, port int, noSeed bool) (*Node, error) {
	cfg := old.Config
	cfg.Mesh.Seeds = c.Seeds(old)
	if noSeed {
		cfg.Mesh.Seeds = nil
	}
	if port != 0 {
		cfg.Mesh.BindPort = port
	}
	return c.StartNode(ctx, cfg)
}

// Node returns the node named name (nil if none).
func (c *Cluster) Node(name string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Running are the nodes started and not stopped.
func (c *Cluster) Running() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, n := range c.Nodes {
		if n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// Seeds are the gossip addresses of up to Options.Seeds running nodes
// other than except, the newest first.
func (c *Cluster) Seeds(except *Node) []string {
	var out []string
	nodes := c.Running()
	for i := len(nodes) - 1; i >= 0; i-- {
		if n := nodes[i]; n != except && len(out) < c.opts.Seeds {
			out = append(out, n.GossipAddr())
		}
	}
	return out
}

// WorkerMesh is the gossip config of a worker pool joining the cluster:
// loopback, a free port, the local profile, the cluster's keyring.
func (c *Cluster) WorkerMesh() *mesh.Config {
	m := &mesh.Config{BindAddr: "127.0.0.1", BindPort: mesh.RandomPort, Seeds: c.Seeds(nil), Profile: mesh.ProfileLocal, Logger: c.opts.Logger}
	if c.sec != nil {
		m.Keyring, _ = c.sec.GossipKeys() // checked when the set loaded
	}
	return m
}

// Connect opens an in-process connection to n as role r (with the
// cluster's credentials; any connection when insecure).
func (c *Cluster) Connect(n *Node, r secrets.Role, opts ...nats.Option) (*nats.Conn, error) {
	if c.sec != nil {
		auth, err := c.sec.InProcessOptions(r)
		if err != nil {
			return nil, err
		}
		opts = append(auth, opts...)
	}
	return n.agent.Node.Connect(opts...)
}

// Formed reports whether every running node sees every running node
// alive (and no other).
func (c *Cluster) Formed() bool {
	nodes := c.Running()
	for _, n := range nodes {
		alive := n.agent.Mesh.Alive(func(m mesh.Member) bool { return m.Meta.Role == mesh.RoleNode })
		if len(alive) != len(nodes) {
			return false
		}
	}
	return true
}

// Reaches reports whether from's NATS server forwards a request to node
// to (over routes or gateways) and to answers it.
func Reaches(ctx context.Context, from, to *Node) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := mqnode.NewClient(from.client.Conn(), to.IDC, to.Name).Info(ctx)
	return err == nil && info.GetName() == to.Name
}

// WaitFormed waits until Formed, at most within.
func (c *Cluster) WaitFormed(ctx context.Context, within time.Duration) error {
	return Wait(ctx, within, "every node to see every node alive", c.Formed)
}

// Wait polls cond every 5 ms until it holds, ctx ends or within passes.
func Wait(ctx context.Context, within time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("meshtest: timed out after %s waiting for %s", within, what)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("meshtest: waiting for %s: %w", what, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// Stop stops the nodes one after the other, newest first, each with a
// graceful leave, and removes a temporary Dir. Not all at once: a member's
// leave reads memberlist's records while memberlist may update them from
// another member's leave.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	nodes := append([]*Node(nil), c.Nodes...)
	c.mu.Unlock()
	var errs []error
	for i := len(nodes) - 1; i >= 0; i-- {
		errs = append(errs, nodes[i].Stop(ctx))
	}
	c.removeDir()
	return errors.Join(errs...)
}

// Kill kills every node at once (no leave) and removes a temporary Dir.
func (c *Cluster) Kill() {
	c.mu.Lock()
	nodes := append([]*Node(nil), c.Nodes...)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.Kill() }()
	}
	wg.Wait()
	c.removeDir()
}

func (c *Cluster) removeDir() {
	if c.tempDir {
		_ = os.RemoveAll(c.opts.Dir)
	}
}
