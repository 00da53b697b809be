package mqnode

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
)

// Defaults of AsyncConfig.
const (
	DefaultAsyncMaxBatch    = 256
	DefaultAsyncMaxRequests = 4
	DefaultAsyncMaxInFlight = 4096
	// asyncBatchOverhead is room left in a NATS message for an enqueue
	// request's own framing beside its items.
	asyncBatchOverhead = 4096
)

// AsyncConfig tunes an Enqueuer. Zero fields take the defaults.
type AsyncConfig struct {
	// MaxBatch is the most tasks one enqueue request carries. Default 256.
	// A request also stays within the connection's max message size.
	MaxBatch int
	// MaxRequests is the most enqueue requests out at once. Default 4.
	// Tasks that arrive while every request is out wait and go together
	// in the next one, so batches grow with the load and a lone task goes
	// at once: there is no linger timer.
	MaxRequests int
	// MaxInFlight bounds the tasks accepted and not yet settled (queued in
	// the client or in a request). Enqueue blocks while it is reached.
	// Default 4096; at least MaxBatch.
	MaxInFlight int
	// RequestTimeout bounds one enqueue request. Default
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
}

// WithDefaults fills zero fields.
func (c AsyncConfig) WithDefaults() AsyncConfig {
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultAsyncMaxBatch
	}
	if c.MaxRequests <= 0 {
		c.MaxRequests = DefaultAsyncMaxRequests
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = DefaultAsyncMaxInFlight
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	return c
}

// Validate checks a defaulted config.
func (c AsyncConfig) Validate() error {
	if c.MaxInFlight < c.MaxBatch {
		return fmt.Errorf("%w: async max_in_flight %d: must be at least max_batch %d", ErrBadRequest, c.MaxInFlight, c.MaxBatch)
	}
	return nil
}

// Enqueuer enqueues tasks on one queue asynchronously: Enqueue hands a task
// over and returns a future at once (or blocks while MaxInFlight tasks are
// unsettled); the Enqueuer batches the tasks it holds into requests, keeps
// up to MaxRequests of them out at once, and settles each task's future
// with its own result or error. A producer that sends one task at a time
// so gets batch throughput without waiting a round trip per task.
//
// Results: a task's future gets its id (EnqueueResult) once the node
// acknowledged it as durable. When a request fails as a whole, every task
// in it gets the error (a timeout, ErrUnavailable, means the tasks may or
// may not be stored: give them dedup keys to retry safely), except that a
// request the node rejected as invalid (ErrBadRequest, ErrPayloadTooLarge;
// the node then stores none of it) is retried task by task, so only the
// bad task fails. Futures of one Enqueuer settle in no particular order
// across requests; the tasks of one request settle together.
//
// Flush waits until every task handed over so far is settled; Close
// flushes and stops. An Enqueuer is safe for concurrent use.
type Enqueuer struct {
	c     *Client
	queue string
	cfg   AsyncConfig
	// budget is the most bytes of items one request carries.
	budget int

	slots chan struct{} // one per task in flight (MaxInFlight)
	reqs  chan struct{} // one per request out (MaxRequests)
	in    chan *pendingTask

	mu      sync.Mutex
	closed  bool
	pending int            // tasks accepted and not settled
	idle    chan struct{}  // closed when pending drops to 0
	loop    sync.WaitGroup // the batching goroutine and its requests
}

// Future is the outcome of one asynchronous enqueue.
type Future struct {
	done chan struct{}
	res  *EnqueueResult
	err  error
}

// Done is closed once the task is settled.
func (f *Future) Done() <-chan struct{} { return f.done }

// Result returns the task's result once settled; before, it returns nil
// and ErrNotSettled.
func (f *Future) Result() (*EnqueueResult, error) {
	select {
	case <-f.done:
		return f.res, f.err
	default:
		return nil, ErrNotSettled
	}
}

