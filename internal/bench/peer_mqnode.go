package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/mqnode"
)

// mqnodePeer drives an mqnode server: producers share one connection,
// consumers another.
type mqnodePeer struct {
	prod, cons *mqnode.Client
	lease      time.Duration
}

// dialMQNode connects the producer and consumer sides, each with its own
// options (credentials, for mqnode+tls).
func dialMQNode(ctx context.Context, url string, lease time.Duration, prodOpts, consOpts []nats.Option) (*mqnodePeer, error) {
	prod, err := mqnode.Dial(ctx, url, prodOpts...)
	if err != nil {
		return nil, err
	}
	cons, err := mqnode.Dial(ctx, url, consOpts...)
	if err != nil {
		prod.Close()
		return nil, err
	}
	return &mqnodePeer{prod: prod, cons: cons, lease: lease}, nil
}

func (p *mqnodePeer) close() {
	p.prod.Close()
	p.cons.Close()
}

// prepare checks the node answers; the queue is created on first enqueue.
func (p *mqnodePeer) prepare(ctx context.Context) error {
	_, err := p.prod.Info(ctx)
	return err
}

// enqueue sends each batch as one Enqueue request and waits for its reply,
// which comes once the batch is durable under the node's durability.
func (p *mqnodePeer) enqueue(ctx context.Context, w *workload, from, to uint64, progress *atomic.Int64) error {
	return produce(ctx, w, from, to, func(ctx context.Context, lo, hi uint64) error {
		items := make([]*mqnode.EnqueueItem, 0, hi-lo)
		for i := lo; i < hi; i++ {
			items = append(items, &mqnode.EnqueueItem{Payload: w.payload(i)})
		}
		res, err := p.prod.Enqueue(ctx, queueName, items...)
		if err != nil {
			return fmt.Errorf("enqueue tasks %d..%d: %w", lo, hi-1, err)
		}
		for _, r := range res {
			if r.GetId() == "" || r.GetDuplicate() {
				return fmt.Errorf("enqueue tasks %d..%d: result %v", lo, hi-1, r)
			}
		}
		progress.Add(int64(len(res)))
		return nil
	})
}

// flush has nothing to do: every Ack waited for its reply.
func (p *mqnodePeer) flush() error { return nil }

func (p *mqnodePeer) stored(ctx context.Context) (int64, error) {
	_, qs, err := p.prod.Stats(ctx, queueName)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, q := range qs {
		n += int64(q.GetReady() + q.GetLeased() + q.GetDelayed())
	}
	return n, nil
}

func (p *mqnodePeer) drainer(i int) drainer {
	return &mqnodeDrainer{p: p, worker: "bench-" + strconv.Itoa(i)}
}

type mqnodeDrainer struct {
	p      *mqnodePeer
	worker string
}

// pullWait is how long one pull long-polls for its first task.
const pullWait = time.Second

// fetch pulls up to n tasks (the node answers as soon as any is ready) and
// acks them all in one Ack request.
func (d *mqnodeDrainer) fetch(ctx context.Context, n int) ([]uint64, func(context.Context) error, error) {
	ds, _, err := d.p.cons.Pull(ctx, mqnode.PullRequest{
		Queue: queueName, MaxTasks: n, MaxWait: pullWait, Lease: d.p.lease, WorkerID: d.worker,
	})
	if err != nil || len(ds) == 0 {
		return nil, nil, err
	}
	idx := make([]uint64, len(ds))
	items := make([]*mqnode.AckItem, len(ds))
	for i, dl := range ds {
		if idx[i], err = taskIndex(dl.GetTask().GetPayload()); err != nil {
			return nil, nil, err
		}
		items[i] = &mqnode.AckItem{Receipt: dl.GetReceipt()}
	}
	ack := func(ctx context.Context) error {
		res, err := d.p.cons.Ack(ctx, items...)
		if err != nil {
			return err
		}
		var errs []error
		for _, r := range res {
			if err := mqnode.ItemErr(r); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	return idx, ack, nil
}
