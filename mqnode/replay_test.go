package mqnode

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// drainAck pulls and acks every ready task of queue and returns them.
func drainAck(t testing.TB, c *Client, queue string) []*Task {
	t.Helper()
	ctx := ctxT(t)
	var out []*Task
	for {
		ds, _, err := c.Pull(ctx, PullRequest{Queue: queue, MaxTasks: 500})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			return out
		}
		items := make([]*AckItem, len(ds))
		for i, d := range ds {
			out = append(out, d.Task)
			items[i] = &AckItem{Receipt: d.Receipt}
		}
		res, err := c.Ack(ctx, items...)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if err := ItemErr(r); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// replayAll runs a replay chunk by chunk and sums the replies.
func replayAll(ctx context.Context, c *Client, req *wirepb.ReplayRequest) (*wirepb.ReplayReply, int, error) {
	sum := &wirepb.ReplayReply{}
	chunks := 0
	for {
		rep, err := c.Replay(ctx, req)
		if err != nil {
			return sum, chunks, err
		}
		chunks++
		sum.Scanned += rep.Scanned
		sum.Matched += rep.Matched
		sum.Enqueued += rep.Enqueued
		sum.Already += rep.Already
		sum.WindowFromUnixMs, sum.KeepMs = rep.WindowFromUnixMs, rep.KeepMs
		if len(rep.Next) == 0 {
			return sum, chunks, nil
		}
		req.After = rep.Next
	}
}

func TestReplayLastTenMinutes(t *testing.T) {
	_, c := startNode(t, Config{Queues: map[string]QueueConfig{"jobs": {KeepSettled: time.Hour}}})
	ctx := ctxT(t)
	orig := map[string]bool{}
	for b := 0; b < 10; b++ {
		items := make([]*EnqueueItem, 100)
		for i := range items {
			items[i] = &EnqueueItem{Payload: []byte(fmt.Sprintf("t-%d-%d", b, i)), Headers: map[string]string{"n": fmt.Sprint(b*100 + i)}}
		}
		res, err := c.Enqueue(ctx, "jobs", items...)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			orig[r.Id] = true
		}
	}
	if got := drainAck(t, c, "jobs"); len(got) != 1000 {
		t.Fatalf("handled %d tasks, want 1000", len(got))
	}
	_, qs, err := c.Stats(ctx, "jobs")
	if err != nil {
		t.Fatal(err)
	}
	if qs[0].SettledKept != 1000 || qs[0].SettledBytes < 1000*20 || qs[0].KeepSettledMs != time.Hour.Milliseconds() {
		t.Fatalf("stats: kept %d (%d bytes, keep %d ms), want 1000", qs[0].SettledKept, qs[0].SettledBytes, qs[0].KeepSettledMs)
	}

	since := time.Now().Add(-10 * time.Minute).UnixMilli()
	// A dry run counts and writes nothing.
	dry, _, err := replayAll(ctx, c, &wirepb.ReplayRequest{Queue: "jobs", SinceUnixMs: since, ReplayId: "r1", DryRun: true})
	if err != nil || dry.Enqueued != 1000 {
		t.Fatalf("dry run: %v, %+v", err, dry)
	}
	if _, qs, _ := c.Stats(ctx, "jobs"); qs[0].Ready != 0 {
		t.Fatalf("dry run wrote %d tasks", qs[0].Ready)
	}

	// Small chunks exercise the cursor.
	sum, chunks, err := replayAll(ctx, c, &wirepb.ReplayRequest{Queue: "jobs", SinceUnixMs: since, ReplayId: "r1", Limit: 64})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Enqueued != 1000 || sum.Already != 0 || chunks < 1000/64 {
		t.Fatalf("replay: %+v in %d chunks, want 1000 enqueued", sum, chunks)
	}
	again := drainAck(t, c, "jobs")
	seen := map[string]bool{}
	for _, tk := range again {
		of := tk.Headers[HeaderReplayOf]
		if !orig[of] || seen[of] || orig[tk.Id] || tk.Headers[HeaderReplayID] != "r1" || tk.Headers["n"] == "" {
			t.Fatalf("replayed task %s: headers %v (original known %v, seen %v)", tk.Id, tk.Headers, orig[of], seen[of])
		}
		seen[of] = true
	}
	if len(seen) != 1000 {
		t.Fatalf("replay delivered %d distinct originals, want 1000", len(seen))
	}

	// The same replay id again adds none, although the replayed tasks are
	// settled (and kept) by now too.
	sum, _, err = replayAll(ctx, c, &wirepb.ReplayRequest{Queue: "jobs", SinceUnixMs: since, ReplayId: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Enqueued != 0 || sum.Matched != 2000 || sum.Already != 2000 {
		t.Fatalf("second run: %+v, want 0 enqueued of 2000 matched", sum)
	}
	if got := drainAck(t, c, "jobs"); len(got) != 0 {
		t.Fatalf("second run with the same replay id delivered %d tasks", len(got))
	}

	// A new replay id with a filter replays each original once (not its replay).
	sum, _, err = replayAll(ctx, c, &wirepb.ReplayRequest{Queue: "jobs", SinceUnixMs: since, ReplayId: "r2",
		Filters: []*wirepb.HeaderMatch{{Header: "n", Value: "7"}}})
	if err != nil || sum.Enqueued != 1 || sum.Matched != 2 {
		t.Fatalf("filtered replay: %v %+v, want 1 of 2 matched", err, sum)
	}
	if got := drainAck(t, c, "jobs"); len(got) != 1 || got[0].Headers[HeaderReplayRoot] == "" || !orig[got[0].Headers[HeaderReplayRoot]] {
		t.Fatalf("filtered replay delivered %v", got)
	}
}

func TestReplayBadInput(t *testing.T) {
	_, c := startNode(t, Config{Queues: map[string]QueueConfig{"kept": {KeepSettled: time.Minute}, "plain": {}}})
	ctx := ctxT(t)
	enqueueN(t, c, "plain", 1)
	enqueueN(t, c, "kept", 1)
	drainAck(t, c, "plain")
	drainAck(t, c, "kept")
	now := time.Now()
	cases := []struct {
		name string
		req  *wirepb.ReplayRequest
		want error
		msg  string
	}{
		{"keep off", &wirepb.ReplayRequest{Queue: "plain", ReplayId: "x"}, ErrBadRequest, "keep_settled is 0"},
		{"outside window", &wirepb.ReplayRequest{Queue: "kept", ReplayId: "x", SinceUnixMs: now.Add(-3 * time.Hour).UnixMilli(), UntilUnixMs: now.Add(-2 * time.Hour).UnixMilli()}, ErrNotFound, "reaches back to"},
		{"no replay id", &wirepb.ReplayRequest{Queue: "kept"}, ErrBadRequest, "replay_id"},
		{"bad queue", &wirepb.ReplayRequest{Queue: "a.b", ReplayId: "x"}, ErrInvalidName, ""},
		{"unknown queue", &wirepb.ReplayRequest{Queue: "nope", ReplayId: "x"}, ErrUnknownQueue, ""},
		{"until before since", &wirepb.ReplayRequest{Queue: "kept", ReplayId: "x", SinceUnixMs: now.UnixMilli(), UntilUnixMs: now.Add(-time.Second).UnixMilli()}, ErrBadRequest, ""},
		{"bad cursor", &wirepb.ReplayRequest{Queue: "kept", ReplayId: "x", After: []byte("zz")}, ErrBadRequest, "cursor"},
	}
	for _, tc := range cases {
		_, err := c.Replay(ctx, tc.req)
		if !errors.Is(err, tc.want) || !strings.Contains(fmt.Sprint(err), tc.msg) {
			t.Errorf("%s: got %v, want %v containing %q", tc.name, err, tc.want, tc.msg)
		}
	}
	// A span reaching before the window replays what is kept and says how far back it goes.
	rep, err := c.Replay(ctx, &wirepb.ReplayRequest{Queue: "kept", ReplayId: "y", SinceUnixMs: now.Add(-time.Hour).UnixMilli()})
	if err != nil || rep.Enqueued != 1 || rep.WindowFromUnixMs < now.Add(-2*time.Minute).UnixMilli() || rep.OldestUnixMs == 0 {
		t.Fatalf("partial-window replay: %v %+v", err, rep)
	}
}

func TestReplayKeepsDeadLettered(t *testing.T) {
	_, c := startNode(t, Config{QueueDefaults: QueueConfig{KeepSettled: time.Hour}})
	ctx := ctxT(t)
	enqueueN(t, c, "q", 3)
	ds, _, err := c.Pull(ctx, PullRequest{Queue: "q", MaxTasks: 3})
	if err != nil || len(ds) != 3 {
		t.Fatalf("pull: %v, %d", err, len(ds))
	}
	if _, err := c.AckOne(ctx, &AckItem{Receipt: ds[0].Receipt, Kind: AckDead, Error: "bug"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AckOne(ctx, &AckItem{Receipt: ds[1].Receipt}); err != nil {
		t.Fatal(err)
	}
	// ds[2] stays leased: not settled, not kept.
	sum, _, err := replayAll(ctx, c, &wirepb.ReplayRequest{Queue: "q", ReplayId: "r", SinceUnixMs: time.Now().Add(-time.Minute).UnixMilli()})
	if err != nil || sum.Enqueued != 2 {
		t.Fatalf("replay: %v %+v, want the dead-lettered and the acked task", err, sum)
	}
}

// Kept tasks expire with the window (Badger TTL): replay no longer sees
// them and stats stop counting them; a restart counts what is still kept.
func TestSettledExpire(t *testing.T) {
	dir := t.TempDir()
	_, c := startNode(t, Config{DataDir: dir, QueueDefaults: QueueConfig{KeepSettled: time.Second}})
	enqueueN(t, c, "q", 50)
	drainAck(t, c, "q")
	if _, qs, _ := c.Stats(ctxT(t), "q"); qs[0].SettledKept != 50 {
		t.Fatalf("kept %d, want 50", qs[0].SettledKept)
	}
	eventually(t, 5*time.Second, "kept tasks to expire", func() bool {
		_, qs, err := c.Stats(ctxT(t), "q")
		return err == nil && qs[0].SettledKept == 0 && qs[0].SettledBytes == 0
	})
	rep, err := c.Replay(ctxT(t), &wirepb.ReplayRequest{Queue: "q", ReplayId: "x", SinceUnixMs: time.Now().Add(-time.Minute).UnixMilli()})
	if err != nil || rep.Scanned != 0 || rep.OldestUnixMs != 0 {
		t.Fatalf("replay after expiry: %v %+v", err, rep)
	}
}

func TestSettledCountSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, QueueDefaults: QueueConfig{KeepSettled: time.Hour}}
	node, c := startNode(t, cfg)
	enqueueN(t, c, "q", 30)
	drainAck(t, c, "q")
	_, qs, _ := c.Stats(ctxT(t), "q")
	since := time.Now().Add(-time.Minute).UnixMilli()
	// Half a replay (one chunk of 10), then the node stops.
	rep, err := c.Replay(ctxT(t), &wirepb.ReplayRequest{Queue: "q", ReplayId: "r1", SinceUnixMs: since, Limit: 10})
	if err != nil || rep.Enqueued != 10 || len(rep.Next) == 0 {
		t.Fatalf("first chunk: %v %+v", err, rep)
	}
	c.Close()
	if err := node.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, c2 := startNode(t, cfg)
	_, qs2, err := c2.Stats(ctxT(t), "q")
	if err != nil || qs2[0].SettledKept != 30 || qs2[0].SettledBytes != qs[0].SettledBytes {
		t.Fatalf("after restart kept %d (%d B), before %d (%d B): %v", qs2[0].SettledKept, qs2[0].SettledBytes, qs[0].SettledKept, qs[0].SettledBytes, err)
	}
	// The same replay id after the restart finishes the run: the ledger is durable.
	sum, _, err := replayAll(ctxT(t), c2, &wirepb.ReplayRequest{Queue: "q", ReplayId: "r1", SinceUnixMs: since})
	if err != nil || sum.Enqueued != 20 || sum.Already != 10 {
		t.Fatalf("replay resumed after restart: %v %+v, want 20 more, 10 already", err, sum)
	}
	if got := drainAck(t, c2, "q"); len(got) != 30 {
		t.Fatalf("%d replayed tasks, want 30", len(got))
	}
}

// Repair keeps the kept settled tasks with their TTL (they still expire),
// and eviction of idle queues spares a queue that keeps settled tasks.
func TestSettledSurvivesRepairAndEviction(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, QueueDefaults: QueueConfig{KeepSettled: time.Hour}, MaxPullWait: time.Second, QueueIdleEvict: 2 * time.Second}
	node, c := startNode(t, cfg)
	enqueueN(t, c, "q", 10)
	drainAck(t, c, "q")
	if gone, err := node.st.evictIdle(ctxT(t), time.Now().Add(10*time.Second).UnixMilli()); err != nil || len(gone) != 0 {
		t.Fatalf("evicted %v (%v): an idle queue keeping settled tasks must stay", gone, err)
	}
	c.Close()
	if err := node.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "repaired")
	if _, err := Repair(dir, out, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = out
	n2, c2 := startNode(t, cfg)
	_, qs, err := c2.Stats(ctxT(t), "q")
	if err != nil || qs[0].SettledKept != 10 {
		t.Fatalf("after repair: %v %v", err, qs)
	}
	err = n2.st.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: queuePrefix(pfxSettled, "q")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if it.Item().ExpiresAt() == 0 {
				return fmt.Errorf("kept record %x lost its TTL in repair", it.Item().Key())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Once its kept tasks have expired, the idle queue goes.
	if gone, err := n2.st.evictIdle(ctxT(t), time.Now().Add(2*time.Hour).UnixMilli()); err != nil || len(gone) != 1 {
		t.Fatalf("evicted %v (%v), want q once its kept tasks expired", gone, err)
	}
}

// A replay is an enqueue: below the disk reserve it answers DISK_FULL and
// writes nothing (a dry run still counts); once space returns it replays.
func TestReplayRefusedBelowDiskReserve(t *testing.T) {
	n, c := startNode(t, Config{Queues: map[string]QueueConfig{"jobs": {KeepSettled: time.Hour}}})
	ctx := ctxT(t)
	items := make([]*EnqueueItem, 50)
	for i := range items {
		items[i] = &EnqueueItem{Payload: []byte(fmt.Sprint(i))}
	}
	if _, err := c.Enqueue(ctx, "jobs", items...); err != nil {
		t.Fatal(err)
	}
	if got := drainAck(t, c, "jobs"); len(got) != 50 {
		t.Fatalf("handled %d tasks, want 50", len(got))
	}
	d := n.st.disk
	d.reserve.Store(1 << 62) // no disk has that much free
	d.lastCheck.Store(0)     // the next admit re-reads free space
	since := time.Now().Add(-time.Hour).UnixMilli()
	_, _, err := replayAll(ctx, c, &wirepb.ReplayRequest{Queue: "jobs", SinceUnixMs: since, ReplayId: "r1"})
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("replay below the reserve: %v, want ErrDiskFull", err)
	}
	dry, _, err := replayAll(ctx, c, &wirepb.ReplayRequest{Queue: "jobs", SinceUnixMs: since, ReplayId: "r1", DryRun: true})
	if err != nil || dry.Enqueued != 50 {
		t.Fatalf("dry run below the reserve: %v %+v, want 50 counted", err, dry)
	}
	if _, qs, _ := c.Stats(ctx, "jobs"); qs[0].Ready != 0 {
		t.Fatalf("refused replay wrote %d tasks", qs[0].Ready)
	}
	d.reserve.Store(0)
	d.lastCheck.Store(0)
	sum, _, err := replayAll(ctx, c, &wirepb.ReplayRequest{Queue: "jobs", SinceUnixMs: since, ReplayId: "r1"})
	if err != nil || sum.Enqueued != 50 {
		t.Fatalf("replay once space returned: %v %+v, want 50", err, sum)
	}
}
