package mqnode

import (
	"testing"

	"github.com/mqmesh/mqmesh/internal/lifecycle"
	"github.com/mqmesh/mqmesh/internal/lifecycle/lifecycletest"
	"github.com/mqmesh/mqmesh/internal/testlog"
)

func TestNodeKeepsTheLifecycleContract(t *testing.T) {
	newNode := func(t *testing.T, listen string) *Node {
		n, err := New(Config{Name: "n1", IDC: "idc1", DataDir: t.TempDir(), Listen: listen, Logger: testLogger(t),
			Throttle: testlog.NoCPUThrottle})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Part { return newNode(t, "127.0.0.1:0") },
		// The client port is taken: Start fails, and succeeds once it is free.
		FailStart: func(t *testing.T) (lifecycle.Part, func()) {
			_, addr, free := lifecycletest.TakePort(t)
			return newNode(t, addr), free
		},
	})
}
