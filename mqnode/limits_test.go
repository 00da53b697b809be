package mqnode

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestClientKeys(t *testing.T) {
	for _, c := range []struct{ reply, client, account string }{
		{"_I.worker.AbC123.7", "_I.worker.AbC123", "_I.worker"},
		{"_INBOX.xyz.9", "_INBOX.xyz", ""},
		{"plain", "plain", ""},
	} {
		if cl, acc := clientKeys(c.reply); cl != c.client || acc != c.account {
			t.Errorf("clientKeys(%q) = %q, %q", c.reply, cl, acc)
		}
	}
}

// TestPullsPerClient: one client cannot hold more than max_pulls_per_client
// long polls; another client still gets its pull served.
func TestPullsPerClient(t *testing.T) {
	n, c := startNode(t, Config{MaxPullsPerClient: 3})
	ctx, cancel := context.WithCancel(ctxT(t))
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, _ = c.Pull(ctx, PullRequest{Queue: "q", MaxWait: 3 * time.Second})
		}()
	}
	eventually(t, 5*time.Second, "3 long polls waiting", func() bool {
		n.svc.lim.mu.Lock()
		defer n.svc.lim.mu.Unlock()
		return len(n.svc.lim.polls) == 1 && maxValue(n.svc.lim.polls) == 3
	})
	if _, _, err := c.Pull(ctxT(t), PullRequest{Queue: "q", MaxWait: time.Second}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("4th long poll of one client: %v, want UNAVAILABLE", err)
	}
	other, err := n.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	enqueueN(t, other, "q2", 1)
	if ds, _, err := other.Pull(ctxT(t), PullRequest{Queue: "q2", MaxWait: time.Second}); err != nil || len(ds) != 1 {
		t.Fatalf("another client's pull: %v %v", ds, err)
	}
	cancel()
	wg.Wait()
	eventually(t, 10*time.Second, "poll slots returned when the polls end", func() bool {
		n.svc.lim.mu.Lock()
		defer n.svc.lim.mu.Unlock()
		return len(n.svc.lim.polls) == 0
	})
}

func maxValue(m map[string]int) int {
	v := 0
	for _, x := range m {
		v = max(v, x)
	}
	return v
}

func TestRequestRatePerClient(t *testing.T) {
	n, c := startNode(t, Config{MaxRequestRate: 5})
	limited := 0
	for i := 0; i < 20; i++ {
		if _, err := c.Info(ctxT(t)); errors.Is(err, ErrUnavailable) {
			limited++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if limited < 10 {
		t.Fatalf("%d of 20 back-to-back requests limited at 5/s, want most", limited)
	}
	other, err := n.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Info(ctxT(t)); err != nil {
		t.Fatalf("another client is limited too: %v", err)
	}
}

// TestQueueCapEvictionAndDelete: past max_queues no queue is created;
// empty idle queues are evicted (and not loaded again after a restart);
// queue delete removes an empty queue and refuses a non-empty one.
func TestQueueCapEvictionAndDelete(t *testing.T) {
	dir := t.TempDir()
	n, c := startNode(t, Config{DataDir: dir, MaxQueues: 3})
	ctx := ctxT(t)
	enqueueN(t, c, "keep", 1)
	for _, q := range []string{"e1", "e2"} {
		if _, _, err := c.Pull(ctx, PullRequest{Queue: q}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := c.Pull(ctx, PullRequest{Queue: "e3"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("4th queue: %v, want UNAVAILABLE", err)
	}
	if err := c.DeleteQueue(ctx, "keep"); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("delete a non-empty queue: %v", err)
	}
	if err := c.DeleteQueue(ctx, "e2"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteQueue(ctx, "nope"); !errors.Is(err, ErrUnknownQueue) {
		t.Fatalf("delete an unknown queue: %v", err)
	}
	// Not idle yet: nothing evicted.
	if gone, err := n.st.evictIdle(ctx, n.st.nowMs()); err != nil || len(gone) != 0 {
		t.Fatalf("evicted %v %v before the idle time", gone, err)
	}
	later := n.st.nowMs() + 2*DefaultQueueIdleEvict.Milliseconds()
	gone, err := n.st.evictIdle(ctx, later)
	if err != nil || len(gone) != 1 || gone[0] != "e1" {
		t.Fatalf("evicted %v %v, want [e1]", gone, err)
	}
	_ = n.Stop(context.Background())
	n2, c2 := startNode(t, Config{DataDir: dir})
	_ = n2
	_, qs, err := c2.Stats(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 1 || qs[0].Queue != "keep" {
		t.Fatalf("after restart: %d queues (%v), want only keep", len(qs), qs)
	}
}
