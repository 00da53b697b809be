package mqnode

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func enqueueN(t testing.TB, c *Client, queue string, n int) []string {
	t.Helper()
	items := make([]*EnqueueItem, n)
	for i := range items {
		items[i] = &EnqueueItem{Payload: []byte(fmt.Sprintf("task-%d", i))}
	}
	res, err := c.Enqueue(ctxT(t), queue, items...)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	for i, r := range res {
		ids[i] = r.Id
	}
	return ids
}

func TestRoundTrip(t *testing.T) {
	_, c := startNode(t, Config{})
	ctx := ctxT(t)
	res, err := c.Enqueue(ctx, "orders", &EnqueueItem{Payload: []byte("hello"), Headers: map[string]string{"traceparent": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	ds, _, err := c.Pull(ctx, PullRequest{Queue: "orders", MaxTasks: 10, WorkerID: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 {
		t.Fatalf("got %d deliveries, want 1", len(ds))
	}
	d := ds[0]
	if d.Task.Id != res[0].Id || !bytes.Equal(d.Task.Payload, []byte("hello")) || d.Task.Attempt != 1 || d.Task.Headers["traceparent"] != "x" {
		t.Fatalf("unexpected delivery %v", d.Task)
	}
	if _, err := c.AckOne(ctx, &AckItem{Receipt: d.Receipt}); err != nil {
		t.Fatal(err)
	}
	// A second ack of the same receipt is stale.
	if _, err := c.AckOne(ctx, &AckItem{Receipt: d.Receipt}); !errors.Is(err, ErrStaleReceipt) {
		t.Fatalf("second ack: got %v, want ErrStaleReceipt", err)
	}
	_, qs, err := c.Stats(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if q := qs[0]; q.Ready != 0 || q.Leased != 0 || q.EnqueuedTotal != 1 || q.AckedTotal != 1 {
		t.Fatalf("stats after ack: %v", q)
	}
}

func TestBatchAndOrder(t *testing.T) {
	_, c := startNode(t, Config{ReadyBuffer: 7})
	ctx := ctxT(t)
	ids := enqueueN(t, c, "q", 100)
	var got []string
	for len(got) < 100 {
		ds, _, err := c.Pull(ctx, PullRequest{Queue: "q", MaxTasks: 13})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			t.Fatalf("empty pull after %d tasks", len(got))
		}
		items := make([]*AckItem, len(ds))
		for i, d := range ds {
			got = append(got, d.Task.Id)
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
	for i := range ids {
		if got[i] != ids[i] {
			t.Fatalf("delivery %d is %s, want %s (order within a queue)", i, got[i], ids[i])
		}
	}
}
