package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

func TestMain(m *testing.M) {
	// toxiproxy's latency toxic can stay blocked handing on a chunk that
	// was in flight when its proxy stopped (its Pipe sends on a stub
	// nobody reads any more): the fault-injection library's goroutine,
	// not ours (seen once in CI after TestPoolPipelinesOverSlowLink).
	opts := append(testlog.LeakOptions(), goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*LatencyToxic).Pipe"))
	goleak.VerifyTestMain(m, opts...)
}

// eventually waits for cond (testlog.Eventually).
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return testlog.Eventually(t, within, what, cond)
}

// single is one node with an in-process client.
type single struct {
	n *mqnode.Node
	c *mqnode.Client
}

func startSingle(t *testing.T) *single {
	n, err := mqnode.New(mqnode.Config{Name: "n1", IDC: "a", DataDir: t.TempDir(), Listen: mqnode.ListenNone, Logger: testlog.New(t), Throttle: testlog.NoCPUThrottle,
		QueueDefaults: mqnode.QueueConfig{BackoffBase: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c, err := n.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); _ = n.Stop(context.Background()) })
	return &single{n: n, c: c}
}

func (s *single) enqueue(t *testing.T, queue string, n int) {
	t.Helper()
	items := make([]*mqnode.EnqueueItem, n)
	for i := range items {
		items[i] = &mqnode.EnqueueItem{Payload: []byte(fmt.Sprint(i))}
	}
	if _, err := s.c.Enqueue(context.Background(), queue, items...); err != nil {
		t.Fatal(err)
	}
}

func (s *single) stats(t *testing.T, queue string) *mqnode.QueueStats {
	t.Helper()
	_, qs, err := s.c.Stats(context.Background(), queue)
	if err != nil {
		t.Fatal(err)
	}
	return qs[0]
}

