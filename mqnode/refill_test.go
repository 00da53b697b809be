package mqnode

import (
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pauseRefills makes every refill of queue name stop between its read and
// its swap: the refill's goroutine sends on the returned channel and waits
// for a value back on it (the caller's turn to race it).
func pauseRefills(t *testing.T, n *Node, name string) chan chan struct{} {
	t.Helper()
	paused := make(chan chan struct{})
	quit := make(chan struct{})
	h := func(q *queue) {
		if q.name != name {
			return
		}
		resume := make(chan struct{})
		select {
		case paused <- resume:
			select {
			case <-resume:
			case <-quit:
			}
		case <-quit: // the test is over
		}
	}
	n.st.refillRead.Store(&h)
	t.Cleanup(func() { close(quit) })
	return paused
}

func indexItem(i int) *EnqueueItem {
	return &EnqueueItem{Payload: binary.BigEndian.AppendUint64(nil, uint64(i))}
}

// TestRefillRaceWindow races acks, nacks (re-queues), lease expiries (5 ms
// leases),
// task expiries and enqueues against refills stopped between their read
// and their swap. Every task must be delivered in enqueue order on its
// first attempt (a swap that lost, reordered or re-read keys shows as a
// gap, an inversion or a duplicate), none while a lease on it is held, and
// every one acked exactly once; the expired ones end in the DLQ.
func TestRefillRaceWindow(t *testing.T) {
	const n0, expiring, added = 120, 10, 40
	n, c := startNode(t, Config{ReadyBuffer: 4, QueueDefaults: QueueConfig{BackoffBase: time.Millisecond, BackoffMax: 2 * time.Millisecond, MaxAttempts: 100}})
	ctx := ctxT(t)
	const q = "rw"
	// Tasks that expire while on disk, between live ones: the refill
	// moves them to the DLQ.
	for i := range n0 {
		it := indexItem(i)
		if i%12 == 5 {
			it.TtlMs = 1
		}
		if _, err := c.Enqueue(ctx, q, it); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Millisecond) // let the TTL of 1 ms pass
	paused := pauseRefills(t, n, q)

	var mu sync.Mutex
	held := map[string]*Delivery{} // leased, not settled
	acked := map[string]int{}
	lastFirst := -1
	var errs []error
	pullErr := make(chan error, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(pullErr)
		pulls := 0
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Every fourth pull leases for 5 ms: those leases run out (and
			// their tasks are re-queued) while refills are paused.
			pulls++
			lease := 30 * time.Second
			if pulls%4 == 0 {
				lease = 5 * time.Millisecond
			}
			ds, _, err := c.Pull(ctx, PullRequest{Queue: q, MaxTasks: 3, MaxWait: 20 * time.Millisecond, Lease: lease})
			if err != nil {
				pullErr <- err
				return
			}
			mu.Lock()
			for _, d := range ds {
				id := d.Task.Id
				if held[id] != nil {
					errs = append(errs, errors.New("task "+id+" delivered while leased"))
				}
				if acked[id] > 0 {
					errs = append(errs, errors.New("task "+id+" delivered after its ack"))
				}
				if d.Task.Attempt == 0 {
					i := int(binary.BigEndian.Uint64(d.Task.Payload))
					if i <= lastFirst {
						errs = append(errs, errors.New("first deliveries out of enqueue order"))
					}
					lastFirst = i
				}
				if lease > time.Second {
					held[id] = d
				}
			}
			mu.Unlock()
		}
	})
	settle := func(kind AckKind) {
		mu.Lock()
		var d *Delivery
		for _, x := range held {
			d = x
			break
		}
		if d != nil {
			delete(held, d.Task.Id)
		}
		mu.Unlock()
		if d == nil {
			return
		}
		_, err := c.AckOne(ctx, &AckItem{Receipt: d.Receipt, Kind: kind})
		if err != nil {
			t.Error(err)
			return
		}
		if kind == AckAck {
			mu.Lock()
			acked[d.Task.Id]++
			mu.Unlock()
		}
	}
	next := n0
	window := 0
	deadline := time.After(20 * time.Second)
	for done := false; !done; {
		select {
		case resume := <-paused:
			window++
			// In the window: settle leased tasks every way there is, and
			// commit new keys past the cursor.
			settle(AckAck)
			settle(AckNack)
			settle(AckAck)
			if next < n0+added {
				if _, err := c.Enqueue(ctx, q, indexItem(next), indexItem(next+1)); err != nil {
					t.Fatal(err)
				}
				next += 2
			}
			close(resume)
		case err := <-pullErr:
			t.Fatal(err)
		case <-deadline:
			mu.Lock()
			t.Fatalf("not done in 20 s after %d refill windows: %d acked, %d held, stats %v", window, len(acked), len(held), queueStats(t, c, q))
		default:
			mu.Lock()
			total := len(acked)
			mu.Unlock()
			if total == n0-expiring+added {
				done = true
				break
			}
			settle(AckAck)
			time.Sleep(time.Millisecond)
		}
	}
	close(stop)
	// Release any refill still paused while the puller stops.
	for open := true; open; {
		select {
		case r := <-paused:
			close(r)
		case _, open = <-pullErr:
		}
	}
	wg.Wait()
	if window < 10 {
		t.Errorf("only %d refill windows raced", window)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, err := range errs {
		t.Error(err)
	}
	for id, k := range acked {
		if k != 1 {
			t.Errorf("task %s acked %d times", id, k)
		}
	}
	st := queueStats(t, c, q)
	if st.Dead != expiring || st.Ready != 0 || st.Leased != 0 {
		t.Errorf("dead %d ready %d leased %d, want %d 0 0", st.Dead, st.Ready, st.Leased, expiring)
	}
}

// TestRefillReadHoldsNoLock stops a refill between its read and its swap
// and checks the queue still answers meanwhile: enqueues commit (the
// writer takes the queue's lock after each commit) and stats report from
// counters. Before refills ran outside the lock, both waited for the read.
func TestRefillReadHoldsNoLock(t *testing.T) {
	n, c := startNode(t, Config{ReadyBuffer: 8})
	ctx := ctxT(t)
	const q = "nolock"
	for i := range 20 {
		if _, err := c.Enqueue(ctx, q, indexItem(i)); err != nil {
			t.Fatal(err)
		}
	}
	paused := pauseRefills(t, n, q)
	got := make(chan []*Delivery, 1)
	go func() {
		ds, _, _ := c.Pull(ctx, PullRequest{Queue: q, MaxTasks: 8, MaxWait: time.Second})
		got <- ds
	}()
	resume := <-paused
	done := make(chan error, 1)
	go func() {
		if _, err := c.Enqueue(ctx, q, indexItem(20)); err != nil {
			done <- err
			return
		}
		_, qs, err := c.Stats(ctx, q)
		if err == nil && qs[0].Ready != 21 {
			err = errors.New("stats during a refill: wrong ready count")
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(5 * time.Second):
		t.Error("enqueue and stats waited for a refill's read")
	}
	close(resume)
	if ds := <-got; len(ds) != 8 {
		t.Errorf("pull after the refill got %d tasks, want 8", len(ds))
	}
}

// TestStatsDoNotPage checks stats read no task records: many stats calls
// on a queue with a full window start no refill.
func TestStatsDoNotPage(t *testing.T) {
	n, c := startNode(t, Config{ReadyBuffer: 4})
	ctx := ctxT(t)
	const q = "stats"
	for i := range 50 {
		if _, err := c.Enqueue(ctx, q, indexItem(i)); err != nil {
			t.Fatal(err)
		}
	}
	var reads atomic.Int64
	h := func(qq *queue) {
		if qq.name == q {
			reads.Add(1)
		}
	}
	n.st.refillRead.Store(&h)
	// The first look fills the window (stats of an empty window with
	// ready tasks start a background refill).
	eventually(t, 5*time.Second, "window filled", func() bool {
		st := queueStats(t, c, q)
		return st.OldestReadyAgeMs > 0 || reads.Load() > 0 && st.Ready == 50
	})
	eventually(t, 5*time.Second, "refill done", func() bool {
		qq, _ := n.st.queue(ctx, q, false)
		qq.mu.Lock()
		defer qq.mu.Unlock()
		return qq.refilling == nil && len(qq.buf) == 4
	})
	before := reads.Load()
	for range 100 {
		if st := queueStats(t, c, q); st.Ready != 50 {
			t.Fatalf("ready %d, want 50", st.Ready)
		}
	}
	if r := reads.Load() - before; r != 0 {
		t.Errorf("100 stats calls paged %d times", r)
	}
}
