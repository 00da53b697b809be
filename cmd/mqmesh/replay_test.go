package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

// startKeepingNode starts a standalone node whose queues keep settled
// tasks for an hour.
func startKeepingNode(t *testing.T) (*mqnode.Node, string) {
	t.Helper()
	n, err := mqnode.New(mqnode.Config{
		Name: "n1", DataDir: t.TempDir(), Listen: "127.0.0.1:0", Logger: testLogger(t), Throttle: testlog.NoCPUThrottle,
		QueueDefaults: mqnode.QueueConfig{KeepSettled: time.Hour}, Trace: mqnode.TraceConfig{Sample: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop(context.Background()) })
	return n, n.ClientURL()
}

// handleAll pulls and acks every ready task of queue; it returns how many.
func handleAll(t *testing.T, c *mqnode.Client, queue string) int {
	t.Helper()
	n := 0
	for {
		// A short long poll, not a look: a task whose enqueue was just
		// acknowledged may still sit behind its write group's bookkeeping
		// (a no-wait pull's grace is 100 ms, which a loaded CI machine can
		// outlast).
		ds, _, err := c.Pull(ctxT(t), mqnode.PullRequest{Queue: queue, MaxTasks: 100, MaxWait: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			return n
		}
		for _, d := range ds {
			if _, err := c.AckOne(ctxT(t), &mqnode.AckItem{Receipt: d.Receipt}); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
}

func TestReplayCommand(t *testing.T) {
	n, url := startKeepingNode(t)
	c := nodeClient(t, n)
	mustCLI(t, "enqueue", "--server", url, "--queue", "jobs", "--count", "20", "--header", "tenant=acme")
	mustCLI(t, "enqueue", "--server", url, "--queue", "jobs", "--count", "5", "--header", "tenant=other")
	if got := handleAll(t, c, "jobs"); got != 25 {
		t.Fatalf("handled %d", got)
	}
	st := mustJSON[statsJSON](t, "stats", "--server", url, "--queue", "jobs", "--json")
	if q := st.Queues[0]; q.SettledKept != 25 || q.SettledBytes == 0 || q.KeepSettled != "1h0m0s" {
		t.Fatalf("stats: %+v", q)
	}
	if out := mustCLI(t, "stats", "--server", url); !strings.Contains(out, "KEEP_SETTLED") {
		t.Fatalf("stats table has no kept-settled table:\n%s", out)
	}

	base := []string{"replay", "--server", url, "--queue", "jobs", "--since", "10m"}
	dry := mustJSON[replayJSON](t, append(base, "--dry-run", "--json", "--filter", "tenant=acme")...)
	if !dry.DryRun || dry.Enqueued != 20 || dry.Matched != 20 || dry.ReplayID == "" || len(dry.Nodes) != 1 {
		t.Fatalf("dry run: %+v", dry)
	}
	out, stderr, err := cli(t, "", append(base, "--replay-id", "fix-1", "--batch", "7")...)
	if err != nil {
		t.Fatal(err, stderr)
	}
	if !strings.HasPrefix(out, "replayed 25 tasks of queue jobs") || !strings.Contains(out, "replay id fix-1") || strings.Count(out, "\n") != 1 {
		t.Fatalf("summary %q", out)
	}
	if !strings.Contains(stderr, "replay on local/n1: 25 enqueued") {
		t.Fatalf("progress %q", stderr)
	}
	if got := handleAll(t, c, "jobs"); got != 25 {
		t.Fatalf("replay delivered %d, want 25", got)
	}
	again := mustJSON[replayJSON](t, append(base, "--replay-id", "fix-1", "--json")...)
	if again.Enqueued != 0 || again.Already != 50 {
		t.Fatalf("second run: %+v", again)
	}

	// Bad input: a clear error, nothing written.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"replay", "--server", url, "--queue", "jobs"}, "--since is required"},
		{[]string{"replay", "--server", url, "--queue", "jobs", "--since", "yesterday"}, "RFC 3339"},
		{[]string{"replay", "--server", url, "--queue", "jobs", "--since", "1m", "--until", "2m"}, "before --since"},
		{[]string{"replay", "--server", url, "--queue", "jobs", "--since", "1m", "--filter", "x"}, "header=value"},
		{[]string{"replay", "--server", url, "--queue", "a.b", "--since", "1m"}, "--queue"},
		{[]string{"replay", "--server", url, "--queue", "jobs", "--since", "5h", "--until", "3h"}, "reaches back to"},
	} {
		_, _, err := cli(t, "", tc.args...)
		wantErr(t, err, tc.want)
	}
}

func TestTopicCommands(t *testing.T) {
	n, url := startKeepingNode(t)
	c := nodeClient(t, n)
	srv := []string{"--server", url}
	out := mustCLI(t, append([]string{"topic", "create", "orders", "--sub", "billing", "--sub", "vip:tier=gold"}, srv...)...)
	if !strings.Contains(out, "billing, vip:tier=gold") {
		t.Fatalf("create: %q", out)
	}
	list := mustJSON[topicListJSON](t, append([]string{"topic", "list", "--json"}, srv...)...)
	if len(list.Topics) != 1 || list.Topics[0].Source != "mesh" || len(list.Topics[0].Subscriptions) != 2 ||
		list.Topics[0].Subscriptions[1] != (subscriptionJSON{Queue: "vip", Header: "tier", Value: "gold"}) || list.Topics[0].Origin != "local.n1" {
		t.Fatalf("list: %+v", list)
	}
	res := mustJSON[enqueueJSON](t, append([]string{"enqueue", "--queue", "topic:orders", "--count", "3", "--header", "tier=gold", "--json"}, srv...)...)
	if len(res.IDs) != 3 || res.Copies != 6 {
		t.Fatalf("enqueue to topic: %+v", res)
	}
	if out := mustCLI(t, append([]string{"enqueue", "--queue", "topic:orders", "--payload", "p"}, srv...)...); !strings.Contains(out, "enqueued 1 task(s) on topic:orders") || !strings.Contains(out, "copies written into the topic's queues: 1") {
		t.Fatalf("enqueue to topic summary: %q", out)
	}
	if handleAll(t, c, "billing") != 4 || handleAll(t, c, "vip") != 3 {
		t.Fatal("fan-out did not reach both queues")
	}
	mustCLI(t, append([]string{"topic", "create", "gold", "--sub", "vip:tier=gold"}, srv...)...)
	_, _, err := cli(t, "", append([]string{"enqueue", "--queue", "topic:gold", "--payload", "x"}, srv...)...)
	wantErr(t, err, "no subscribers", "matches no subscription")
	_, _, err = cli(t, "", append([]string{"enqueue", "--queue", "topic:nope", "--payload", "x"}, srv...)...)
	wantErr(t, err, "not found", "nope")
	_, _, err = cli(t, "", append([]string{"topic", "create", "bad.name", "--sub", "q"}, srv...)...)
	wantErr(t, err, "topic")
	_, _, err = cli(t, "", append([]string{"topic", "create", "t", "--sub", "q:novalue"}, srv...)...)
	wantErr(t, err, "QUEUE:HEADER=VALUE")
	_, _, err = cli(t, "", append([]string{"topic", "create", "t"}, srv...)...)
	wantErr(t, err, "--sub")
	mustCLI(t, append([]string{"topic", "delete", "orders"}, srv...)...)
	if out := mustCLI(t, append([]string{"topic", "list"}, srv...)...); strings.Contains(out, "orders") {
		t.Fatalf("deleted topic listed:\n%s", out)
	}
	_, _, err = cli(t, "", append([]string{"topic", "delete", "orders"}, srv...)...)
	wantErr(t, err, "not found")
}

// Two mesh nodes in two IDCs: a topic made on one reaches the other over
// the gateway, and `replay --mesh` replays on both.
func TestReplayAndTopicsAcrossTheMesh(t *testing.T) {
	a, _ := meshNode(t, append([]string{"--name", "a1", "--idc", "idcA", "--mesh", "--keep-settled", "1h"}, meshFlags...)...)
	b, _ := meshNode(t, append([]string{"--name", "b1", "--idc", "idcB", "--seed", a.Gossip, "--keep-settled", "1h"}, meshFlags...)...)
	eventually(t, 20*time.Second, "both nodes alive on a1", func() bool {
		s := states(members(t, a.URL))
		return s["a1"] == "alive" && s["b1"] == "alive"
	})
	mustCLI(t, "topic", "create", "orders", "--sub", "jobs", "--server", a.URL)
	eventually(t, 20*time.Second, "topic on b1", func() bool {
		return strings.Contains(mustCLI(t, "topic", "list", "--server", b.URL), "orders")
	})
	for _, url := range []string{a.URL, b.URL} {
		mustCLI(t, "enqueue", "--server", url, "--queue", "topic:orders", "--count", "4")
		c, err := mqnode.Dial(ctxT(t), url)
		if err != nil {
			t.Fatal(err)
		}
		if got := handleAll(t, c, "jobs"); got != 4 {
			t.Fatalf("%s handled %d", url, got)
		}
		c.Close()
	}
	r := mustJSON[replayJSON](t, "replay", "--server", a.URL, "--queue", "jobs", "--since", "10m", "--mesh", "--replay-id", "m1", "--json")
	if r.Enqueued != 8 || len(r.Nodes) != 2 {
		t.Fatalf("mesh replay: %+v", r)
	}
	r = mustJSON[replayJSON](t, "replay", "--server", b.URL, "--queue", "jobs", "--since", "10m", "--mesh", "--replay-id", "m1", "--json")
	if r.Enqueued != 0 || r.Already != 8 {
		t.Fatalf("mesh replay again: %+v", r)
	}
}

// `mqmesh trace` shows the replay link in both directions, and a topic
// enqueue is traced in every subscribed queue.
func TestTraceShowsReplayLinks(t *testing.T) {
	n, url := startKeepingNode(t)
	c := nodeClient(t, n)
	res, err := c.Enqueue(ctxT(t), "jobs", &mqnode.EnqueueItem{Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	orig := res[0].Id
	handleAll(t, c, "jobs")
	mustCLI(t, "replay", "--server", url, "--queue", "jobs", "--since", "1m", "--replay-id", "t1")
	ds, _, err := c.Pull(ctxT(t), mqnode.PullRequest{Queue: "jobs"})
	if err != nil || len(ds) != 1 {
		t.Fatalf("pull: %v %d", err, len(ds))
	}
	replay := ds[0].Task.Id
	waitTrace := func(id, kind string) string {
		t.Helper()
		var text string
		eventually(t, 10*time.Second, "trace of "+id+" with "+kind, func() bool {
			text = mustCLI(t, "trace", "--server", url, id)
			return strings.Contains(text, kind)
		})
		return text
	}
	if text := waitTrace(orig, "replayed"); !strings.Contains(text, "replayed as "+replay) {
		t.Fatalf("trace of the original:\n%s", text)
	}
	if text := waitTrace(replay, "replay-of"); !strings.Contains(text, "replay of "+orig) {
		t.Fatalf("trace of the replay:\n%s", text)
	}
	mustCLI(t, "topic", "create", "fan", "--sub", "a", "--sub", "b", "--server", url)
	r, err := c.Enqueue(ctxT(t), "topic:fan", &mqnode.EnqueueItem{Payload: []byte("y")})
	if err != nil || len(r[0].Copies) != 2 {
		t.Fatalf("topic enqueue: %v %v", err, r)
	}
	for _, cp := range r[0].Copies {
		if text := waitTrace(cp.Id, "enqueue"); !strings.Contains(text, "queue "+cp.Queue) {
			t.Fatalf("trace of copy in %s:\n%s", cp.Queue, text)
		}
	}
}
