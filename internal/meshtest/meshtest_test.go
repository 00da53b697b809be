package meshtest

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mqmesh/mqmesh/internal/lifecycle"
	"github.com/mqmesh/mqmesh/internal/lifecycle/lifecycletest"
	"github.com/mqmesh/mqmesh/internal/testlog"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testlog.LeakOptions()...)
}

func TestNodeKeepsTheLifecycleContract(t *testing.T) {
	c := New(t, Options{})
	node := func(t *testing.T, listen string) *Node {
		cfg := c.NodeConfig("idcA", "a1")
		cfg.Node.DataDir, cfg.Node.Listen, cfg.Node.Logger = t.TempDir(), listen, testlog.New(t)
		return NewNode(cfg)
	}
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Part { return node(t, "127.0.0.1:0") },
		// Its client port is taken.
		FailStart: func(t *testing.T) (lifecycle.Part, func()) {
			_, addr, free := lifecycletest.TakePort(t)
			return node(t, addr), free
		},
	})
}

// TestClusterFormsSecuredAndRestarts: 2 IDCs × 2 nodes see each other,
// reach each other over routes and gateways with TLS on, and a killed node
// restarted on its data dir without a seed rejoins the one mesh.
func TestClusterFormsSecuredAndRestarts(t *testing.T) {
	c := New(t, Options{IDCs: 2, NodesPerIDC: 2})
	if c.Security() == nil || c.Nodes[0].Agent().Node.Security() == nil {
		t.Fatal("the cluster runs without security")
	}
	ctx := context.Background()
	testlog.Eventually(t, 30*time.Second, "every node to reach every node", func() bool {
		for _, from := range c.Nodes {
			for _, to := range c.Nodes {
				if from != to && !Reaches(ctx, from, to) {
					return false
				}
			}
		}
		return true
	})
	b2 := c.Node("b2")
	b2.Kill()
	back, err := c.Restart(ctx, b2, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Node("b2") != back || len(c.Running()) != 4 {
		t.Fatalf("restart not in place: %v running", len(c.Running()))
	}
	if err := c.WaitFormed(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}
