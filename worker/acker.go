package worker

import (
	"context"
	"log/slog"
	"sync"

	"github.com/mqmesh/mqmesh/mqnode"
)

// acker sends the acks of one origin node in batches: whatever is waiting
// while the requests are in flight goes in the next one (no timer, no
// added latency when idle). Up to maxAckRequests requests are out at once,
// so a pool across a slow link, or draining fast, is not held to one batch
// of acks per round trip.
type acker struct {
	c    *mqnode.Client
	log  *slog.Logger
	ch   chan ackReq
	wg   sync.WaitGroup
	once sync.Once
}

type ackReq struct {
	item *mqnode.AckItem
	done chan error
}

// maxAckBatch is the most acks per request; maxAckRequests the most
// requests out at once.
const (
	maxAckBatch    = 1000
	maxAckRequests = 4
)

func newAcker(c *mqnode.Client, log *slog.Logger) *acker {
	a := &acker{c: c, log: log, ch: make(chan ackReq, maxAckBatch)}
	a.wg.Add(1)
	go a.run()
	return a
}

// ack sends item and waits for the node's answer for it.
func (a *acker) ack(item *mqnode.AckItem) error {
	done := make(chan error, 1)
	a.ch <- ackReq{item: item, done: done}
	return <-done
}

func (a *acker) close() {
	a.once.Do(func() {
		close(a.ch)
		a.wg.Wait()
	})
}

func (a *acker) run() {
	defer a.wg.Done()
	out := make(chan struct{}, maxAckRequests)
	var reqs sync.WaitGroup
	defer reqs.Wait()
	for r := range a.ch {
		out <- struct{}{}
		batch := make([]ackReq, 1, 64)
		batch[0] = r
	fill:
		for len(batch) < maxAckBatch {
			select {
			case r, ok := <-a.ch:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		reqs.Add(1)
		go func() {
			defer func() { <-out; reqs.Done() }()
			a.send(batch)
		}()
	}
}

// send acks one batch and tells each waiter its item's outcome.
func (a *acker) send(batch []ackReq) {
	items := make([]*mqnode.AckItem, len(batch))
	for i, r := range batch {
		items[i] = r.item
	}
	ctx, cancel := context.WithTimeout(context.Background(), mqnode.DefaultRequestTimeout)
	res, err := a.c.Ack(ctx, items...)
	cancel()
	for i, r := range batch {
		switch {
		case err != nil:
			r.done <- err
		default:
			r.done <- mqnode.ItemErr(res[i])
		}
	}
}
