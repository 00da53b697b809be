package mqnode

import (
	"bytes"
	"context"
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/mqnode/throttle"
	"github.com/mqmesh/mqmesh/mqnode/tracepb"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// FuzzDecodeTask: any stored bytes decode to a task or an ErrCorrupt error,
// never a panic; a valid frame round-trips.
func FuzzDecodeTask(f *testing.F) {
	good, _ := encodeTask(&wirepb.Task{Id: "x", Queue: "q", Payload: []byte("p"), Attempt: 2})
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		task, err := decodeTask(b)
		if err != nil {
			return
		}
		again, err := encodeTask(task)
		if err != nil {
			t.Fatal(err)
		}
		t2, err := decodeTask(again)
		if err != nil || !proto.Equal(task, t2) {
			t.Fatalf("round trip changed the task: %v vs %v (%v)", task, t2, err)
		}
	})
}

// FuzzFrameBitFlip: flipping any bit of a stored frame is detected.
func FuzzFrameBitFlip(f *testing.F) {
	f.Add([]byte("payload"), uint16(7))
	f.Fuzz(func(t *testing.T, payload []byte, bit uint16) {
		frame, err := encodeTask(&wirepb.Task{Id: "id", Queue: "q", Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		i := int(bit) % (len(frame) * 8)
		frame[i/8] ^= 1 << (i % 8)
		if task, err := decodeTask(frame); err == nil && bytes.Equal(task.Payload, payload) && task.Id == "id" {
			t.Fatalf("bit %d flipped and not detected", i)
		}
	})
}

func FuzzParseDeadID(f *testing.F) {
	f.Add(deadID(42))
	f.Add("zz")
	f.Fuzz(func(t *testing.T, s string) {
		seq, err := parseDeadID(s)
		if err == nil && deadID(seq) != s && deadID(seq) != lower(s) {
			t.Fatalf("parse(%q) = %d, renders as %q", s, seq, deadID(seq))
		}
	})
}

func lower(s string) string { return string(bytes.ToLower([]byte(s))) }

// FuzzRequests feeds arbitrary bodies to every operation's decoder and
// handler: each answers with a reply (an error code for garbage), never
// panics, and the node keeps serving.
func FuzzRequests(f *testing.F) {
	seeds := []proto.Message{
		&wirepb.EnqueueRequest{Queue: "q", Items: []*wirepb.EnqueueItem{{Payload: []byte("a"), DedupKey: "k", DelayMs: 5}}},
		&wirepb.PullRequest{Queue: "q", MaxTasks: 3, MaxWaitMs: 1, LeaseMs: 100, WorkerId: "w"},
		&wirepb.AckRequest{Items: []*wirepb.AckItem{{Receipt: make([]byte, 16), Kind: wirepb.AckKind_NACK}}},
		&wirepb.StatsRequest{Queue: "q"},
		&wirepb.DLQRequest{Queue: "q", Op: wirepb.DLQOp_DLQ_REQUEUE, DeadIds: []string{deadID(1)}},
	}
	for i, m := range seeds {
		b, _ := proto.Marshal(m)
		f.Add(uint8(i), b)
	}
	f.Add(uint8(0), []byte{0xff})
	tr, _ := proto.Marshal(&tracepb.TraceRequest{TaskId: "0193a4c2-7d1e-7b3a-9f00-5e1d2c3b4a59"})
	f.Add(uint8(6), tr)
	n, c := startNode(f, Config{MaxPullWait: 5 * time.Millisecond, MaxPayload: 4096, MaxEnqueueBatch: 100})
	handlers := []func(context.Context, []byte) proto.Message{n.svc.enqueue, n.svc.pull, n.svc.ack, n.svc.stats, n.svc.dlq, n.svc.info, n.svc.traceFind}
	f.Fuzz(func(t *testing.T, op uint8, body []byte) {
		rep := handlers[int(op)%len(handlers)](context.Background(), body)
		if rep == nil {
			t.Fatal("nil reply")
		}
		if _, err := proto.Marshal(rep); err != nil {
			t.Fatalf("reply does not encode: %v", err)
		}
	})
	if _, err := c.Info(context.Background()); err != nil {
		f.Fatalf("node stopped serving: %v", err)
	}
}

// FuzzDecodeUsage: any bytes on thr.usage.> decode to valid names and
// finite, non-negative usage (or an error), never a panic; feeding the
// result to a throttle keeps its shares finite.
func FuzzDecodeUsage(f *testing.F) {
	good, _ := proto.Marshal(&wirepb.UsageReport{Idc: "sh", Node: "h1", Backends: []*wirepb.BackendUsage{{Backend: "user-db", Usage: 12.5, Want: -1}}})
	f.Add(good)
	f.Add([]byte{})
	nan, _ := proto.Marshal(&wirepb.UsageReport{Idc: "sh", Node: "h1", Backends: []*wirepb.BackendUsage{{Backend: "user-db", Usage: math.NaN(), Want: math.Inf(1)}}})
	f.Add(nan)
	cfg := throttle.Config{Backends: map[string]throttle.BackendConfig{"user-db": {Budget: 100}}}.WithDefaults()
	f.Fuzz(func(t *testing.T, b []byte) {
		node, us, err := decodeUsage(b)
		if err != nil {
			return
		}
		th := throttle.New(cfg, "self.n", func() int64 { return 1_700_000_000_000 })
		th.Peer(node, us)
		th.Share()
		for _, u := range us {
			if !finite(u.Usage) || u.Usage < 0 || (u.Want < 0 && u.Want != throttle.Unbounded) || math.IsNaN(u.Want) {
				t.Fatalf("decoded usage %+v", u)
			}
		}
		for _, bs := range th.Backends() {
			if !finite(bs.Share) || bs.Share < 0 || !finite(bs.MeshUsage) {
				t.Fatalf("backend state %+v from report %+v", bs, us)
			}
		}
	})
}
