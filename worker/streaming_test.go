package worker

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestStreamingKillBeforeAck: a pool dies between its handler's return and
// the ack. The parent is delivered again, and the subtasks of the lost
// attempt do not exist (they are written only with the ack); after a
// successful ack every subtask exists exactly once.
func TestStreamingKillBeforeAck(t *testing.T) {
	s := startSingle(t)
	handler := func(ctx context.Context, task *Task) Result {
		return Done().WithSubtasks("child", Subtask{Payload: []byte("a")}, Subtask{Payload: []byte("b")}, Subtask{Payload: []byte("c")})
	}
	p1 := newPool(t, s, Config{ID: "w1", Slots: 1, Lease: 300 * time.Millisecond, ExtendEvery: 100 * time.Millisecond})
	returned := make(chan struct{})
	var once atomic.Bool
	p1.beforeAck = func(*Task, Result) bool {
		if once.CompareAndSwap(false, true) {
			close(returned)
		}
		return false // the pool "dies" here: no ack
	}
	must(t, p1.Handle("parent", handler))
	must(t, p1.Start(context.Background()))
	s.enqueue(t, "parent", 1)
	<-returned
	p1.Kill()
	if st := s.stats(t, "parent"); st.AckedTotal != 0 {
		t.Fatalf("parent acked by a dead pool: %v", st)
	}
	if _, qs, err := s.c.Stats(context.Background(), "child"); err == nil && qs[0].Ready != 0 {
		t.Fatalf("orphan subtasks after the failed ack: %v", qs[0])
	}
	p2 := newPool(t, s, Config{ID: "w2", Slots: 1})
	var parents atomic.Int32
	must(t, p2.Handle("parent", func(ctx context.Context, task *Task) Result {
		parents.Add(1)
		// At least 2: the killed pool's long-poll in flight may have leased
		// it once more before the kill completed.
		if task.Attempt < 2 {
			t.Errorf("redelivered parent has attempt %d, want >= 2", task.Attempt)
		}
		return handler(ctx, task)
	}))
	must(t, p2.Start(context.Background()))
	defer p2.Stop(context.Background())
	eventually(t, 10*time.Second, "parent redelivered and acked", func() bool { return s.stats(t, "parent").AckedTotal == 1 })
	if got := s.stats(t, "child"); got.Ready != 3 || got.EnqueuedTotal != 3 {
		t.Fatalf("children after the ack: %v (want exactly 3)", got)
	}
	if parents.Load() != 1 {
		t.Fatalf("parent handled %d times by the second pool", parents.Load())
	}
}
