package testlog

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"

	"github.com/mqmesh/mqmesh/mqnode/throttle"
)

// LeakOptions are the goleak options of every package's TestMain: the
// process-wide goroutines of Badger's allocator and glog, and memberlist's
// probe and suspicion timers, which may run once more after a Shutdown.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).suspectNode.func1"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"),
	}
}

// Eventually polls cond every 5 ms until it holds, failing the test after
// within. It returns how long it took.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// GatewayOutMsgs sums the messages a NATS server sent over its outbound
// gateway connections.
func GatewayOutMsgs(t testing.TB, s *server.Server) int64 {
	t.Helper()
	gz, err := s.Gatewayz(nil)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, g := range gz.OutboundGateways {
		if g.Connection != nil {
			n += g.Connection.OutMsgs
		}
	}
	return n
}

// NoCPUThrottle is a node throttle config with the CPU throttle off, for
// tests of other features: on a shared 2-core machine running the suite the
// host's CPU is often above the ceiling, and dispatch would slow at random.
// The throttle's own tests turn it on.
var NoCPUThrottle = throttle.Config{CPU: throttle.CPUConfig{Disabled: true}}
