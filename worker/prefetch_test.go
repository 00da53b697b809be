package worker

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

func TestCredits(t *testing.T) {
	c := newCredits(4)
	stop := make(chan struct{})
	if n := c.take(3, stop); n != 3 {
		t.Fatalf("took %d of 4 free asking 3", n)
	}
	if n := c.take(3, stop); n != 1 {
		t.Fatalf("took %d with 1 free asking 3", n)
	}
	got := make(chan int)
	go func() { got <- c.take(10, stop) }()
	select {
	case n := <-got:
		t.Fatalf("took %d with none free", n)
	case <-time.After(20 * time.Millisecond):
	}
	c.give(2)
	if n := <-got; n != 2 {
		t.Fatalf("a waiter took %d after 2 came back", n)
	}
	go func() { got <- c.take(10, stop) }()
	c.setLimit(7) // grows: the waiter gets the 3 new ones
	if n := <-got; n != 3 {
		t.Fatalf("a waiter took %d after the limit grew by 3", n)
	}
	go func() { got <- c.take(1, stop) }()
	close(stop)
	if n := <-got; n != 0 {
		t.Fatalf("take after stop returned %d, want 0", n)
	}
}

// Takers are served in turn: a loop that gives its credits back and at
// once takes them all again (a long poll of an empty queue, over and
// over) does not starve a waiting one. Before, the waiter could lose every
// race for the freed credits, and a pool's other queue stalled.
func TestCreditsServeWaitersInTurn(t *testing.T) {
	c := newCredits(4)
	stop := make(chan struct{})
	defer close(stop)
	if n := c.take(4, stop); n != 4 {
		t.Fatalf("took %d of 4", n)
	}
	got := make(chan int, 1)
	go func() { got <- c.take(4, stop) }()
	testlog.Eventually(t, 5*time.Second, "the second taker waits", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.queue) == 1
	})
	// The greedy taker gives all back and asks again at once: the waiter
	// is served first, the greedy one waits its turn.
	c.give(4)
	greedy := make(chan int, 1)
	go func() { greedy <- c.take(4, stop) }()
	if n := <-got; n != 4 {
		t.Fatalf("the waiter got %d, want 4", n)
	}
	testlog.Eventually(t, 5*time.Second, "the greedy taker waits its turn", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.queue) == 1 && c.held == 4
	})
	c.give(4)
	if n := <-greedy; n != 4 {
		t.Fatalf("the greedy taker got %d once the waiter gave back, want 4", n)
	}
}

func TestSizer(t *testing.T) {
	s := &sizer{slots: 8, cap: 256, floor: 32}
	if pf, b := s.size(); pf != 0 || b != 32 {
		t.Fatalf("unmeasured: prefetch %d batch %d, want 0 and the floor 32", pf, b)
	}
	// 8 slots of 1 ms handlers: 8,000/s; over a 1 ms round trip twice
	// that in flight: 16 prefetched.
	s.pulled(time.Millisecond)
	s.handled(time.Millisecond)
	if pf, b := s.size(); pf != 16 || b != 32 {
		t.Fatalf("1 ms handlers, 1 ms RTT: prefetch %d batch %d, want 16 and 32", pf, b)
	}
	// Fast handlers across 20 ms: the cap, spread over the pulls.
	s = &sizer{slots: 8, cap: 256, floor: 32}
	s.pulled(20 * time.Millisecond)
	s.handled(time.Microsecond)
	if pf, b := s.size(); pf != 256 || b != (8+256)/localPulls {
		t.Fatalf("fast handlers, 20 ms RTT: prefetch %d batch %d, want 256 and %d", pf, b, (8+256)/localPulls)
	}
	s = &sizer{slots: 8, cap: 0, floor: 32}
	s.pulled(20 * time.Millisecond)
	s.handled(time.Microsecond)
	if pf, _ := s.size(); pf != 0 {
		t.Fatalf("MaxPrefetch off: prefetch %d", pf)
	}
}

