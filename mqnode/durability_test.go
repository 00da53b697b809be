package mqnode

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// restartable runs a node over one data dir that a test can stop and start.
type restartable struct {
	t   *testing.T
	cfg Config
	n   *Node
	c   *Client
}

func newRestartable(t *testing.T, cfg Config) *restartable {
	cfg.DataDir = t.TempDir()
	cfg.Listen = ListenNone
	cfg.Name = "n1"
	cfg.Throttle.CPU.Disabled = true // see testlog.NoCPUThrottle
	cfg.Logger = testLogger(t)
	r := &restartable{t: t, cfg: cfg}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *restartable) start() {
	r.t.Helper()
	n, err := New(r.cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	c, err := n.Client()
	if err != nil {
		r.t.Fatal(err)
	}
	r.n, r.c = n, c
}

func (r *restartable) stop() {
	if r.n == nil {
		return
	}
	r.c.Close()
	if err := r.n.Stop(context.Background()); err != nil {
		r.t.Error(err)
	}
	r.n, r.c = nil, nil
}

func TestRestartKeepsTasksAndDropsLeases(t *testing.T) {
	r := newRestartable(t, Config{})
	ids := enqueueN(t, r.c, "q", 10)
	// Lease 3 (never acked), ack 2, nack 1 with a long delay.
	ds, _, err := r.c.Pull(ctxT(t), PullRequest{Queue: "q", MaxTasks: 6, Lease: time.Hour})
	if err != nil || len(ds) != 6 {
		t.Fatal(ds, err)
	}
	for _, d := range ds[3:5] {
		if _, err := r.c.AckOne(ctxT(t), &AckItem{Receipt: d.Receipt}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.c.AckOne(ctxT(t), &AckItem{Receipt: ds[5].Receipt, Kind: AckNack, DelayMs: 3_600_000}); err != nil {
		t.Fatal(err)
	}
	r.stop()
	r.start()
	st := queueStats(t, r.c, "q")
	if st.Ready != 7 || st.Delayed != 1 || st.Leased != 0 {
		t.Fatalf("after restart: %v", st)
	}
	// Old receipts are stale after a restart.
	if _, err := r.c.AckOne(ctxT(t), &AckItem{Receipt: ds[0].Receipt}); !errors.Is(err, ErrStaleReceipt) {
		t.Fatalf("ack with a receipt of the previous run: %v", err)
	}
	got := map[string]bool{}
	for {
		ds, _, err := r.c.Pull(ctxT(t), PullRequest{Queue: "q", MaxTasks: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			break
		}
		for _, d := range ds {
			got[d.Task.Id] = true
		}
	}
	for i, id := range ids {
		want := i < 3 || i >= 6
		if got[id] != want {
			t.Errorf("task %d delivered=%v after restart, want %v", i, got[id], want)
		}
	}
}

func TestRestartLargeBacklogPagesInOrder(t *testing.T) {
	const n = 20000
	r := newRestartable(t, Config{ReadyBuffer: 100, Durability: DurabilityAsync})
	var ids []string
	for len(ids) < n {
		ids = append(ids, enqueueN(t, r.c, "big", 1000)...)
	}
	r.stop()
	r.start()
	if st := queueStats(t, r.c, "big"); st.Ready != n {
		t.Fatalf("ready after restart: %d, want %d", st.Ready, n)
	}
	i := 0
	for i < n {
		ds, _, err := r.c.Pull(ctxT(t), PullRequest{Queue: "big", MaxTasks: 333})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			t.Fatalf("empty pull at %d of %d", i, n)
		}
		items := make([]*AckItem, len(ds))
		for j, d := range ds {
			if d.Task.Id != ids[i] {
				t.Fatalf("delivery %d is %s, want %s", i, d.Task.Id, ids[i])
			}
			i++
			items[j] = &AckItem{Receipt: d.Receipt}
		}
		if _, err := r.c.Ack(ctxT(t), items...); err != nil {
			t.Fatal(err)
		}
	}
	if d := pullOne(t, r.c, "big", 0); d != nil {
		t.Fatalf("extra delivery %v", d.Task.Id)
	}
}

func TestCorruptRecordGoesToDLQ(t *testing.T) {
	r := newRestartable(t, Config{})
	ids := enqueueN(t, r.c, "q", 3)
	r.stop()
	// Flip one byte of the second task's stored body.
	db, err := badger.Open(badger.DefaultOptions(r.cfg.DataDir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: queuePrefix(pfxTask, "q")})
		defer it.Close()
		it.Rewind()
		it.Next()
		k := it.Item().KeyCopy(nil)
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return err
		}
		v[len(v)-1] ^= 0xff
		return txn.Set(k, v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	r.start()
	var got []string
	for {
		d := pullOne(t, r.c, "q", 0)
		if d == nil {
			break
		}
		got = append(got, d.Task.Id)
	}
	if len(got) != 2 || got[0] != ids[0] || got[1] != ids[2] {
		t.Fatalf("delivered %v, want the first and third task only", got)
	}
	eventually(t, 5*time.Second, "corrupt record in the DLQ", func() bool {
		dead, _, err := r.c.DLQList(ctxT(t), "q", "", 10)
		return err == nil && len(dead) == 1 && strings.Contains(dead[0].Reason, "checksum mismatch") && len(dead[0].Raw) > 0
	})
	// It cannot be requeued, only purged.
	dead, _, _ := r.c.DLQList(ctxT(t), "q", "", 10)
	if _, err := r.c.DLQRequeue(ctxT(t), "q", dead[0].DeadId); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("requeue of a corrupt record: %v", err)
	}
	if n, err := r.c.DLQPurge(ctxT(t), "q"); err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
}

func TestBadInput(t *testing.T) {
	cfg := Config{MaxPayload: 1000}
	f := false
	cfg.AutoCreateQueues = &f
	cfg.Queues = map[string]QueueConfig{"known": {}}
	n, c := startNode(t, cfg)
	ctx := ctxT(t)
	for _, q := range []string{"a.>", "*", "a b", "", "_x", strings.Repeat("q", 65)} {
		if _, err := c.Enqueue(ctx, q, &EnqueueItem{}); !errors.Is(err, ErrInvalidName) {
			t.Errorf("enqueue to %q: %v", q, err)
		}
	}
	if _, err := c.Enqueue(ctx, "known", &EnqueueItem{Payload: make([]byte, 1001)}); !errors.Is(err, ErrPayloadTooLarge) {
		t.Errorf("oversized payload: %v", err)
	}
	if _, err := c.Enqueue(ctx, "unknown", &EnqueueItem{}); !errors.Is(err, ErrUnknownQueue) {
		t.Errorf("enqueue to an undeclared queue: %v", err)
	}
	if _, _, err := c.Stats(ctx, "unknown"); !errors.Is(err, ErrUnknownQueue) {
		t.Errorf("stats of an unknown queue: %v", err)
	}
	if _, err := c.AckOne(ctx, &AckItem{Receipt: []byte("short")}); !errors.Is(err, ErrStaleReceipt) {
		t.Errorf("ack with a malformed receipt: %v", err)
	}
	if _, err := c.Ack(ctx); !errors.Is(err, ErrBadRequest) {
		t.Errorf("empty ack: %v", err)
	}
	if _, err := c.Enqueue(ctx, "known"); !errors.Is(err, ErrBadRequest) {
		t.Errorf("empty enqueue: %v", err)
	}
	// Raw requests the client would refuse to send.
	nc := c.Conn()
	send := func(subj string, body []byte) *wirepb.Error {
		m, err := nc.Request(subj, body, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", subj, err)
		}
		var rep wirepb.InfoReply // every reply has its error in field 1
		if err := proto.Unmarshal(m.Data, &rep); err != nil {
			t.Fatalf("%s: undecodable reply: %v", subj, err)
		}
		return rep.Error
	}
	cfgN := n.Config()
	for _, op := range []string{OpEnqueue, OpPull, OpAck, OpStats, OpDLQ, OpInfo, OpReplay, OpTopic} {
		if e := send(Subject(cfgN.IDC, cfgN.Name, op), []byte{0xff, 0xff, 0xff}); e.GetCode() != wirepb.Code_BAD_REQUEST {
			t.Errorf("garbage to %s: %v", op, e)
		}
	}
	if e := send(Subject(cfgN.IDC, cfgN.Name, "nope"), nil); e.GetCode() != wirepb.Code_UNKNOWN_OP {
		t.Errorf("unknown op: %v", e)
	}
	body, _ := proto.Marshal(&wirepb.PullRequest{Queue: "known", MaxWaitMs: -1})
	if e := send(Subject(cfgN.IDC, cfgN.Name, OpPull), body); e.GetCode() != wirepb.Code_BAD_REQUEST {
		t.Errorf("negative wait: %v", e)
	}
	// Nothing was written, and the node still serves.
	if _, err := c.Enqueue(ctx, "known", &EnqueueItem{Payload: []byte("ok")}); err != nil {
		t.Fatal(err)
	}
	if st := queueStats(t, c, "known"); st.Ready != 1 || st.EnqueuedTotal != 1 {
		t.Fatalf("stats: %v", st)
	}
	// A request larger than the NATS max payload is refused by the client
	// before it is sent.
	big := make([]*EnqueueItem, 10)
	for i := range big {
		big[i] = &EnqueueItem{Payload: make([]byte, 1<<20)}
	}
	if _, err := c.Enqueue(ctx, "known", big...); !errors.Is(err, ErrPayloadTooLarge) && !errors.Is(err, nats.ErrMaxPayload) {
		t.Errorf("oversized request: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	bad := []Config{
		{Name: "a.b"},
		{IDC: "x>"},
		{Durability: "sometimes"},
		{MaxPayload: 10 << 20},
		{QueueDefaults: QueueConfig{BackoffBase: time.Minute, BackoffMax: time.Second}},
		{Queues: map[string]QueueConfig{"bad.name": {}}},
	}
	for i, cfg := range bad {
		if _, err := New(cfg); err == nil {
			t.Errorf("config %d accepted: %+v", i, cfg)
		}
	}
	if _, err := New(Config{}); err != nil {
		t.Fatalf("defaults rejected: %v", err)
	}
}

func TestStopIsIdempotentAndSafeBeforeStart(t *testing.T) {
	n, err := New(Config{DataDir: t.TempDir(), Listen: ListenNone, Logger: testLogger(t), Throttle: testlog.NoCPUThrottle})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err == nil {
		t.Fatal("Start after Stop succeeded")
	}
	n2, c := startNode(t, Config{})
	// Stop while a long-poll is parked: it answers empty, Stop returns.
	done := make(chan error, 1)
	go func() {
		_, _, err := c.Pull(context.Background(), PullRequest{Queue: "q", MaxWait: time.Minute})
		done <- err
	}()
	eventually(t, 5*time.Second, "queue to exist", func() bool { _, _, err := c.Stats(ctxT(t), "q"); return err == nil })
	for i := 0; i < 2; i++ {
		if err := n2.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		_ = err // empty reply or a closed connection, either is fine
	case <-time.After(10 * time.Second):
		t.Fatal("parked pull not released by Stop")
	}
	_ = fmt.Sprint()
}

func TestStartFailsFastWhenPortTaken(t *testing.T) {
	n1, err := New(Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n1.Stop(context.Background())
	addr := strings.TrimPrefix(n1.ClientURL(), "nats://")
	n2, err := New(Config{DataDir: t.TempDir(), Listen: addr, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = n2.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("second node on %s: %v", addr, err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("took %s to report a taken port", el)
	}
	_ = n2.Stop(context.Background())
}
