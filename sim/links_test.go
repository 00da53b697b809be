package sim

import (
	"context"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

// TestPartitionAndHeal: with an IDC's gateway links black-holed, a request
// from the other IDC does not get through; after heal it does again; with
// a slow link it does, later.
func TestPartitionAndHeal(t *testing.T) {
	if testing.Short() {
		t.Skip("mesh test skipped in -short mode")
	}
	s, err := ParseScenario([]byte("topology: {idcs: [{name: a, hosts: 1}, {name: b, hosts: 1}]}\nload: {rate: 1, duration: 1s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := newRun(s, ModeMesh, Options{Dir: t.TempDir(), Logger: testlog.NewLevel(t, 4)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.teardown()
	ctx := context.Background()
	if err := r.setup(ctx); err != nil {
		t.Fatal(err)
	}
	a := r.host("a-h1")
	nc, err := a.agent.Node.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	toB := mqnode.NewClient(nc, "b", "b-h1")
	info := func(timeout time.Duration) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := time.Now()
		_, err := toB.Info(ctx)
		return time.Since(start), err
	}
	waitOK := func(what string) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := info(time.Second); err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: b unreachable from a", what)
			}
		}
	}
	waitOK("before the partition")
	if err := r.apply(ctx, Event{Action: "partition", IDC: "b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := info(2 * time.Second); err == nil {
		t.Fatal("a request crossed a partitioned link")
	}
	if err := r.apply(ctx, Event{Action: "heal", IDC: "b"}); err != nil {
		t.Fatal(err)
	}
	waitOK("after heal")
	if err := r.apply(ctx, Event{Action: "slow-link", IDC: "b", Latency: Duration(150 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	took, err := info(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("request a → b over a link slowed by 150ms each way: %s", took)
	if took < 150*time.Millisecond {
		t.Fatalf("request over a slow link took only %s", took)
	}
}
