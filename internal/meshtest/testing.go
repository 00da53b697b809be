package meshtest

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/internal/secrets/secretstest"
)

// T is the part of testing.TB the helpers use (an interface of its own, so
// the simulator and the benchmarks, which use Start, do not link package
// testing).
type T interface {
	secretstest.TB
	Cleanup(func())
}

// New is Start for a test: data under t.TempDir(), secretstest's secrets
// (so secretstest's credentials work on the cluster); it fails t on error
// and stops the cluster at cleanup (gracefully, then kills what is left).
// Give Options.Logger (testlog.New(t)) to see the nodes' logs.
func New(t T, o Options) *Cluster {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Security == nil && !o.Insecure {
		o.Security = secretstest.Set(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("meshtest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Stop(ctx)
		c.Kill()
	})
	return c
}

// MustAdd is AddNode for a test.
func (c *Cluster) MustAdd(t T, idc, name string) *Node {
	t.Helper()
	n, err := c.AddNode(context.Background(), idc, name)
	if err != nil {
		t.Fatalf("meshtest: %v", err)
	}
	return n
}

// MustConnect is Connect for a test; the connection closes at cleanup.
func (c *Cluster) MustConnect(t T, n *Node, r secrets.Role, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := c.Connect(n, r, opts...)
	if err != nil {
		t.Fatalf("meshtest: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}