// TestPoolPipelinesOverSlowLink: a pool whose own node is across a link of
// 20 ms round trip drains faster than one pull per round trip with its
// slots could: its pulls are pipelined and lease more than its slots. A
// pool of 8 slots with one pull of at most 8 tasks out per round trip
// needs at least 800/8 × 20 ms = 2 s for 800 tasks.
func TestPoolPipelinesOverSlowLink(t *testing.T) {
	const slots, total, rtt = 8, 800, 20 * time.Millisecond
	n, err := mqnode.New(mqnode.Config{Name: "n1", IDC: "a", DataDir: t.TempDir(), Listen: "127.0.0.1:0", Logger: testlog.New(t), Throttle: testlog.NoCPUThrottle})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop(context.Background()) })
	c, err := n.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	items := make([]*mqnode.EnqueueItem, total)
	for i := range items {
		items[i] = &mqnode.EnqueueItem{Payload: []byte(fmt.Sprint(i))}
	}
	if _, err := c.Enqueue(context.Background(), "far", items...); err != nil {
		t.Fatal(err)
	}
	proxy := toxiproxy.NewProxy(toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop()),
		"worker-test", "127.0.0.1:0", strings.TrimPrefix(n.ClientURL(), "nats://"))
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Stop)
	for _, stream := range []string{"upstream", "downstream"} {
		doc := fmt.Sprintf(`{"name":"rtt-%s","type":"latency","stream":%q,"attributes":{"latency":%d}}`, stream, stream, (rtt / 2).Milliseconds())
		if _, err := proxy.Toxics.AddToxicJson(strings.NewReader(doc)); err != nil {
			t.Fatal(err)
		}
	}
	nc, err := nats.Connect("nats://" + proxy.Listen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	p, err := New(nc, Config{ID: "w1", IDC: "a", Node: "n1", Slots: slots, Logger: testlog.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	var handled atomic.Int64
	must(t, p.Handle("far", func(context.Context, *Task) Result { handled.Add(1); return Done() }))
	t0 := time.Now()
	must(t, p.Start(context.Background()))
	eventually(t, 30*time.Second, "every task handled", func() bool { return handled.Load() == total })
	took := time.Since(t0)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	must(t, p.Stop(sctx))
	st := p.Stats()
	pulls := st.Pulls[Local] - st.EmptyPulls[Local]
	t.Logf("%d tasks across a %v link with %d slots in %v: %d pulls with tasks (%.1f tasks each)", total, rtt, slots, took, pulls, float64(total)/float64(pulls))
	// No load makes an unpipelined pool faster than its round trips allow.
	if limit := time.Duration(total/slots) * rtt; took >= limit {
		t.Errorf("drained in %v, not faster than the %v one unpipelined pull per round trip needs at least", took, limit)
	}
	if per := float64(total) / float64(pulls); per <= slots {
		t.Errorf("%.1f tasks per pull: no more than the %d slots, so nothing was prefetched", per, slots)
	}
	eventually(t, 10*time.Second, "every ack settled", func() bool {
		_, qs, err := c.Stats(context.Background(), "far")
		return err == nil && len(qs) == 1 && qs[0].Ready+qs[0].Leased == 0
	})
}

// TestShortPullWithMoreReady: a local pull that came back short but says
// more tasks are ready does not mark the own node drained (the next pull
// goes at once, not as a long poll); a short one with nothing ready after
// does, and so does an empty one whatever the node says (no busy loop on
// tasks a throttle holds back).
func TestShortPullWithMoreReady(t *testing.T) {
	s := NewScheduler(SchedulerConfig{IDC: "sh", Node: "n1"})
	now := time.Unix(0, 0)
	next := func() Action {
		a := s.Next(now, "q", nil, 32)
		if len(a) != 1 || a[0].Where != Local {
			t.Fatalf("next: %+v, want one local pull", a)
		}
		return a[0]
	}
	a := next()
	s.Observe(PullResult{Action: a, Got: 10, ReadyAfter: 500}, now)
	if b := next(); b.Wait != 0 {
		t.Fatalf("after a short pull with 500 ready: a long poll of %v", b.Wait)
	} else {
		s.Observe(PullResult{Action: b, Got: 10}, now)
	}
	if c := next(); c.Wait == 0 {
		t.Fatal("after a short pull with nothing ready: no long poll")
	} else {
		s.Observe(PullResult{Action: c, Got: 32}, now)
	}
	d := next()
	s.Observe(PullResult{Action: d, Got: 0, ReadyAfter: 500, Throttled: time.Second}, now)
	if e := next(); e.Wait == 0 {
		t.Fatal("after an empty pull: no long poll")
	}
}