func newPool(t *testing.T, s *single, cfg Config) *Pool {
	t.Helper()
	nc, err := s.n.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if cfg.IDC == "" {
		cfg.IDC, cfg.Node = "a", "n1"
	}
	if cfg.ID == "" {
		cfg.ID = "w1"
	}
	cfg.Logger = testlog.New(t)
	p, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPoolOutcomes(t *testing.T) {
	s := startSingle(t)
	p := newPool(t, s, Config{Slots: 4})
	var attempts sync.Map
	var children atomic.Int64
	must(t, p.Handle("work", func(ctx context.Context, task *Task) Result {
		n, _ := attempts.LoadOrStore(task.ID, new(atomic.Int32))
		a := n.(*atomic.Int32).Add(1)
		switch string(task.Payload) {
		case "0":
			return Done()
		case "1": // fails twice, then succeeds
			if a < 3 {
				return Retry(errors.New("flaky"), 0)
			}
			return Done()
		case "2":
			panic("boom")
		case "3":
			return GiveUp("bad input")
		}
		return Done().WithSubtasks("child", Subtask{Payload: []byte("c1")}, Subtask{Payload: []byte("c2")})
	}))
	must(t, p.Handle("child", func(ctx context.Context, task *Task) Result {
		children.Add(1)
		return Done()
	}))
	must(t, p.Start(context.Background()))
	defer p.Stop(context.Background())
	s.enqueue(t, "work", 5)
	// Mostly failures, and panics slower than the successes: the pool may
	// judge itself degraded (health.go) and yield, alone on its node, so a
	// task then waits yieldAge (2 s) per attempt; task 2 has 10.
	eventually(t, 60*time.Second, "outcomes", func() bool {
		w := s.stats(t, "work")
		// task 2 panics until its attempts (10) are used up: dead.
		return w.AckedTotal == 3 && w.Dead == 2 && children.Load() == 2
	})
	st := p.Stats()
	if st.Retries < 2 || st.GiveUps != 1 || st.Processed[Local] == 0 {
		t.Fatalf("pool stats %+v", st)
	}
}

func TestLongHandlerKeepsItsLease(t *testing.T) {
	s := startSingle(t)
	p := newPool(t, s, Config{Slots: 2, Lease: 300 * time.Millisecond, ExtendEvery: 100 * time.Millisecond})
	var runs atomic.Int32
	must(t, p.Handle("slow", func(ctx context.Context, task *Task) Result {
		runs.Add(1)
		select {
		case <-time.After(time.Second): // longer than the lease: the point of the test
		case <-ctx.Done():
		}
		return Done()
	}))
	must(t, p.Start(context.Background()))
	defer p.Stop(context.Background())
	s.enqueue(t, "slow", 1)
	eventually(t, 10*time.Second, "slow task acked", func() bool { return s.stats(t, "slow").AckedTotal == 1 })
	if runs.Load() != 1 || p.Stats().Extensions < 5 {
		t.Fatalf("runs %d, extensions %d", runs.Load(), p.Stats().Extensions)
	}
	if s.stats(t, "slow").ExpiredLeasesTotal != 0 {
		t.Fatal("lease expired although it was extended")
	}
}

func TestHandlerDeadline(t *testing.T) {
	s := startSingle(t)
	p := newPool(t, s, Config{Slots: 1})
	must(t, p.Handle("q", func(ctx context.Context, task *Task) Result {
		<-ctx.Done()
		return Retry(ctx.Err(), time.Hour)
	}, Timeout(50*time.Millisecond)))
	if err := p.Handle("q2", nil); err == nil {
		t.Fatal("nil handler accepted")
	}
	if err := p.Handle("q3", func(context.Context, *Task) Result { return Done() }, Timeout(0)); err == nil {
		t.Fatal("zero timeout accepted")
	}
	must(t, p.Start(context.Background()))
	defer p.Stop(context.Background())
	s.enqueue(t, "q", 1)
	eventually(t, 5*time.Second, "timed-out handler nacked", func() bool { st := s.stats(t, "q"); return st.NackedTotal == 1 && st.Delayed == 1 })
}

func TestGracefulStopFinishesAndHardStopReturnsTasks(t *testing.T) {
	s := startSingle(t)
	release := make(chan struct{})
	started := make(chan struct{}, 8)
	h := func(ctx context.Context, task *Task) Result {
		started <- struct{}{}
		select {
		case <-release:
			return Done()
		case <-ctx.Done():
			return Retry(ctx.Err(), 0)
		}
	}
	p := newPool(t, s, Config{Slots: 2})
	must(t, p.Handle("q", h))
	must(t, p.Start(context.Background()))
	s.enqueue(t, "q", 2)
	<-started
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- p.Stop(context.Background()) }()
	close(release) // the running handlers finish after Stop began
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if st := s.stats(t, "q"); st.AckedTotal != 2 || st.Leased != 0 {
		t.Fatalf("after graceful stop: %v", st)
	}

	// Hard stop: handlers cancelled, nothing acked; the tasks come back when
	// their leases are released (here: expire).
	p2 := newPool(t, s, Config{ID: "w2", Slots: 2, Lease: 500 * time.Millisecond, ExtendEvery: 100 * time.Millisecond})
	block := make(chan struct{})
	must(t, p2.Handle("q", func(ctx context.Context, task *Task) Result {
		started <- struct{}{}
		<-ctx.Done()
		<-block // would ack after the kill if the pool let it
		return Done()
	}))
	must(t, p2.Start(context.Background()))
	s.enqueue(t, "q", 2)
	<-started
	<-started
	// The handlers still wait for their context, which only Kill cancels;
	// after that they return Done, which a killed pool must not ack.
	close(block)
	p2.Kill()
	if st := s.stats(t, "q"); st.AckedTotal != 2 {
		t.Fatalf("a killed pool acked: %v", st)
	}
	eventually(t, 5*time.Second, "killed pool's tasks ready again", func() bool { return s.stats(t, "q").Ready == 2 })
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
