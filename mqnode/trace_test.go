package mqnode

import (
	"slices"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// With trace.sample 0.5 about half of the tasks are traced, each whole:
// its enqueue and its lease, or nothing.
func TestTraceSampleKeepsWholeTasks(t *testing.T) {
	n, c := startNode(t, Config{Trace: TraceConfig{Sample: 0.5}})
	ctx := ctxT(t)
	items := make([]*EnqueueItem, 400)
	for i := range items {
		items[i] = &EnqueueItem{Payload: []byte("x")}
	}
	res, err := c.Enqueue(ctx, "s", items...)
	if err != nil {
		t.Fatal(err)
	}
	for got := 0; got < len(items); {
		ds, _, err := c.Pull(ctx, PullRequest{Queue: "s", MaxTasks: 400, MaxWait: time.Second, WorkerID: "w"})
		if err != nil {
			t.Fatal(err)
		}
		got += len(ds)
	}
	traced := 0
	eventually(t, 10*time.Second, "the traces written", func() bool {
		traced = 0
		for _, r := range res {
			evs, err := n.Trace(r.Id)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case len(evs) == 0:
			case len(evs) == 2 && evs[0].Kind == TraceEnqueue && evs[1].Kind == TraceLease && evs[1].TaskId == r.Id:
				traced++
			default:
				return false // still being written
			}
		}
		return traced > 0
	})
	if traced < 120 || traced > 280 {
		t.Fatalf("%d of 400 tasks traced at sample 0.5", traced)
	}
	t.Logf("%d of 400 tasks traced at sample 0.5", traced)
}

// Outside the sample a task that succeeds at once leaves no trace, and a
// task that fails is traced whole from its first failure on: its enqueue
// and first lease are written with the failure, then every later step,
// also after a dead letter is requeued.
func TestTraceKeepsEveryFailedTask(t *testing.T) {
	n, c := startNode(t, Config{Trace: TraceConfig{Sample: 1e-12}}) // no task is sampled
	ctx := ctxT(t)
	res, err := c.Enqueue(ctx, "f", &EnqueueItem{Payload: []byte("ok"), Headers: map[string]string{HeaderProducer: "p1"}},
		&EnqueueItem{Payload: []byte("nack")}, &EnqueueItem{Payload: []byte("dead")}, &EnqueueItem{Payload: []byte("expire")})
	if err != nil {
		t.Fatal(err)
	}
	ok, nacked, dead, expired := res[0].Id, res[1].Id, res[2].Id, res[3].Id
	pull := func(lease time.Duration) map[string][]byte {
		t.Helper()
		ds, _, err := c.Pull(ctx, PullRequest{Queue: "f", MaxTasks: 10, MaxWait: 2 * time.Second, WorkerID: "w1", Lease: lease})
		if err != nil || len(ds) == 0 {
			t.Fatalf("pull: %v, %d tasks", err, len(ds))
		}
		out := map[string][]byte{}
		for _, d := range ds {
			out[d.Task.Id] = d.Receipt
		}
		return out
	}
	ack := func(receipt []byte, kind AckKind) {
		t.Helper()
		if _, err := c.Ack(ctx, &AckItem{Receipt: receipt, Kind: kind, Error: "boom"}); err != nil {
			t.Fatal(err)
		}
	}
	first := pull(300 * time.Millisecond)
	if len(first) != 4 {
		t.Fatalf("first pull: %d tasks", len(first))
	}
	ack(first[ok], wirepb.AckKind_ACK)
	ack(first[nacked], wirepb.AckKind_NACK)
	// Given up without an error text: the task has no last error of its own.
	if _, err := c.Ack(ctx, &AckItem{Receipt: first[dead], Kind: wirepb.AckKind_DEAD}); err != nil {
		t.Fatal(err)
	}
	// dead comes back by an operator's requeue (attempts reset: the trace
	// goes on because a requeued task keeps why it failed).
	if n, err := c.DLQRequeue(ctx, "f"); err != nil || n != 1 {
		t.Fatalf("requeue: %d, %v", n, err)
	}
	// expired: its lease runs out; nacked comes back after its backoff.
	seen := map[string]bool{}
	eventually(t, 20*time.Second, "the nacked and expired tasks again", func() bool {
		ds, _, err := c.Pull(ctx, PullRequest{Queue: "f", MaxTasks: 10, MaxWait: 200 * time.Millisecond, WorkerID: "w1"})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			seen[d.Task.Id] = true
			ack(d.Receipt, wirepb.AckKind_ACK)
		}
		return seen[nacked] && seen[expired] && seen[dead]
	})
	kinds := func(id string) []string {
		evs, err := n.Trace(id)
		if err != nil {
			t.Fatal(err)
		}
		var ks []string
		for _, e := range evs {
			ks = append(ks, e.Kind)
		}
		return ks
	}
	want := map[string][]string{
		ok:      nil,
		nacked:  {TraceEnqueue, TraceLease, TraceNack, TraceRetry, TraceLease, TraceAck},
		dead:    {TraceEnqueue, TraceLease, TraceGiveUp, TraceDead, TraceLease, TraceAck},
		expired: {TraceEnqueue, TraceLease, TraceExpire, TraceRetry, TraceLease, TraceAck},
	}
	eventually(t, 10*time.Second, "the traces written", func() bool {
		for id, w := range want {
			if !slices.Equal(kinds(id), w) {
				return false
			}
		}
		return true
	})
	for id, w := range want {
		if got := kinds(id); !slices.Equal(got, w) {
			t.Errorf("task %s: events %v, want %v", id, got, w)
		}
	}
}

// The producer travels once per request (EnqueueRequest.producer), not as
// a header per task: the delivered task and its trace name it, and an
// item's own mqmesh-producer header wins.
func TestProducerTravelsPerRequest(t *testing.T) {
	n, c := startNode(t, Config{Trace: TraceConfig{Sample: 1}})
	ctx := ctxT(t)
	res, err := c.Enqueue(ctx, "p", &EnqueueItem{Payload: []byte("a")},
		&EnqueueItem{Payload: []byte("b"), Headers: map[string]string{HeaderProducer: "own"}})
	if err != nil {
		t.Fatal(err)
	}
	ds, _, err := c.Pull(ctx, PullRequest{Queue: "p", MaxTasks: 2, MaxWait: time.Second, WorkerID: "w"})
	if err != nil || len(ds) != 2 {
		t.Fatalf("pull: %v, %d tasks", err, len(ds))
	}
	want := map[string]string{res[0].Id: c.producerName(), res[1].Id: "own"}
	for _, d := range ds {
		if d.Task.Producer != want[d.Task.Id] {
			t.Errorf("task %s: producer %q, want %q", d.Task.Id, d.Task.Producer, want[d.Task.Id])
		}
		if _, ok := d.Task.Headers[HeaderProducer]; ok && d.Task.Id == res[0].Id {
			t.Errorf("task %s carries a producer header: %v", d.Task.Id, d.Task.Headers)
		}
	}
	for id, p := range want {
		eventually(t, 10*time.Second, "the enqueue event of "+id, func() bool {
			evs, err := n.Trace(id)
			return err == nil && len(evs) > 0 && evs[0].Kind == TraceEnqueue && evs[0].Producer == p
		})
	}
}
