package mqnode

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func pullOne(t *testing.T, c *Client, queue string, wait time.Duration) *Delivery {
	t.Helper()
	ds, _, err := c.Pull(ctxT(t), PullRequest{Queue: queue, MaxTasks: 1, MaxWait: wait, Lease: 30 * time.Second, WorkerID: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) == 0 {
		return nil
	}
	return ds[0]
}

func queueStats(t *testing.T, c *Client, queue string) *QueueStats {
	t.Helper()
	_, qs, err := c.Stats(ctxT(t), queue)
	if err != nil {
		t.Fatal(err)
	}
	return qs[0]
}

func TestDedup(t *testing.T) {
	_, c := startNode(t, Config{})
	ctx := ctxT(t)
	a, err := c.Enqueue(ctx, "q", &EnqueueItem{Payload: []byte("1"), DedupKey: "k1"}, &EnqueueItem{Payload: []byte("1b"), DedupKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if a[0].Duplicate || !a[1].Duplicate || a[0].Id != a[1].Id {
		t.Fatalf("in-batch dedup: %v", a)
	}
	b, err := c.Enqueue(ctx, "q", &EnqueueItem{Payload: []byte("2"), DedupKey: "k1"}, &EnqueueItem{DedupKey: "k2"})
	if err != nil {
		t.Fatal(err)
	}
	if !b[0].Duplicate || b[0].Id != a[0].Id || b[1].Duplicate {
		t.Fatalf("retried enqueue: %v", b)
	}
	if st := queueStats(t, c, "q"); st.Ready != 2 || st.EnqueuedTotal != 2 {
		t.Fatalf("stats: %v", st)
	}
	// Dedup keys are per queue.
	o, err := c.Enqueue(ctx, "other", &EnqueueItem{DedupKey: "k1"})
	if err != nil || o[0].Duplicate {
		t.Fatalf("other queue: %v %v", o, err)
	}
}

func TestDedupWindowExpires(t *testing.T) {
	_, c := startNode(t, Config{QueueDefaults: QueueConfig{DedupWindow: time.Second}})
	ctx := ctxT(t)
	a, err := c.Enqueue(ctx, "q", &EnqueueItem{DedupKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "dedup window to pass", func() bool {
		b, err := c.Enqueue(ctx, "q", &EnqueueItem{DedupKey: "k"})
		return err == nil && !b[0].Duplicate && b[0].Id != a[0].Id
	})
}

func TestDelay(t *testing.T) {
	_, c := startNode(t, Config{})
	ctx := ctxT(t)
	start := time.Now()
	if _, err := c.Enqueue(ctx, "q", &EnqueueItem{Payload: []byte("later"), DelayMs: 300}); err != nil {
		t.Fatal(err)
	}
	if d := pullOne(t, c, "q", 0); d != nil {
		t.Fatalf("delayed task delivered at once")
	}
	if st := queueStats(t, c, "q"); st.Delayed != 1 || st.Ready != 0 {
		t.Fatalf("stats of a delayed task: %v", st)
	}
	// A long-poll started now is woken by the delay timer.
	d := pullOne(t, c, "q", 5*time.Second)
	if d == nil {
		t.Fatal("delayed task not delivered within the wait")
	}
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Fatalf("delivered after %s, before its not-before", el)
	}
}

func TestLongPollWakesOnEnqueue(t *testing.T) {
	_, c := startNode(t, Config{})
	ctx := ctxT(t)
	got := make(chan *Delivery, 1)
	go func() {
		ds, _, _ := c.Pull(ctx, PullRequest{Queue: "q", MaxTasks: 1, MaxWait: 10 * time.Second})
		if len(ds) > 0 {
			got <- ds[0]
		} else {
			got <- nil
		}
	}()
	// Enqueue once the pull is parked (it has created the queue).
	eventually(t, 5*time.Second, "queue to exist", func() bool {
		_, _, err := c.Stats(ctx, "q")
		return err == nil
	})
	if _, err := c.Enqueue(ctx, "q", &EnqueueItem{Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if d == nil {
			t.Fatal("long poll returned empty")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("long poll not woken by enqueue")
	}
}

func TestZeroWaitAnswersAtOnce(t *testing.T) {
	_, c := startNode(t, Config{})
	start := time.Now()
	if d := pullOne(t, c, "empty", 0); d != nil {
		t.Fatal("unexpected task")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("zero-wait pull took %s", el)
	}
}

func TestRetentionExpiry(t *testing.T) {
	_, c := startNode(t, Config{})
	ctx := ctxT(t)
	if _, err := c.Enqueue(ctx, "q", &EnqueueItem{Payload: []byte("stale"), TtlMs: 50}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond) // let the retention pass: the point of the test
	if d := pullOne(t, c, "q", 0); d != nil {
		t.Fatalf("expired task delivered: %v", d.Task)
	}
	eventually(t, 5*time.Second, "expired task in the DLQ", func() bool {
		dead, _, err := c.DLQList(ctx, "q", "", 10)
		return err == nil && len(dead) == 1 && strings.Contains(dead[0].Reason, "expired")
	})
}

func TestNackBackoffAndDeadLetter(t *testing.T) {
	_, c := startNode(t, Config{QueueDefaults: QueueConfig{MaxAttempts: 3, BackoffBase: 20 * time.Millisecond, BackoffMax: 40 * time.Millisecond}})
	ctx := ctxT(t)
	res, err := c.Enqueue(ctx, "q", &EnqueueItem{Payload: []byte("fails")})
	if err != nil {
		t.Fatal(err)
	}
	for attempt := uint32(1); attempt <= 3; attempt++ {
		d := pullOne(t, c, "q", 5*time.Second)
		if d == nil {
			t.Fatalf("attempt %d not delivered", attempt)
		}
		if d.Task.Attempt != attempt || d.Task.Id != res[0].Id {
			t.Fatalf("delivery %d has attempt %d id %s", attempt, d.Task.Attempt, d.Task.Id)
		}
		if attempt > 1 && d.Task.LastError != "boom" {
			t.Fatalf("last error not kept: %q", d.Task.LastError)
		}
		if _, err := c.AckOne(ctx, &AckItem{Receipt: d.Receipt, Kind: AckNack, Error: "boom"}); err != nil {
			t.Fatal(err)
		}
		if attempt < 3 {
			// Backoff: not ready at once.
			if st := queueStats(t, c, "q"); st.Delayed != 1 {
				t.Fatalf("after nack %d: %v", attempt, st)
			}
		}
	}
	dead, _, err := c.DLQList(ctx, "q", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].Task.GetId() != res[0].Id || !strings.Contains(dead[0].Reason, "boom") || !strings.Contains(dead[0].Reason, "attempts exhausted") {
		t.Fatalf("dead letters: %v", dead)
	}
	st := queueStats(t, c, "q")
	if st.Dead != 1 || st.Ready != 0 || st.Delayed != 0 || st.NackedTotal != 3 {
		t.Fatalf("stats: %v", st)
	}
}

func TestNackExplicitDelay(t *testing.T) {
	_, c := startNode(t, Config{})
	ctx := ctxT(t)
	enqueueN(t, c, "q", 1)
	d := pullOne(t, c, "q", 0)
	if _, err := c.AckOne(ctx, &AckItem{Receipt: d.Receipt, Kind: AckNack, DelayMs: 100}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d2 := pullOne(t, c, "q", 5*time.Second)
	if d2 == nil || d2.Task.Attempt != 2 {
		t.Fatalf("redelivery: %v", d2)
	}
	if el := time.Since(start); el < 80*time.Millisecond {
		t.Fatalf("redelivered after %s, want >= 100ms", el)
	}
}

func TestLeaseExpiryRedeliversAndStaleReceipt(t *testing.T) {
	_, c := startNode(t, Config{})
	ctx := ctxT(t)
	enqueueN(t, c, "q", 1)
	ds, _, err := c.Pull(ctx, PullRequest{Queue: "q", MaxTasks: 1, Lease: 100 * time.Millisecond})
	if err != nil || len(ds) != 1 {
		t.Fatal(ds, err)
	}
	first := ds[0]
	second := pullOne(t, c, "q", 5*time.Second)
	if second == nil || second.Task.Id != first.Task.Id || second.Task.Attempt != 2 {
		t.Fatalf("redelivery after lease expiry: %v", second)
	}
	// The first delivery's receipt is stale: neither ack nor extend may touch
	// the second delivery.
	for _, kind := range []AckKind{AckAck, AckExtend, AckNack} {
		if _, err := c.AckOne(ctx, &AckItem{Receipt: first.Receipt, Kind: kind}); !errors.Is(err, ErrStaleReceipt) {
			t.Fatalf("%v with stale receipt: %v", kind, err)
		}
	}
	// The expiry is counted just after its write commits, which may be a
	// moment after the redelivery was seen.
	eventually(t, 5*time.Second, "the expiry counted", func() bool {
		st := queueStats(t, c, "q")
		return st.Leased == 1 && st.ExpiredLeasesTotal == 1
	})
	if _, err := c.AckOne(ctx, &AckItem{Receipt: second.Receipt}); err != nil {
		t.Fatal(err)
	}
}

func TestExtendKeepsLease(t *testing.T) {
	_, c := startNode(t, Config{})
	ctx := ctxT(t)
	enqueueN(t, c, "q", 1)
	ds, _, err := c.Pull(ctx, PullRequest{Queue: "q", MaxTasks: 1, Lease: 200 * time.Millisecond})
	if err != nil || len(ds) != 1 {
		t.Fatal(ds, err)
	}
	end := time.Now().Add(600 * time.Millisecond)
	for time.Now().Before(end) {
		r, err := c.AckOne(ctx, &AckItem{Receipt: ds[0].Receipt, Kind: AckExtend, ExtendMs: 200})
		if err != nil {
			t.Fatal(err)
		}
		if r.LeaseDeadlineUnixMs <= time.Now().UnixMilli() {
			t.Fatalf("extend returned a past deadline")
		}
		if d := pullOne(t, c, "q", 50*time.Millisecond); d != nil {
			t.Fatalf("task redelivered while its lease was extended")
		}
	}
	if _, err := c.AckOne(ctx, &AckItem{Receipt: ds[0].Receipt}); err != nil {
		t.Fatal(err)
	}
}

func TestGiveUpGoesToDLQ(t *testing.T) {
	_, c := startNode(t, Config{})
	ctx := ctxT(t)
	enqueueN(t, c, "q", 1)
	d := pullOne(t, c, "q", 0)
	if _, err := c.AckOne(ctx, &AckItem{Receipt: d.Receipt, Kind: AckDead, Error: "bad input"}); err != nil {
		t.Fatal(err)
	}
	dead, _, err := c.DLQList(ctx, "q", "", 10)
	if err != nil || len(dead) != 1 || !strings.Contains(dead[0].Reason, "bad input") {
		t.Fatalf("dlq: %v %v", dead, err)
	}
}

func TestDLQRequeuePurgeAndPaging(t *testing.T) {
	_, c := startNode(t, Config{QueueDefaults: QueueConfig{MaxAttempts: 1}})
	ctx := ctxT(t)
	enqueueN(t, c, "q", 5)
	for i := 0; i < 5; i++ {
		d := pullOne(t, c, "q", 0)
		if _, err := c.AckOne(ctx, &AckItem{Receipt: d.Receipt, Kind: AckNack, Error: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	var all []*DeadTask
	after := ""
	for {
		page, next, err := c.DLQList(ctx, "q", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if next == "" {
			break
		}
		after = next
	}
	if len(all) != 5 {
		t.Fatalf("paged %d dead letters, want 5", len(all))
	}
	n, err := c.DLQRequeue(ctx, "q", all[0].DeadId)
	if err != nil || n != 1 {
		t.Fatalf("requeue one: %d %v", n, err)
	}
	if _, err := c.DLQRequeue(ctx, "q", all[0].DeadId); !errors.Is(err, ErrNotFound) {
		t.Fatalf("requeue of a gone id: %v", err)
	}
	d := pullOne(t, c, "q", 0)
	if d == nil || d.Task.Id != all[0].Task.Id || d.Task.Attempt != 1 {
		t.Fatalf("requeued task: %v", d)
	}
	if n, err := c.DLQPurge(ctx, "q", all[1].DeadId); err != nil || n != 1 {
		t.Fatalf("purge one: %d %v", n, err)
	}
	if n, err := c.DLQRequeue(ctx, "q"); err != nil || n != 3 {
		t.Fatalf("requeue all: %d %v", n, err)
	}
	if st := queueStats(t, c, "q"); st.Dead != 0 || st.Ready != 3 || st.Leased != 1 {
		t.Fatalf("stats: %v", st)
	}
	if _, _, err := c.DLQList(ctx, "nope", "", 10); !errors.Is(err, ErrUnknownQueue) {
		t.Fatalf("dlq of unknown queue: %v", err)
	}
}

func TestStreamingSubtasksWithAck(t *testing.T) {
	_, c := startNode(t, Config{})
	ctx := ctxT(t)
	enqueueN(t, c, "parent", 1)
	d := pullOne(t, c, "parent", 0)
	r, err := c.AckOne(ctx, &AckItem{Receipt: d.Receipt, SubtaskQueue: "child", Subtasks: []*EnqueueItem{{Payload: []byte("a")}, {Payload: []byte("b")}}})
	if err != nil || len(r.SubtaskIds) != 2 {
		t.Fatalf("ack with subtasks: %v %v", r, err)
	}
	if st := queueStats(t, c, "child"); st.Ready != 2 {
		t.Fatalf("child stats: %v", st)
	}
	// A subtask that cannot be stored fails the ack: neither happens.
	enqueueN(t, c, "parent", 1)
	d = pullOne(t, c, "parent", 0)
	_, err = c.AckOne(ctx, &AckItem{Receipt: d.Receipt, SubtaskQueue: "child", Subtasks: []*EnqueueItem{{Payload: make([]byte, DefaultMaxPayload+1)}}})
	if !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("oversized subtask: %v", err)
	}
	if st := queueStats(t, c, "parent"); st.Leased != 1 {
		t.Fatalf("parent lost its lease after a refused ack: %v", st)
	}
	if st := queueStats(t, c, "child"); st.Ready != 2 {
		t.Fatalf("child got a subtask of a refused ack: %v", st)
	}
	if _, err := c.AckOne(ctx, &AckItem{Receipt: d.Receipt, SubtaskQueue: "a.>", Subtasks: []*EnqueueItem{{}}}); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("subtask queue a.>: %v", err)
	}
}
