package mqnode

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// A pull of 3 × 700 KiB tasks used to build a 2.1 MB reply that NATS
// refused: the client timed out, the node logged nothing, and an attempt was
// counted. Now it returns what fits; the rest stays ready, attempt unchanged.
func TestPullReturnsWhatFits(t *testing.T) {
	_, c := startNode(t, Config{})
	ctx := ctxT(t)
	for i := 0; i < 3; i++ {
		if _, err := c.Enqueue(ctx, "big", &EnqueueItem{Payload: bytes.Repeat([]byte{byte('a' + i)}, 700<<10)}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for round := 0; round < 3; round++ {
		ds, ready, err := c.Pull(ctx, PullRequest{Queue: "big", MaxTasks: 3})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if len(ds) != 1 || ready != uint64(2-round) {
			t.Fatalf("round %d: %d tasks, %d ready after; want 1 and %d", round, len(ds), ready, 2-round)
		}
		if d := ds[0]; d.Task.Attempt != 1 || seen[d.Task.Id] || len(d.Task.Payload) != 700<<10 {
			t.Fatalf("round %d: attempt %d, seen %v, %d bytes", round, d.Task.Attempt, seen[d.Task.Id], len(d.Task.Payload))
		}
		seen[ds[0].Task.Id] = true
	}
	// Small tasks still come many to a reply.
	items := make([]*EnqueueItem, 50)
	for i := range items {
		items[i] = &EnqueueItem{Payload: []byte("small")}
	}
	if _, err := c.Enqueue(ctx, "small", items...); err != nil {
		t.Fatal(err)
	}
	if ds, _, err := c.Pull(ctx, PullRequest{Queue: "small", MaxTasks: 100}); err != nil || len(ds) != 50 {
		t.Fatalf("small tasks: %d, %v", len(ds), err)
	}
}

// A task that could not be delivered alone in one reply is refused at
// enqueue, against the node's limit.
func TestTaskTooLargeForAReplyIsRefused(t *testing.T) {
	n, c := startNode(t, Config{})
	item := &EnqueueItem{Payload: make([]byte, n.cfg.MaxPayload), Headers: map[string]string{"h": strings.Repeat("x", 60<<10)}}
	_, err := c.Enqueue(ctxT(t), "q", item)
	if !errors.Is(err, ErrPayloadTooLarge) || !strings.Contains(err.Error(), "reply") {
		t.Fatalf("got %v, want PAYLOAD_TOO_LARGE about the reply size", err)
	}
	item.Headers = nil
	if _, err := c.Enqueue(ctxT(t), "q", item); err != nil {
		t.Fatalf("a max-size payload must still be accepted: %v", err)
	}
	if ds, _, err := c.Pull(ctxT(t), PullRequest{Queue: "q"}); err != nil || len(ds) != 1 {
		t.Fatalf("max-size task not delivered: %d %v", len(ds), err)
	}
}

// A pull reply that cannot be sent gives its leases back at once, with no
// attempt counted.
func TestUnsentPullReplyReleasesLeases(t *testing.T) {
	n, c := startNode(t, Config{})
	ctx := ctxT(t)
	if _, err := c.Enqueue(ctx, "q", &EnqueueItem{Payload: []byte("a")}, &EnqueueItem{Payload: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	body, _ := proto.Marshal(&wirepb.PullRequest{Queue: "q", MaxTasks: 2, LeaseMs: 3_600_000})
	rep := n.svc.pull(ctx, body).(*wirepb.PullReply)
	if len(rep.Deliveries) != 2 {
		t.Fatalf("pulled %d", len(rep.Deliveries))
	}
	// A message not bound to a subscription cannot be answered.
	n.svc.replied(&nats.Msg{Subject: "mq.x.pull", Reply: "_INBOX.gone"}, rep)
	if st := queueStats(t, c, "q"); st.Ready != 2 || st.Leased != 0 {
		t.Fatalf("after an unsent reply: %+v", st)
	}
	ds, _, err := c.Pull(ctx, PullRequest{Queue: "q", MaxTasks: 2})
	if err != nil || len(ds) != 2 {
		t.Fatalf("pull again: %d %v", len(ds), err)
	}
	for _, d := range ds {
		if d.Task.Attempt != 1 {
			t.Fatalf("attempt counted for an unsent delivery: %v", d.Task)
		}
	}
	// The old receipts are stale.
	if _, err := c.AckOne(ctx, &AckItem{Receipt: rep.Deliveries[0].Receipt}); !errors.Is(err, ErrStaleReceipt) {
		t.Fatalf("old receipt: %v", err)
	}
}

// Stats over many queues pages by bytes; the client follows the pages.
func TestStatsPagesByBytes(t *testing.T) {
	// A small NATS max payload makes a few hundred queues span pages.
	n, c := startNode(t, Config{MaxPayload: 4 << 10, NATSMaxPayload: 16 << 10, MemTableSize: 4 << 20})
	ctx := ctxT(t)
	const queues = 300
	for i := 0; i < queues; i++ {
		if _, err := c.Enqueue(ctx, fmt.Sprintf("queue-with-a-long-name-%04d", i), &EnqueueItem{Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	body, _ := proto.Marshal(&wirepb.StatsRequest{})
	first := n.svc.stats(ctx, body).(*wirepb.StatsReply)
	if first.Next == "" || len(first.Queues) >= queues {
		t.Fatalf("one page held %d queues (next %q)", len(first.Queues), first.Next)
	}
	if b, _ := proto.Marshal(first); len(b) > n.cfg.NATSMaxPayload {
		t.Fatalf("page of %d bytes", len(b))
	}
	_, qs, err := c.Stats(ctx, "")
	if err != nil || len(qs) != queues {
		t.Fatalf("client got %d queues, %v", len(qs), err)
	}
	for i, q := range qs {
		if q.Queue != fmt.Sprintf("queue-with-a-long-name-%04d", i) || q.Ready != 1 {
			t.Fatalf("queue %d: %v", i, q)
		}
	}
}

// itemSizeBound never under-counts proto.Size, whatever the item holds
// (the fast path of the reply-fit check relies on it).
func FuzzItemSizeBound(f *testing.F) {
	f.Add([]byte("payload"), "k", "v", "dedup", int64(1), int64(2), int64(3), uint32(4), []byte(nil))
	f.Add([]byte{}, "", "", "", int64(-1), int64(math.MaxInt64), int64(math.MinInt64), uint32(math.MaxUint32), []byte{0x48, 0x01})
	f.Fuzz(func(t *testing.T, payload []byte, k, v, dedup string, delay, notBefore, ttl int64, attempts uint32, unknown []byte) {
		it := &wirepb.EnqueueItem{Payload: payload, DelayMs: delay, NotBeforeUnixMs: notBefore, TtlMs: ttl, MaxAttempts: attempts, DedupKey: dedup}
		if k != "" || v != "" {
			it.Headers = map[string]string{k: v, k + "2": v + v}
		}
		it.ProtoReflect().SetUnknown(unknown)
		if b, s := itemSizeBound(it), proto.Size(it); b < s {
			t.Fatalf("bound %d < proto.Size %d", b, s)
		}
	})
}
