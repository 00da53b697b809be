// Package lifecycletest is the conformance test of the lifecycle contract
// (package lifecycle). Every long-lived part runs it from its own
// package's tests:
//
//	func TestLifecycle(t *testing.T) {
//		lifecycletest.Run(t, lifecycletest.Harness{
//			New: func(t *testing.T) lifecycle.Part { return newPart(t) },
//		})
//	}
package lifecycletest

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mqmesh/mqmesh/internal/lifecycle"
	"github.com/mqmesh/mqmesh/internal/testlog"
)

// Harness describes the part under test.
type Harness struct {
	// New builds a fresh part, not started, with whatever it needs around
	// it (a node to connect to...) already running: goroutines that exist
	// when New returns are not counted as the part's. New registers the
	// cleanup of those surroundings with t.Cleanup; the part itself is
	// killed by Run at the end of each case.
	New func(t *testing.T) lifecycle.Part
	// FailStart, when set, builds a part whose next Start fails for a real
	// reason (its port is taken, its filter file is missing...) and
	// returns fix, which removes that reason: the Start after fix must
	// succeed. Without it, the failed Start is one with a done ctx.
	FailStart func(t *testing.T) (p lifecycle.Part, fix func())
	// Busy, when set, gives a started part work that a graceful stop
	// waits for and that does not end by itself (a handler that blocks
	// until cancelled): Stop must still return when its ctx ends.
	Busy func(t *testing.T, p lifecycle.Part)
	// StopBound is how long past its ctx's deadline a Stop may take to
	// tear down (default 5s).
	StopBound time.Duration
}

// Run runs every case of the contract against h.
func Run(t *testing.T, h Harness) {
	if h.StopBound == 0 {
		h.StopBound = 5 * time.Second
	}
	part := func(t *testing.T) lifecycle.Part {
		p := h.New(t)
		t.Cleanup(p.Kill)
		return p
	}
	ctx := func(t *testing.T) context.Context {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		return c
	}
	t.Run("SecondStartIsAnError", func(t *testing.T) {
		p := part(t)
		must(t, "start", p.Start(ctx(t)))
		if err := p.Start(ctx(t)); !errors.Is(err, lifecycle.ErrAlreadyStarted) {
			t.Fatalf("second Start: got %v, want ErrAlreadyStarted", err)
		}
		must(t, "stop", p.Stop(ctx(t)))
		if err := p.Start(ctx(t)); !errors.Is(err, lifecycle.ErrStopped) {
			t.Fatalf("Start after Stop: got %v, want ErrStopped", err)
		}
	})
	t.Run("StopBeforeStartIsFine", func(t *testing.T) {
		p := part(t)
		must(t, "stop before start", p.Stop(ctx(t)))
		must(t, "second stop", p.Stop(ctx(t)))
		p.Kill()
		if err := p.Start(ctx(t)); !errors.Is(err, lifecycle.ErrStopped) {
			t.Fatalf("Start after Stop: got %v, want ErrStopped", err)
		}
	})
	t.Run("StopIsIdempotentAndLeavesNoGoroutine", func(t *testing.T) {
		p := part(t)
		base := goleak.IgnoreCurrent()
		must(t, "start", p.Start(ctx(t)))
		must(t, "stop", p.Stop(ctx(t)))
		must(t, "second stop", p.Stop(ctx(t)))
		p.Kill()
		noLeak(t, "after Stop", base)
	})
	t.Run("KillAfterStartLeavesNoGoroutine", func(t *testing.T) {
		p := part(t)
		base := goleak.IgnoreCurrent()
		must(t, "start", p.Start(ctx(t)))
		p.Kill()
		p.Kill()
		must(t, "stop after kill", p.Stop(ctx(t)))
		noLeak(t, "after Kill", base)
		if err := p.Start(ctx(t)); !errors.Is(err, lifecycle.ErrStopped) {
			t.Fatalf("Start after Kill: got %v, want ErrStopped", err)
		}
	})
	t.Run("StartAfterFailedStartSucceeds", func(t *testing.T) {
		p := part(t)
		base := goleak.IgnoreCurrent()
		done, cancel := context.WithCancel(context.Background())
		cancel()
		if err := p.Start(done); err == nil || errors.Is(err, lifecycle.ErrAlreadyStarted) {
			t.Fatalf("Start with a done ctx: got %v, want a failure", err)
		}
		noLeak(t, "after a failed Start", base)
		must(t, "start after the failed start", p.Start(ctx(t)))
		must(t, "stop", p.Stop(ctx(t)))
		noLeak(t, "after Stop", base)
	})
	if h.FailStart != nil {
		t.Run("StartAfterARealFailureSucceeds", func(t *testing.T) {
			p, fix := h.FailStart(t)
			t.Cleanup(p.Kill)
			base := goleak.IgnoreCurrent()
			if err := p.Start(ctx(t)); err == nil {
				t.Fatal("Start succeeded; the harness meant it to fail")
			}
			noLeak(t, "after a failed Start", base)
			fix()
			base = goleak.IgnoreCurrent()
			must(t, "start after the failure was fixed", p.Start(ctx(t)))
			if err := p.Start(ctx(t)); !errors.Is(err, lifecycle.ErrAlreadyStarted) {
				t.Fatalf("second Start: got %v, want ErrAlreadyStarted", err)
			}
			must(t, "stop", p.Stop(ctx(t)))
			noLeak(t, "after Stop", base)
		})
	}
	t.Run("StopHonoursItsDeadline", func(t *testing.T) {
		p := part(t)
		base := goleak.IgnoreCurrent()
		must(t, "start", p.Start(ctx(t)))
		if h.Busy != nil {
			h.Busy(t, p)
		}
		const grace = 100 * time.Millisecond
		sctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		start := time.Now()
		_ = p.Stop(sctx) // may report the work it cut short
		if took := time.Since(start); took > grace+h.StopBound {
			t.Fatalf("Stop with a %s deadline took %s", grace, took)
		}
		noLeak(t, "after a Stop past its deadline", base)
	})
	t.Run("ConcurrentStartAndStop", func(t *testing.T) {
		p := part(t)
		base := goleak.IgnoreCurrent()
		var wg sync.WaitGroup
		var startErr, stopErr error
		wg.Add(2)
		go func() { defer wg.Done(); startErr = p.Start(ctx(t)) }()
		go func() { defer wg.Done(); stopErr = p.Stop(ctx(t)) }()
		wg.Wait()
		must(t, "stop", stopErr)
		if startErr != nil && !errors.Is(startErr, lifecycle.ErrStopped) {
			t.Fatalf("Start racing Stop: got %v, want nil or ErrStopped", startErr)
		}
		// Whichever ran first, the part is stopped now.
		must(t, "stop", p.Stop(ctx(t)))
		noLeak(t, "after Start raced Stop", base)
	})
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// noLeak fails t if goroutines other than base's (and the process-wide
// ones testlog.LeakOptions lists) are still running after 10 seconds.
func noLeak(t *testing.T, when string, base goleak.Option) {
	t.Helper()
	opts := append(testlog.LeakOptions(), base)
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if err = goleak.Find(opts...); err == nil { // Find itself retries for ~1s
			return
		}
	}
	t.Fatalf("goroutines left %s: %v", when, err)
}

// TakePort holds a free TCP port of 127.0.0.1, for a FailStart whose part
// cannot listen there; free releases it. It returns the port and its
// address (127.0.0.1:port).
func TakePort(t *testing.T) (port int, addr string, free func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln.Addr().(*net.TCPAddr).Port, ln.Addr().String(), func() { _ = ln.Close() }
}
