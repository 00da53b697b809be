package mqnode

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/internal/secrets/secretstest"
	"github.com/mqmesh/mqmesh/internal/testlog"
)

// TestConnectDuringReloadsSucceeds: a mesh node reloads its NATS options on
// every route change, and with authorization on nats-server re-authorizes
// every client at each reload; an in-process connect caught mid-handshake
// used to be closed ("read/write on closed pipe": 5 of 300 here, and the
// simulator's start failed in 3 of 3 default runs).
func TestConnectDuringReloadsSucceeds(t *testing.T) {
	n, err := New(Config{Name: "n1", IDC: "a", DataDir: t.TempDir(), Listen: "127.0.0.1:0",
		Security: secretstest.Set(t), Logger: testlog.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n.Stop(context.Background())
	var stop atomic.Bool
	done := make(chan struct{})
	reloads := 0
	go func() {
		defer close(done)
		for !stop.Load() {
			if err := n.ReloadNATS(); err != nil {
				t.Errorf("reload: %v", err)
				return
			}
			reloads++
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	connects, fails := 0, 0
	for ; connects < 300 && time.Now().Before(deadline); connects++ {
		nc, err := n.Connect()
		if err != nil {
			fails++
			t.Logf("connect %d: %v", connects, err)
			continue
		}
		nc.Close()
	}
	stop.Store(true)
	<-done
	t.Logf("%d connects during %d reloads: %d failed", connects, reloads, fails)
	if fails > 0 || reloads == 0 {
		t.Fatalf("%d of %d in-process connects failed during %d reloads", fails, connects, reloads)
	}
}
