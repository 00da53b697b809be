package mqnode

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestConcurrentInvariants is the "bank" test of the queue: producers and
// consumers run at once, consumers ack, nack, extend or abandon deliveries at
// random, and at the end every task has been acked exactly once, none was
// delivered after its ack, and the counters are back to zero.
func TestConcurrentInvariants(t *testing.T) {
	const producers, consumers, perProducer = 4, 6, 500
	_, c := startNode(t, Config{QueueDefaults: QueueConfig{BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, MaxAttempts: 1000}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var mu sync.Mutex
	enqueued := map[string]bool{}
	acked := map[string]int{}
	deliveredAfterAck := 0
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perProducer; i += 10 {
				items := make([]*EnqueueItem, 10)
				for j := range items {
					items[j] = &EnqueueItem{Payload: []byte("x")}
				}
				res, err := c.Enqueue(ctx, "bank", items...)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, r := range res {
					enqueued[r.Id] = true
				}
				mu.Unlock()
			}
		}()
	}
	total := producers * perProducer
	done := make(chan struct{})
	var cwg sync.WaitGroup
	for w := 0; w < consumers; w++ {
		cwg.Add(1)
		go func(seed uint64) {
			defer cwg.Done()
			rng := rand.New(rand.NewPCG(seed, 1))
			for {
				select {
				case <-done:
					return
				default:
				}
				// The lease is short so that expiries race acks, and long
				// enough that a loaded 2-core machine (scheduling delays of
				// tens of ms) does not expire most of them: at 30 ms the run
				// livelocked under load, every lease gone before its ack.
				ds, _, err := c.Pull(ctx, PullRequest{Queue: "bank", MaxTasks: 8, MaxWait: 50 * time.Millisecond, Lease: 150 * time.Millisecond})
				if err != nil {
					if ctx.Err() == nil {
						t.Error(err)
					}
					return
				}
				// Check every delivery as the pull returns: a task acked by
				// another consumer while this one works through the batch
				// (its lease ran out meanwhile) was not delivered
				// after its ack.
				mu.Lock()
				for _, d := range ds {
					if acked[d.Task.Id] > 0 {
						deliveredAfterAck++
					}
				}
				mu.Unlock()
				for _, d := range ds {
					var item *AckItem
					switch r := rng.IntN(100); {
					case r < 70:
						item = &AckItem{Receipt: d.Receipt}
					case r < 80:
						item = &AckItem{Receipt: d.Receipt, Kind: AckNack, DelayMs: 1}
					case r < 90:
						if _, err := c.AckOne(ctx, &AckItem{Receipt: d.Receipt, Kind: AckExtend}); err != nil && !errors.Is(err, ErrStaleReceipt) {
							t.Error(err)
						}
						item = &AckItem{Receipt: d.Receipt}
					default:
						continue // abandon: the lease expires
					}
					_, err := c.AckOne(ctx, item)
					switch {
					case errors.Is(err, ErrStaleReceipt):
						// The lease ran out first; the task comes again.
					case err != nil:
						t.Error(err)
					case item.Kind == AckAck:
						mu.Lock()
						acked[d.Task.Id]++
						mu.Unlock()
					}
				}
			}
		}(uint64(w))
	}
	wg.Wait()
	eventually(t, 50*time.Second, "every task acked", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) == total
	})
	close(done)
	cwg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(enqueued) != total {
		t.Fatalf("%d distinct ids for %d enqueues", len(enqueued), total)
	}
	for id, n := range acked {
		if !enqueued[id] {
			t.Errorf("acked unknown task %s", id)
		}
		if n != 1 {
			t.Errorf("task %s acked %d times", id, n)
		}
	}
	if deliveredAfterAck > 0 {
		t.Errorf("%d deliveries of already-acked tasks", deliveredAfterAck)
	}
	eventually(t, 10*time.Second, "queue empty", func() bool {
		st := queueStats(t, c, "bank")
		return st.Ready == 0 && st.Leased == 0 && st.Delayed == 0 && st.AckedTotal == uint64(total)
	})
}
