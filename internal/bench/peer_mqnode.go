package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
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
	queue      string
	w          *workload

	// Drive puller: the consumers' shared Puller, started on first use.
	pullerOnce sync.Once
	puller     *mqnode.Puller
	pullerErr  error
	// Ack batch_async: requests out, and the first failure.
	acks    sync.WaitGroup
	ackErr  atomic.Pointer[error]
	ackSlot chan struct{}
}

// dialMQNode connects the producer and consumer sides, each with its own
// options (credentials, for mqnode+tls).
func dialMQNode(ctx context.Context, url string, w *workload, prodOpts, consOpts []nats.Option) (*mqnodePeer, error) {
	prod, err := mqnode.Dial(ctx, url, prodOpts...)
	if err != nil {
		return nil, err
	}
	cons, err := mqnode.Dial(ctx, url, consOpts...)
	if err != nil {
		prod.Close()
		return nil, err
	}
	return &mqnodePeer{prod: prod, cons: cons, lease: w.lease, queue: w.queue(), w: w,
		ackSlot: make(chan struct{}, 2*max(w.consumers, 1))}, nil
}

func (p *mqnodePeer) close() {
	if p.puller != nil {
		p.puller.Close()
	}
	p.acks.Wait()
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

// flush waits for the Ack requests not waited for (ack batch_async).
func (p *mqnodePeer) flush() error {
	p.acks.Wait()
	if e := p.ackErr.Load(); e != nil {
		return *e
	}
	return nil
}

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

// pullerFor returns the consumers' shared Puller: Consumers pulls of up to
// n tasks in flight.
func (p *mqnodePeer) pullerFor(n int) (*mqnode.Puller, error) {
	p.pullerOnce.Do(func() {
		p.puller, p.pullerErr = p.cons.NewPuller(p.queue, mqnode.PullerConfig{
			WorkerID: "bench", Lease: p.lease, Pulls: max(p.w.consumers, 1), MaxTasks: n, MaxWait: pullWait,
		})
	})
	return p.puller, p.pullerErr
}

type mqnodeDrainer struct {
	p      *mqnodePeer
	worker string
}

// pullWait is how long one pull long-polls for its first task.
const pullWait = time.Second

// fetch pulls up to n tasks (the node answers as soon as any is ready), or
// takes up to n from the shared Puller, and acks them all in one Ack
// request, waiting for its reply unless the drive says batch_async.
func (d *mqnodeDrainer) fetch(ctx context.Context, n int) ([]uint64, func(context.Context) error, error) {
	var ds []*mqnode.Delivery
	var err error
	if d.p.w.drive.Pull == pullPuller {
		var pl *mqnode.Puller
		if pl, err = d.p.pullerFor(n); err == nil {
			wctx, cancel := context.WithTimeout(ctx, pullWait)
			ds, err = pl.NextBatch(wctx, n)
			cancel()
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				err = nil // nothing within the wait: come back
			}
		}
	} else {
		ds, _, err = d.p.cons.Pull(ctx, mqnode.PullRequest{
			Queue: d.p.queue, MaxTasks: n, MaxWait: pullWait, Lease: d.p.lease, WorkerID: d.worker,
		})
	}
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
	if d.p.w.drive.Ack != ackAsyncB {
		return idx, ack, nil
	}
	// Not waited for: the request goes out on its own goroutine (at most
	// two per consumer out at once); flush waits for them.
	async := func(ctx context.Context) error {
		select {
		case d.p.ackSlot <- struct{}{}:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		d.p.acks.Go(func() {
			defer func() { <-d.p.ackSlot }()
			actx, cancel := context.WithTimeout(context.Background(), mqnode.DefaultRequestTimeout)
			defer cancel()
			if err := ack(actx); err != nil {
				d.p.ackErr.CompareAndSwap(nil, &err)
			}
		})
		return nil
	}
	return idx, async, nil
}
