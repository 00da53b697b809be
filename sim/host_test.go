package sim

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/internal/lifecycle"
	"github.com/mqmesh/mqmesh/internal/lifecycle/lifecycletest"
	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/internal/secrets/secretstest"
	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/worker"
)

func testHostNode(t *testing.T, listen string) *hostNode {
	return newHostNode("a-1", mesh.NodeAgentConfig{ClusterListen: "127.0.0.1:0", GatewayListen: "127.0.0.1:0",
		Node: mqnode.Config{Name: "a-1", IDC: "a", DataDir: t.TempDir(), Listen: listen, Logger: testlog.New(t),
			Throttle: testlog.NoCPUThrottle, Security: secretstest.Set(t)},
		Mesh: mesh.Config{BindAddr: "127.0.0.1", BindPort: mesh.RandomPort, Profile: mesh.ProfileLocal},
		Host: "a-1",
	})
}

func TestSimHostNodeKeepsTheLifecycleContract(t *testing.T) {
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Part { return testHostNode(t, "127.0.0.1:0") },
		// Its client port is taken.
		FailStart: func(t *testing.T) (lifecycle.Part, func()) {
			_, addr, free := lifecycletest.TakePort(t)
			return testHostNode(t, addr), free
		},
	})
}

func TestSimHostPoolKeepsTheLifecycleContract(t *testing.T) {
	newPool := func(t *testing.T, refuse *atomic.Bool) *hostPool {
		n := testHostNode(t, "127.0.0.1:0")
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Kill)
		auth := secretstest.InProcess(t, secrets.RoleWorker)
		dial := func() (*nats.Conn, error) {
			if refuse.Load() {
				return nil, errors.New("node refuses connections")
			}
			return n.agent.Node.Connect(auth...)
		}
		return newHostPool("a-1", dial, func(nc *nats.Conn) (*worker.Pool, error) {
			p, err := worker.New(nc, worker.Config{ID: "pool-a-1", IDC: "a", Node: "a-1", Host: "a-1", Slots: 2, Lease: 10 * time.Second,
				Mesh: &mesh.Config{BindAddr: "127.0.0.1", Seeds: []string{n.agent.Mesh.GossipAddr()}, Profile: mesh.ProfileLocal,
					Keyring: secretstest.GossipKeys(t)},
				Logger: testlog.New(t)})
			if err == nil {
				err = p.Handle(Queue, func(context.Context, *worker.Task) worker.Result { return worker.Done() })
			}
			return p, err
		})
	}
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Part { return newPool(t, new(atomic.Bool)) },
		// Its node refuses the connection at first.
		FailStart: func(t *testing.T) (lifecycle.Part, func()) {
			refuse := new(atomic.Bool)
			refuse.Store(true)
			return newPool(t, refuse), func() { refuse.Store(false) }
		},
	})
}
