package main

import (
	"strings"
	"testing"
	"time"
)

// TestStatsMeshSumsEveryNode: `stats --mesh` asked of one node sums the
// queues of every alive node of the mesh, totals included.
func TestStatsMeshSumsEveryNode(t *testing.T) {
	a, _ := meshNode(t, append([]string{"--name", "a1", "--idc", "idcA"}, meshFlags...)...)
	b, _ := meshNode(t, append([]string{"--name", "b1", "--idc", "idcB", "--seed", a.Gossip}, meshFlags...)...)
	eventually(t, 20*time.Second, "both nodes alive for a1", func() bool {
		s := states(members(t, a.URL))
		return s["a1"] == "alive" && s["b1"] == "alive"
	})
	mustCLI(t, "enqueue", "--server", a.URL, "--queue", "q", "--count", "5")
	mustCLI(t, "enqueue", "--server", b.URL, "--queue", "q", "--count", "7")
	mustCLI(t, "enqueue", "--server", b.URL, "--queue", "only-b", "--count", "2")
	var got meshStatsJSON
	eventually(t, 20*time.Second, "stats --mesh to reach both nodes", func() bool {
		got = mustJSON[meshStatsJSON](t, "stats", "--mesh", "--server", a.URL, "--json")
		return got.Complete && len(got.Nodes) == 2
	})
	if len(got.Queues) != 2 || got.Queues[0].Queue != "only-b" || got.Queues[0].Nodes != 1 || got.Queues[0].EnqueuedTotal != 2 ||
		got.Queues[1].Queue != "q" || got.Queues[1].Nodes != 2 || got.Queues[1].EnqueuedTotal != 12 || got.Queues[1].Ready != 12 {
		t.Fatalf("stats --mesh: %+v", got)
	}
	out := mustCLI(t, "stats", "--mesh", "--server", a.URL)
	if !strings.Contains(out, "2 answered") || !strings.Contains(out, "ENQUEUED") {
		t.Fatalf("stats --mesh text:\n%s", out)
	}
}

// TestWorkerNamesItsNodesHost: a pool with no --host names the host its
// node reports (the mesh's host name), not the OS host name.
func TestWorkerNamesItsNodesHost(t *testing.T) {
	a, _ := meshNode(t, append([]string{"--name", "a1", "--idc", "idcA", "--host", "rack7-host3"}, meshFlags...)...)
	cfg := writeFile(t, "worker.yaml", "queues:\n  push: {kind: sleep, latency: 1ms}\n")
	w := runWorker(t, "--config", cfg, "--server", a.URL, "--report", "0")
	ready := w.line("ready line", func(l string) bool { return strings.HasPrefix(l, "mqmesh worker ") })
	if !strings.Contains(ready, "host rack7-host3,") || !strings.HasPrefix(ready, "mqmesh worker rack7-host3-") {
		t.Fatalf("ready line %q: want the node's host rack7-host3 (and an id made from it)", ready)
	}
}
