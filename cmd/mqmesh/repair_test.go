package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

// `mqmesh node repair` copies a store's live records into a new store that
// a node then serves; the old store is left alone.
func TestNodeRepair(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	cfg := mqnode.Config{Name: "n1", DataDir: data, Listen: mqnode.ListenNone, Logger: testLogger(t), Throttle: testlog.NoCPUThrottle}
	n, err := mqnode.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	c := nodeClient(t, n)
	ids := map[string]bool{}
	for i := 0; i < 20; i++ {
		res, err := c.Enqueue(ctxT(t), "jobs", &mqnode.EnqueueItem{Payload: []byte(strings.Repeat("p", 300))})
		if err != nil {
			t.Fatal(err)
		}
		ids[res[0].Id] = true
	}
	if err := n.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}

	rep := mustJSON[mqnode.RepairReport](t, "node", "repair", "--data", data, "--json")
	if rep.Tasks != 20 || rep.Out != data+".repaired" || len(rep.Queues) != 1 {
		t.Fatalf("report: %+v", rep)
	}
	_, _, err = cli(t, "", "node", "repair", "--data", data)
	wantErr(t, err, "exists")

	cfg.DataDir = rep.Out
	n2, err := mqnode.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n2.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n2.Stop(context.Background()) })
	c2 := nodeClient(t, n2)
	ds, _, err := c2.Pull(ctxT(t), mqnode.PullRequest{Queue: "jobs", MaxTasks: 100})
	if err != nil || len(ds) != 20 {
		t.Fatalf("repaired store: %d tasks, %v", len(ds), err)
	}
	for _, d := range ds {
		if !ids[d.Task.Id] {
			t.Fatalf("unknown task %s", d.Task.Id)
		}
	}
	// Enqueues go on with new sequence numbers.
	if _, err := c2.Enqueue(ctxT(t), "jobs", &mqnode.EnqueueItem{Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
}
