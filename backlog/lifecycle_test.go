package backlog_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/internal/lifecycle"
	"github.com/mqmesh/mqmesh/internal/lifecycle/lifecycletest"
	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

// conn starts a node without a listener and returns an in-process
// connection to it; both end at cleanup.
func conn(t *testing.T) (*mqnode.Node, *nats.Conn) {
	t.Helper()
	n, err := mqnode.New(mqnode.Config{Name: "n1", IDC: "sh", DataDir: t.TempDir(), Listen: mqnode.ListenNone, Logger: logger(t), Throttle: testlog.NoCPUThrottle})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	nc, err := n.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); n.Kill() })
	return n, nc
}

func TestPublisherKeepsTheLifecycleContract(t *testing.T) {
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Part {
			n, nc := conn(t)
			p, err := backlog.NewPublisher(nc, backlog.PublisherConfig{IDC: "sh", Node: "n1", Source: n.Levels, Logger: logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			return p
		},
	})
}

func TestWatcherKeepsTheLifecycleContract(t *testing.T) {
	newWatcher := func(t *testing.T, file string) *backlog.Watcher {
		_, nc := conn(t)
		return backlog.NewWatcher(nc, backlog.NewView(nil), backlog.WatcherConfig{IDC: "sh", Node: "n1", Filters: backlog.DefaultFilters(),
			FilterFile: file, Logger: logger(t)})
	}
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Part { return newWatcher(t, "") },
		// Its filter file does not exist yet.
		FailStart: func(t *testing.T) (lifecycle.Part, func()) {
			path := filepath.Join(t.TempDir(), "filters.yaml")
			return newWatcher(t, path), func() {
				b, err := os.ReadFile("../configs/filters/local-idc.yaml")
				if err == nil {
					err = os.WriteFile(path, b, 0o644)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
		},
	})
}