// Wait waits until the task is settled or ctx ends, and returns its result.
func (f *Future) Wait(ctx context.Context) (*EnqueueResult, error) {
	select {
	case <-f.done:
		return f.res, f.err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// ErrNotSettled is Future.Result's error before the task is settled.
var ErrNotSettled = errors.New("mqnode: enqueue not settled yet")

// ErrEnqueuerClosed is Enqueue's error after Close.
var ErrEnqueuerClosed = fmt.Errorf("%w: enqueuer closed", ErrUnavailable)

type pendingTask struct {
	item *EnqueueItem
	size int
	f    *Future
	cb   func(*EnqueueResult, error)
}

// NewEnqueuer returns an asynchronous enqueuer of queue over c. Close it to
// flush and stop its goroutine.
func (c *Client) NewEnqueuer(queue string, cfg AsyncConfig) (*Enqueuer, error) {
	if err := ValidateTarget("queue", queue); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidName, err)
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	budget := 1 << 20
	if mp := c.nc.MaxPayload(); mp > 0 {
		budget = int(mp)
	}
	e := &Enqueuer{
		c: c, queue: queue, cfg: cfg, budget: max(budget-asyncBatchOverhead, 1),
		slots: make(chan struct{}, cfg.MaxInFlight),
		reqs:  make(chan struct{}, cfg.MaxRequests),
		in:    make(chan *pendingTask, cfg.MaxInFlight),
	}
	e.loop.Add(1)
	go e.run()
	return e, nil
}

// Enqueue hands item over and returns its future. It blocks while
// MaxInFlight tasks are unsettled, until ctx ends (then it returns ctx's
// cause and the task is not sent). ctx bounds only the hand-over; the
// request has its own timeout (RequestTimeout).
func (e *Enqueuer) Enqueue(ctx context.Context, item *EnqueueItem) (*Future, error) {
	f := &Future{done: make(chan struct{})}
	if err := e.submit(ctx, &pendingTask{item: item, f: f}); err != nil {
		return nil, err
	}
	return f, nil
}

// EnqueueFunc is Enqueue with a callback instead of a future: cb runs once,
// on an Enqueuer goroutine, when the task is settled. It must not block for
// long (it holds up the other results of its request); it may hand over
// another task (after Close that fails with ErrEnqueuerClosed).
func (e *Enqueuer) EnqueueFunc(ctx context.Context, item *EnqueueItem, cb func(*EnqueueResult, error)) error {
	return e.submit(ctx, &pendingTask{item: item, cb: cb})
}

func (e *Enqueuer) submit(ctx context.Context, t *pendingTask) error {
	if t.item == nil {
		return fmt.Errorf("%w: nil enqueue item", ErrBadRequest)
	}
	t.size = proto.Size(t.item) + 8 // the item and its field tag and length
	select {
	case e.slots <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		<-e.slots
		return ErrEnqueuerClosed
	}
	if e.pending == 0 {
		e.idle = make(chan struct{})
	}
	e.pending++
	e.in <- t // never blocks: in has room for MaxInFlight tasks
	e.mu.Unlock()
	return nil
}

// Flush waits until no task is unsettled, or ctx ends. (Tasks handed over
// by other goroutines during the call delay it too.)
func (e *Enqueuer) Flush(ctx context.Context) error {
	e.mu.Lock()
	idle := e.idle
	n := e.pending
	e.mu.Unlock()
	if n == 0 {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Close stops taking tasks, waits until every task handed over is settled
// (each request is bounded by RequestTimeout), and stops the Enqueuer's
// goroutines. It is safe to call more than once.
func (e *Enqueuer) Close() {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		close(e.in)
	}
	e.mu.Unlock()
	e.loop.Wait()
}

// InFlight returns the number of tasks handed over and not yet settled.
func (e *Enqueuer) InFlight() int { return len(e.slots) }

// run batches tasks: it takes the first task, waits for a free request,
// then adds whatever else is waiting (up to MaxBatch and the byte budget)
// and sends the batch.
func (e *Enqueuer) run() {
	defer e.loop.Done()
	var carry *pendingTask
	for {
		first := carry
		carry = nil
		if first == nil {
			t, ok := <-e.in
			if !ok {
				return
			}
			first = t
		}
		e.reqs <- struct{}{}
		batch, size := []*pendingTask{first}, first.size
	fill:
		for len(batch) < e.cfg.MaxBatch {
			select {
			case t, ok := <-e.in:
				if !ok {
					break fill
				}
				if size+t.size > e.budget {
					carry = t
					break fill
				}
				batch, size = append(batch, t), size+t.size
			default:
				break fill
			}
		}
		e.loop.Add(1)
		go func() {
			defer e.loop.Done()
			e.send(batch)
			<-e.reqs
		}()
	}
}

// send enqueues batch in one request and settles its tasks. A batch the
// node rejected as invalid is retried task by task.
func (e *Enqueuer) send(batch []*pendingTask) {
	items := make([]*EnqueueItem, len(batch))
	for i, t := range batch {
		items[i] = t.item
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RequestTimeout)
	res, err := e.c.Enqueue(ctx, e.queue, items...)
	cancel()
	if err != nil && len(batch) > 1 && (errors.Is(err, ErrBadRequest) || errors.Is(err, ErrPayloadTooLarge)) {
		for _, t := range batch {
			e.send([]*pendingTask{t})
		}
		return
	}
	for i, t := range batch {
		if err != nil {
			e.settle(t, nil, fmt.Errorf("enqueue on %s: %w", e.queue, err))
		} else {
			e.settle(t, res[i], nil)
		}
	}
}

// settle completes t. Its in-flight slot is freed first, so a callback
// may hand over another task (a retry) without waiting on itself; Flush
// returns only after the callback ran.
func (e *Enqueuer) settle(t *pendingTask, r *EnqueueResult, err error) {
	<-e.slots
	if t.f != nil {
		t.f.res, t.f.err = r, err
		close(t.f.done)
	}
	if t.cb != nil {
		t.cb(r, err)
	}
	e.mu.Lock()
	if e.pending--; e.pending == 0 {
		close(e.idle)
	}
	e.mu.Unlock()
}
