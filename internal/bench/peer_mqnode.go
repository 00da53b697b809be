package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/mqmesh/mqmesh/mqnode"
)

// mqnodePeer drives an mqnode server: producers share one connection,
// consumers another.
type mqnodePeer struct {
	prod, cons *mqnode.Client
	lease      time.Duration
	queue      string
}

func dialMQNode(ctx context.Context, url string, w *workload) (*mqnodePeer, error) {
	prod, err := mqnode.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	cons, err := mqnode.Dial(ctx, url)
	if err != nil {
		prod.Close()
		return nil, err
	}
	return &mqnodePeer{prod: prod, cons: cons, lease: w.lease, queue: w.queue()}, nil
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

// enqueue stores the tasks as w.drive says: enqueueBatch sends each batch
// as one Enqueue request and waits for its reply (which comes once the
// batch is durable); enqueueAsync hands the tasks over one at a time to one
// shared mqnode.Enqueuer, which batches and pipelines them.
func (p *mqnodePeer) enqueue(ctx context.Context, w *workload, from, to uint64, progress *atomic.Int64) error {
	if w.drive.Enqueue == enqueueAsync {
		return p.enqueueAsync(ctx, w, from, to, progress)
	}
	return produce(ctx, w, from, to, func(ctx context.Context, lo, hi uint64) error {
		items := make([]*mqnode.EnqueueItem, 0, hi-lo)
		for i := lo; i < hi; i++ {
			items = append(items, &mqnode.EnqueueItem{Payload: w.payload(i)})
		}
		res, err := p.prod.Enqueue(ctx, p.queue, items...)
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

func (p *mqnodePeer) enqueueAsync(ctx context.Context, w *workload, from, to uint64, progress *atomic.Int64) error {
	e, err := p.prod.NewEnqueuer(p.queue, asyncConfig(w.drive))
	if err != nil {
		return err
	}
	defer e.Close()
	var failed atomic.Pointer[error]
	err = produce(ctx, w, from, to, func(ctx context.Context, lo, hi uint64) error {
		for i := lo; i < hi; i++ {
			if err := e.EnqueueFunc(ctx, &mqnode.EnqueueItem{Payload: w.payload(i)}, func(r *mqnode.EnqueueResult, err error) {
				if err == nil && (r.GetId() == "" || r.GetDuplicate()) {
					err = fmt.Errorf("result %v", r)
				}
				if err != nil {
					err = fmt.Errorf("enqueue task %d: %w", i, err)
					failed.CompareAndSwap(nil, &err)
					return
				}
				progress.Add(1)
			}); err != nil {
				return err
			}
			if f := failed.Load(); f != nil {
				return *f
			}
		}
		return nil
	})
	if err == nil {
		err = e.Flush(ctx)
	}
	if f := failed.Load(); f != nil {
		err = errors.Join(err, *f)
	}
	return err
}

// asyncConfig is the mqnode.Enqueuer configuration of drive d.
func asyncConfig(d Drive) mqnode.AsyncConfig {
	return mqnode.AsyncConfig{MaxBatch: d.EnqueueBatch, MaxRequests: d.Requests, MaxInFlight: max(d.InFlight, d.EnqueueBatch)}
}

// flush has nothing to do: every Ack waited for its reply.
func (p *mqnodePeer) flush() error { return nil }

func (p *mqnodePeer) stored(ctx context.Context) (int64, error) {
	_, qs, err := p.prod.Stats(ctx, p.queue)
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
		Queue: d.p.queue, MaxTasks: n, MaxWait: pullWait, Lease: d.p.lease, WorkerID: d.worker,
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
