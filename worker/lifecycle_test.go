package worker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/internal/lifecycle"
	"github.com/mqmesh/mqmesh/internal/lifecycle/lifecycletest"
	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
)

func TestPoolKeepsTheLifecycleContract(t *testing.T) {
	// The pools' handlers: "busy" blocks until its context ends, so a
	// graceful stop of a busy pool can only end at its deadline.
	var (
		mu      sync.Mutex
		running = map[*Pool]chan struct{}{}
		singles = map[*Pool]*single{}
	)
	newPoolWith := func(t *testing.T, m *mesh.Config) *Pool {
		s := startSingle(t)
		p := newPool(t, s, Config{Mesh: m, Lease: time.Minute})
		// The connections are the caller's, with their goroutines: one
		// request on each makes it start its reply subscription now, not
		// during the test.
		for _, c := range []*mqnode.Client{mqnode.NewClient(p.nc, "a", "n1"), s.c} {
			if _, err := c.Info(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		started := make(chan struct{}, 1)
		must(t, p.Handle("busy", func(ctx context.Context, _ *Task) Result {
			select {
			case started <- struct{}{}:
			default:
			}
			<-ctx.Done()
			return Retry(ctx.Err(), 0)
		}))
		mu.Lock()
		running[p], singles[p] = started, s
		mu.Unlock()
		return p
	}
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Part { return newPoolWith(t, nil) },
		// The pool joins the mesh on a gossip port that is taken.
		FailStart: func(t *testing.T) (lifecycle.Part, func()) {
			port, _, free := lifecycletest.TakePort(t)
			m := &mesh.Config{BindAddr: "127.0.0.1", BindPort: port, Profile: mesh.ProfileLocal, Logger: testlog.New(t)}
			return newPoolWith(t, m), free
		},
		Busy: func(t *testing.T, part lifecycle.Part) {
			p := part.(*Pool)
			mu.Lock()
			s, started := singles[p], running[p]
			mu.Unlock()
			s.enqueue(t, "busy", 1)
			select {
			case <-started:
			case <-time.After(20 * time.Second):
				t.Fatal("the busy handler did not start")
			}
		},
	})
}
