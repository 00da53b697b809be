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
	"github.com/mqmesh/mqmesh/internal/meshtest"
	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/worker"
)

// The simulator's node of a host is a meshtest.Node (its conformance test
// is in package meshtest); its pool is a hostPool.
func TestSimHostPoolKeepsTheLifecycleContract(t *testing.T) {
	newPool := func(t *testing.T, refuse *atomic.Bool) *hostPool {
		c := meshtest.New(t, meshtest.Options{IDCs: 1, NodesPerIDC: 1})
		n := c.Nodes[0]
		dial := func() (*nats.Conn, error) {
			if refuse.Load() {
				return nil, errors.New("node refuses connections")
			}
			return c.Connect(n, secrets.RoleWorker)
		}
		return newHostPool(n.Name, dial, func(nc *nats.Conn) (*worker.Pool, error) {
			p, err := worker.New(nc, worker.Config{ID: "pool-" + n.Name, IDC: n.IDC, Node: n.Name, Host: n.Name, Slots: 2, Lease: 10 * time.Second,
				Mesh: c.WorkerMesh(), Logger: testlog.New(t)})
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
