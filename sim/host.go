package sim

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/internal/lifecycle"
	"github.com/mqmesh/mqmesh/worker"
)

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
