package mqnode

import (
	"testing"
	"time"
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
