package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/internal/meshtest"
	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
)

// A task enqueued in IDC A with the producer's trace context, retried once
// by a worker in IDC B and then acked: the trace, looked up from IDC B,
// shows every step with the worker, its host and tier, and the handler
// saw the producer's trace.
func TestTraceOfATaskRetriedInAnotherIDC(t *testing.T) {
	fast := backlog.TierPolicy{High: 1, MinInterval: 50 * time.Millisecond, Heartbeat: time.Second}
	mc := meshtest.New(t, meshtest.Options{Insecure: true, Logger: testlog.NewLevel(t, 4),
		Node: func(cfg *mesh.NodeAgentConfig) { cfg.Backlog = [backlog.NumTiers]backlog.TierPolicy{fast, fast, fast} }})
	a := mc.MustAdd(t, "east", "na").Agent()
	b := mc.MustAdd(t, "west", "nb").Agent()
	must(t, mc.WaitFormed(context.Background(), 20*time.Second))

	// The only pool is in west; its node is nb.
	nc, err := b.Node.Connect()
	must(t, err)
	t.Cleanup(nc.Close)
	f := everythingFilter()
	p, err := New(nc, Config{ID: "pool-west", IDC: "west", Host: "hostw", Node: "nb", Slots: 2, Filters: &f,
		Mesh:   mc.WorkerMesh(),
		Logger: testlog.NewLevel(t, 4)})
	must(t, err)
	producerTrace := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:  trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled,
	})
	var sawTrace atomic.Bool
	done := make(chan struct{})
	must(t, p.Handle("mail", func(ctx context.Context, task *Task) Result {
		if sc := trace.SpanContextFromContext(ctx); sc.TraceID() == producerTrace.TraceID() && sc.IsRemote() && task.SpanContext().Equal(sc) {
			sawTrace.Store(true)
		}
		if task.Attempt == 1 {
			return Retry(errors.New("smtp 451 try later"), 20*time.Millisecond)
		}
		close(done)
		return Done()
	}))
	must(t, p.Start(context.Background()))
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	eventually(t, 20*time.Second, "node na sees the west worker", func() bool {
		return len(a.Mesh.Alive(func(m mesh.Member) bool { return m.Meta.Role == mesh.RoleWorker })) == 1
	})

	ca, err := a.Node.Client()
	must(t, err)
	t.Cleanup(ca.Close)
	ctx := trace.ContextWithSpanContext(context.Background(), producerTrace)
	res, err := ca.Enqueue(ctx, "mail", &mqnode.EnqueueItem{Payload: []byte("hi")})
	must(t, err)
	id := res[0].Id
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the task was not handled twice in west")
	}
	if !sawTrace.Load() {
		t.Error("the handler's ctx did not carry the producer's trace context")
	}

	// Look it up from the other IDC: the request crosses the gateway.
	want := []string{mqnode.TraceEnqueue, mqnode.TraceLease, mqnode.TraceNack, mqnode.TraceRetry, mqnode.TraceLease, mqnode.TraceAck}
	var evs []*mqnode.TraceEvent
	eventually(t, 10*time.Second, "the whole trace recorded", func() bool {
		reps, err := mqnode.FindTrace(context.Background(), nc, id, 2*time.Second)
		if err != nil || len(reps) != 1 {
			return false
		}
		if reps[0].Idc != "east" || reps[0].Node != "na" {
			t.Fatalf("trace answered by %s/%s, want the owner east/na", reps[0].Idc, reps[0].Node)
		}
		evs = reps[0].Events
		return len(evs) >= len(want)
	})
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d: %v", len(evs), len(want), evs)
	}
	for i, e := range evs {
		if e.Kind != want[i] || e.TaskId != id || e.Queue != "mail" || e.Idc != "east" || e.Node != "na" {
			t.Fatalf("event %d = %v, want kind %s", i, e, want[i])
		}
		if i > 0 && e.TimeUnixMs < evs[i-1].TimeUnixMs {
			t.Fatalf("events out of order: %v", evs)
		}
	}
	if e := evs[0]; e.Producer == "" || e.Traceparent != "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01" {
		t.Errorf("enqueue event %v: want the producer and its traceparent", e)
	}
	for _, i := range []int{1, 4} {
		e := evs[i]
		if e.Worker != "pool-west" || e.Host != "hostw" || e.WorkerIdc != "west" || e.Tier != "other" || e.Attempt != uint32(1+i/4) {
			t.Errorf("lease event %v: want pool-west on hostw in west (other IDC), attempt %d", e, 1+i/4)
		}
	}
	if e := evs[2]; e.Error != "smtp 451 try later" || e.Attempt != 1 || e.Worker != "pool-west" {
		t.Errorf("nack event %v", e)
	}
	if e := evs[3]; e.Attempt != 2 || e.DelayMs != 20 {
		t.Errorf("retry event %v: want attempt 2 in 20ms", e)
	}
	if e := evs[5]; e.Attempt != 2 || e.Tier != "other" {
		t.Errorf("ack event %v", e)
	}
}
