package sim

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/internal/lifecycle"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/worker"
)

// hostNode is a simulated host's node: a mesh node agent and the client the
// simulated producers use. It keeps the lifecycle contract (package
// internal/lifecycle): Kill is a host crash (no leave).
type hostNode struct {
	name   string
	cfg    mesh.NodeAgentConfig
	life   lifecycle.Guard
	agent  *mesh.NodeAgent
	client *mqnode.Client
}

func newHostNode(name string, cfg mesh.NodeAgentConfig) *hostNode {
	n := &hostNode{name: name, cfg: cfg}
	n.life.Name = "sim: node " + name
	return n
}

// Start builds the agent and starts it (each attempt with a fresh agent, so
// a failed Start may be retried).
func (n *hostNode) Start(ctx context.Context) error {
	return n.life.Start(ctx, func() error {
		a, err := mesh.NewNodeAgent(n.cfg)
		if err != nil {
			return fmt.Errorf("node %s: %w", n.name, err)
		}
		if err := a.Start(ctx); err != nil {
			return fmt.Errorf("start node %s: %w", n.name, err)
		}
		c, err := a.Node.Client()
		if err != nil {
			a.Kill()
			return fmt.Errorf("client of node %s: %w", n.name, err)
		}
		n.agent, n.client = a, c
		return nil
	})
}

func (n *hostNode) Stop(ctx context.Context) error {
	return n.life.Stop(func() error {
		n.client.Close()
		return n.agent.Stop(ctx)
	})
}

func (n *hostNode) Kill() {
	n.life.Kill(func() {
		n.client.Close()
		n.agent.Kill()
	})
}

// hostPool is a simulated host's worker pool with its own connection to
// a node. It keeps the lifecycle contract: Kill is a worker crash (no
// leave, no acks), Stop a graceful shutdown.
type hostPool struct {
	name string
	life lifecycle.Guard
	dial func() (*nats.Conn, error)
	make func(*nats.Conn) (*worker.Pool, error)
	nc   *nats.Conn
	pool *worker.Pool
}

func newHostPool(name string, dial func() (*nats.Conn, error), mk func(*nats.Conn) (*worker.Pool, error)) *hostPool {
	p := &hostPool{name: name, dial: dial, make: mk}
	p.life.Name = "sim: pool " + name
	return p
}

func (p *hostPool) Start(ctx context.Context) error {
	return p.life.Start(ctx, func() error {
		nc, err := p.dial()
		if err != nil {
			return fmt.Errorf("pool of %s: connect: %w", p.name, err)
		}
		pool, err := p.make(nc)
		if err == nil {
			err = pool.Start(ctx)
		}
		if err != nil {
			nc.Close()
			return fmt.Errorf("start pool %s: %w", p.name, err)
		}
		p.nc, p.pool = nc, pool
		return nil
	})
}

func (p *hostPool) Stop(ctx context.Context) error {
	return p.life.Stop(func() error {
		err := p.pool.Stop(ctx)
		p.nc.Close()
		return err
	})
}

func (p *hostPool) Kill() {
	p.life.Kill(func() {
		p.pool.Kill()
		p.nc.Close()
	})
}
