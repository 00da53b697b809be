package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqmesh/mqmesh/internal/secrets"
)

// peer is the client side of one peer under test, connected to its server
// over loopback TCP.
type peer interface {
	// prepare creates what the workload needs (queue, stream, consumer).
	prepare(ctx context.Context) error
	// enqueue stores the tasks with indexes [from, to) and returns once every
	// one is acknowledged as durable; progress counts acknowledged tasks.
	enqueue(ctx context.Context, w *workload, from, to uint64, progress *atomic.Int64) error
	// drainer returns the handle consumer goroutine i pulls with.
	drainer(i int) drainer
	// flush returns once the server has read every ack sent.
	flush() error
	// stored is how many tasks the peer holds (ready or leased).
	stored(ctx context.Context) (int64, error)
	close()
}

// drainer pulls tasks for one consumer goroutine.
type drainer interface {
	// fetch leases up to n tasks, waiting for the first until ctx ends, and
	// returns their indexes and a func that acks all of them.
	fetch(ctx context.Context, n int) ([]uint64, func(context.Context) error, error)
}

// workload is what both peers are put through.
type workload struct {
	size      int
	batch     int
	producers int
	consumers int
	lease     time.Duration
	stall     time.Duration // no progress for this long fails a phase
	filler    []byte
	log       io.Writer
	// sec are the secrets of the peerMQNodeSecure runs (nil without).
	sec *secrets.Set
}

const queueName = "bench"

func newWorkload(o *nodeOptions, log io.Writer) *workload {
	filler := make([]byte, o.size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range filler {
		filler[i] = byte(r.Uint32())
	}
	return &workload{
		size: o.size, batch: o.batch, producers: o.producers, consumers: o.consumers,
		lease: o.lease, stall: o.stall, filler: filler, log: log,
	}
}

// payload returns task idx's body: its index, then filler up to size.
func (w *workload) payload(idx uint64) []byte {
	b := make([]byte, w.size)
	copy(b, w.filler)
	binary.BigEndian.PutUint64(b, idx)
	return b
}

// taskIndex reads the index back from a delivered payload.
func taskIndex(p []byte) (uint64, error) {
	if len(p) < 8 {
		return 0, fmt.Errorf("payload of %d bytes carries no task index", len(p))
	}
	return binary.BigEndian.Uint64(p), nil
}

// batches hands out [lo, hi) ranges of at most size tasks from [from, to)
// to concurrent producers.
type batches struct {
	next     atomic.Uint64
	to, size uint64
}

func newBatches(from, to uint64, size int) *batches {
	b := &batches{to: to, size: uint64(size)}
	b.next.Store(from)
	return b
}

func (b *batches) take() (lo, hi uint64, ok bool) {
	lo = b.next.Add(b.size) - b.size
	if lo >= b.to {
		return 0, 0, false
	}
	return lo, min(lo+b.size, b.to), true
}

// tracker records which task indexes were delivered and acked.
type tracker struct {
	total   uint64
	bits    []atomic.Uint64
	unique  atomic.Int64
	dups    atomic.Int64
	foreign atomic.Int64 // indexes outside [0, total)
}

func newTracker(total uint64) *tracker {
	return &tracker{total: total, bits: make([]atomic.Uint64, (total+63)/64)}
}

// settle marks acked indexes; it reports whether this call completed the set.
func (t *tracker) settle(idx []uint64) bool {
	done := false
	for _, i := range idx {
		if i >= t.total {
			t.foreign.Add(1)
			continue
		}
		bit := uint64(1) << (i % 64)
		if t.bits[i/64].Or(bit)&bit != 0 {
			t.dups.Add(1)
			continue
		}
		if t.unique.Add(1) == int64(t.total) {
			done = true
		}
	}
	return done
}

// errDrained ends the drain phase: every task was acked.
var errDrained = errors.New("all tasks acked")

// drainAll runs the consumers until every task in t is acked, a consumer
// fails, or the phase stalls.
func drainAll(ctx context.Context, p peer, w *workload, t *tracker, label string) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if t.total == 0 {
		return nil
	}
	stopWatch := watch(ctx, cancel, w, label+" drain", int64(t.total), t.unique.Load)
	defer stopWatch()
	var wg sync.WaitGroup
	for i := range w.consumers {
		d := p.drainer(i)
		wg.Go(func() {
			for ctx.Err() == nil {
				idx, ack, err := d.fetch(ctx, w.batch)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					cancel(fmt.Errorf("consumer %d: pull: %w", i, err))
					return
				}
				if len(idx) == 0 {
					continue
				}
				if err := ack(ctx); err != nil {
					if ctx.Err() == nil {
						cancel(fmt.Errorf("consumer %d: ack: %w", i, err))
					}
					return
				}
				if t.settle(idx) {
					cancel(errDrained)
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); !errors.Is(err, errDrained) {
		return err
	}
	return nil
}

// errStalled fails a phase that made no progress for workload.stall.
var errStalled = errors.New("no progress")

// watch prints progress to w.log every few seconds and cancels the phase
// when count has not moved for w.stall. The returned func stops it.
func watch(ctx context.Context, cancel context.CancelCauseFunc, w *workload, label string, total int64, count func() int64) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		const every = 2 * time.Second
		tick := time.NewTicker(every)
		defer tick.Stop()
		start := time.Now()
		last, lastMove := count(), time.Now()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case now := <-tick.C:
				n := count()
				if n != last {
					last, lastMove = n, now
				} else if now.Sub(lastMove) >= w.stall {
					cancel(fmt.Errorf("%s: %w for %s at %d of %d tasks", label, errStalled, w.stall, n, total))
					return
				}
				rate := float64(n) / now.Sub(start).Seconds()
				fmt.Fprintf(w.log, "bench: %s %d/%d tasks (%.0f tasks/s)\n", label, n, total, rate)
			}
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}

// enqueueAll runs p.enqueue for [from, to) under a stall watch.
func enqueueAll(ctx context.Context, p peer, w *workload, from, to uint64, label string) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var progress atomic.Int64
	stopWatch := watch(ctx, cancel, w, label+" enqueue", int64(to-from), progress.Load)
	err := p.enqueue(ctx, w, from, to, &progress)
	stopWatch()
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	if err != nil {
		return err
	}
	if n := progress.Load(); n != int64(to-from) {
		return fmt.Errorf("%s: %d of %d enqueues acknowledged", label, n, to-from)
	}
	return nil
}

// produce runs w.producers goroutines, each calling send for the batches it
// takes, until the range is used up or one fails.
func produce(ctx context.Context, w *workload, from, to uint64, send func(ctx context.Context, lo, hi uint64) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	b := newBatches(from, to, w.batch)
	var wg sync.WaitGroup
	for range w.producers {
		wg.Go(func() {
			for ctx.Err() == nil {
				lo, hi, ok := b.take()
				if !ok {
					return
				}
				if err := send(ctx, lo, hi); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// waitFor polls cond until it holds, ctx ends or timeout passes. It is for
// conditions a peer settles in the background (a JetStream ack in flight).
func waitFor(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("condition not met within %s", timeout)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-t.C:
		}
		wait = min(wait*2, 50*time.Millisecond)
	}
}
