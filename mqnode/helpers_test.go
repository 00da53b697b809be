package mqnode

import (
	"context"
	"github.com/mqmesh/mqmesh/internal/testlog"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild())
	}
	if os.Getenv(replChildEnv) != "" {
		os.Exit(replChild())
	}
	goleak.VerifyTestMain(m, testlog.LeakOptions()...)
}

// testLogger routes logs to t.Log, so they show only when a test fails.
func testLogger(t testing.TB) *slog.Logger { return testlog.New(t) }

// startNode starts a node in a temp dir (or cfg.DataDir) without a TCP
// listener and returns it with an in-process client; both stop at cleanup.
func startNode(t testing.TB, cfg Config) (*Node, *Client) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Listen == "" {
		cfg.Listen = ListenNone
	}
	if cfg.Name == "" {
		cfg.Name = "n1"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.CPUSampler == nil {
		cfg.Throttle.CPU.Disabled = true // see testlog.NoCPUThrottle
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := n.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if err := n.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return n, c
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually waits for cond (testlog.Eventually).
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	testlog.Eventually(t, within, what, cond)
}
