package main

import (
	"testing"

	"github.com/mqmesh/mqmesh/internal/lifecycle"
	"github.com/mqmesh/mqmesh/internal/lifecycle/lifecycletest"
	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

func TestStandaloneNodeKeepsTheLifecycleContract(t *testing.T) {
	newNode := func(t *testing.T, listen string) *standaloneNode {
		s, err := newStandaloneNode(mqnode.Config{Name: "n1", DataDir: t.TempDir(), Listen: listen, Logger: testLogger(t), Throttle: testlog.NoCPUThrottle})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Part { return newNode(t, "127.0.0.1:0") },
		// Its client port is taken.
		FailStart: func(t *testing.T) (lifecycle.Part, func()) {
			_, addr, free := lifecycletest.TakePort(t)
			return newNode(t, addr), free
		},
	})
}
