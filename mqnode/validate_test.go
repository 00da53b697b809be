package mqnode

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// rawCall sends a hand-built request, bypassing the client's own checks
// (and its time.Duration fields, which could not even hold these numbers).
func rawCall(t *testing.T, c *Client, op string, req, rep proto.Message) {
	t.Helper()
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Conn().RequestWithContext(ctxT(t), c.subj(op), b)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(m.Data, rep); err != nil {
		t.Fatal(err)
	}
}

func wantBadRequest(t *testing.T, what string, e *wirepb.Error, field string) {
	t.Helper()
	if e.GetCode() != wirepb.Code_BAD_REQUEST || !strings.Contains(e.GetMessage(), field) {
		t.Fatalf("%s: got %v %q, want BAD_REQUEST naming %s", what, e.GetCode(), e.GetMessage(), field)
	}
}

// The hostile numbers of issue 13: each got through before and did harm
// (expired at once, delivered at once, lease over at once, retry at once).
func TestHostileNumbersAreRefused(t *testing.T) {
	_, c := startNode(t, Config{})
	ctx := ctxT(t)
	enq := func(it *wirepb.EnqueueItem) *wirepb.Error {
		var rep wirepb.EnqueueReply
		rawCall(t, c, OpEnqueue, &wirepb.EnqueueRequest{Queue: "q", Items: []*wirepb.EnqueueItem{it}}, &rep)
		return rep.Error
	}
	for _, tc := range []struct {
		name, field string
		it          *wirepb.EnqueueItem
	}{
		{"ttl MaxInt64", "ttl_ms", &wirepb.EnqueueItem{TtlMs: math.MaxInt64}},
		{"delay MaxInt64", "delay_ms", &wirepb.EnqueueItem{DelayMs: math.MaxInt64}},
		{"delay negative", "delay_ms", &wirepb.EnqueueItem{DelayMs: -1}},
		{"not-before MaxInt64", "not_before_unix_ms", &wirepb.EnqueueItem{NotBeforeUnixMs: math.MaxInt64}},
		{"max attempts", "max_attempts", &wirepb.EnqueueItem{MaxAttempts: math.MaxUint32}},
	} {
		wantBadRequest(t, tc.name, enq(tc.it), tc.field)
	}
	if _, qs, err := c.Stats(ctx, ""); err != nil || len(qs) != 0 {
		t.Fatalf("a refused enqueue created or stored something: %v %v", qs, err)
	}

	// lease_ms = 1e13 used to wrap to a negative lease that ran out at once.
	if _, err := c.Enqueue(ctx, "q", &EnqueueItem{Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	var pr wirepb.PullReply
	rawCall(t, c, OpPull, &wirepb.PullRequest{Queue: "q", MaxTasks: 1, LeaseMs: 1e13}, &pr)
	wantBadRequest(t, "lease 1e13", pr.Error, "lease_ms")
	pr.Reset()
	rawCall(t, c, OpPull, &wirepb.PullRequest{Queue: "q", MaxTasks: 1, MaxWaitMs: -5}, &pr)
	wantBadRequest(t, "negative wait", pr.Error, "max_wait_ms")

	// max_wait_ms = 1e13 is clamped to max_pull_wait (documented), not wrapped
	// into "answer at once": with a task ready it returns it.
	pr.Reset()
	rawCall(t, c, OpPull, &wirepb.PullRequest{Queue: "q", MaxTasks: math.MaxUint32, MaxWaitMs: 1e13, LeaseMs: 60_000}, &pr)
	if pr.Error != nil || len(pr.Deliveries) != 1 {
		t.Fatalf("pull with huge wait and max_tasks: %v, %d tasks", pr.Error, len(pr.Deliveries))
	}
	d := pr.Deliveries[0]
	if left := time.Until(time.UnixMilli(d.LeaseDeadlineUnixMs)); left < 50*time.Second {
		t.Fatalf("lease of 60 s ends in %s", left)
	}

	// A nack with delay 1e13 came back after 1 ms.
	ack := func(it *wirepb.AckItem) *wirepb.Error {
		var rep wirepb.AckReply
		rawCall(t, c, OpAck, &wirepb.AckRequest{Items: []*wirepb.AckItem{it}}, &rep)
		if rep.Error != nil {
			return rep.Error
		}
		return rep.Results[0].Error
	}
	wantBadRequest(t, "nack delay 1e13", ack(&wirepb.AckItem{Receipt: d.Receipt, Kind: wirepb.AckKind_NACK, DelayMs: 1e13}), "delay_ms")
	wantBadRequest(t, "extend 1e13", ack(&wirepb.AckItem{Receipt: d.Receipt, Kind: wirepb.AckKind_EXTEND, ExtendMs: 1e13}), "extend_ms")
	wantBadRequest(t, "extend negative", ack(&wirepb.AckItem{Receipt: d.Receipt, Kind: wirepb.AckKind_EXTEND, ExtendMs: -1}), "extend_ms")
	// The refused nack left the lease alone: the receipt still settles.
	if e := ack(&wirepb.AckItem{Receipt: d.Receipt, Kind: wirepb.AckKind_NACK, DelayMs: 3_600_000}); e != nil {
		t.Fatalf("valid nack after refused ones: %v", e)
	}
	st := queueStats(t, c, "q")
	if st.Delayed != 1 || st.Ready != 0 || st.Dead != 0 {
		t.Fatalf("nack with a 1 h delay: %+v", st)
	}
	// Subtasks get the same checks.
	if _, err := c.Enqueue(ctx, "s", &EnqueueItem{}); err != nil {
		t.Fatal(err)
	}
	ds, _, err := c.Pull(ctx, PullRequest{Queue: "s"})
	if err != nil || len(ds) != 1 {
		t.Fatal(ds, err)
	}
	wantBadRequest(t, "subtask ttl", ack(&wirepb.AckItem{Receipt: ds[0].Receipt, Subtasks: []*wirepb.EnqueueItem{{TtlMs: math.MaxInt64}}}), "subtasks[0].ttl_ms")
}

// Values at the limits are accepted and give sane times.
func TestLargestNumbersStillWork(t *testing.T) {
	n, c := startNode(t, Config{})
	res, err := c.Enqueue(ctxT(t), "q",
		&EnqueueItem{Payload: []byte("a"), DelayMs: n.cfg.MaxDelay.Milliseconds(), TtlMs: n.cfg.MaxTTL.Milliseconds()},
		&EnqueueItem{Payload: []byte("b"), TtlMs: n.cfg.MaxTTL.Milliseconds(), MaxAttempts: MaxAttemptsLimit})
	if err != nil || len(res) != 2 {
		t.Fatal(res, err)
	}
	st := queueStats(t, c, "q")
	if st.Delayed != 1 || st.Ready != 1 || st.Dead != 0 {
		t.Fatalf("at the limits: %+v", st)
	}
}

func TestSaturatingArithmetic(t *testing.T) {
	if addMs(math.MaxInt64-1, 5) != math.MaxInt64 || addMs(math.MinInt64+1, -5) != math.MinInt64 || addMs(2, 3) != 5 {
		t.Fatal("addMs does not saturate")
	}
	if msDuration(1e13) != math.MaxInt64 || msDuration(-1e13) != math.MinInt64 || msDuration(5) != 5*time.Millisecond {
		t.Fatal("msDuration does not saturate")
	}
	if err := checkMs("f", 1e13, time.Hour); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "f = ") {
		t.Fatalf("checkMs: %v", err)
	}
}

// FuzzNumbers: any delay, not-before, ttl, lease and nack delay is either
// refused with BAD_REQUEST or gives times that did not wrap: a task that
// expires expires after it was created, a lease ends in the future, a nack
// never makes the task ready before now.
func FuzzNumbers(f *testing.F) {
	f.Add(int64(0), int64(0), int64(0), int64(0), int64(0))
	f.Add(int64(math.MaxInt64), int64(0), int64(math.MaxInt64), int64(1e13), int64(1e13))
	f.Add(int64(-1), int64(math.MaxInt64), int64(-1), int64(-1), int64(-1))
	f.Add(int64(5), int64(1), int64(9e15), int64(9e15), int64(math.MinInt64))
	n, _ := startNode(f, Config{MaxPullWait: time.Millisecond})
	svc := n.svc
	ctx := func() (c context.Context) { return context.Background() }
	f.Fuzz(func(t *testing.T, delay, notBefore, ttl, lease, nackDelay int64) {
		body, _ := proto.Marshal(&wirepb.EnqueueRequest{Queue: "fz", Items: []*wirepb.EnqueueItem{{DelayMs: delay, NotBeforeUnixMs: notBefore, TtlMs: ttl}}})
		er := svc.enqueue(ctx(), body).(*wirepb.EnqueueReply)
		if er.Error != nil && er.Error.Code != wirepb.Code_BAD_REQUEST {
			t.Fatalf("enqueue: %v", er.Error)
		}
		body, _ = proto.Marshal(&wirepb.PullRequest{Queue: "fz", MaxTasks: 1000, LeaseMs: lease})
		pr := svc.pull(ctx(), body).(*wirepb.PullReply)
		if pr.Error != nil {
			if pr.Error.Code != wirepb.Code_BAD_REQUEST {
				t.Fatalf("pull: %v", pr.Error)
			}
			return
		}
		now := time.Now().UnixMilli()
		var items []*wirepb.AckItem
		for _, d := range pr.Deliveries {
			tk := d.Task
			if d.LeaseDeadlineUnixMs < now || tk.NotBeforeUnixMs < 0 || (tk.ExpiresUnixMs != 0 && tk.ExpiresUnixMs < tk.CreatedUnixMs) {
				t.Fatalf("wrapped times: delivery %v", d)
			}
			items = append(items, &wirepb.AckItem{Receipt: d.Receipt, Kind: wirepb.AckKind_NACK, DelayMs: nackDelay})
		}
		if len(items) == 0 {
			return
		}
		body, _ = proto.Marshal(&wirepb.AckRequest{Items: items})
		ar := svc.ack(ctx(), body).(*wirepb.AckReply)
		for _, r := range ar.Results {
			if r.Error != nil && r.Error.Code != wirepb.Code_BAD_REQUEST {
				t.Fatalf("nack: %v", r.Error)
			}
			if r.Error != nil { // refused: settle it so the queue stays small
				continue
			}
		}
		for _, it := range items {
			it.Kind, it.DelayMs = wirepb.AckKind_ACK, 0
		}
		body, _ = proto.Marshal(&wirepb.AckRequest{Items: items})
		svc.ack(ctx(), body)
		if nackDelay > 1000 && nackDelay <= n.cfg.MaxDelay.Milliseconds() {
			// A long nack delay must not make the task ready now.
			body, _ = proto.Marshal(&wirepb.PullRequest{Queue: "fz", MaxTasks: 1000})
			for _, d := range svc.pull(ctx(), body).(*wirepb.PullReply).Deliveries {
				if d.Task.Attempt > 1 {
					t.Fatalf("nacked with delay %d ms, delivered again at once: %v", nackDelay, d)
				}
			}
		}
	})
}
