package worker

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/mqmesh/mqmesh/mqnode"
)

// run executes one delivery in its slot: keep the lease alive, call the
// handler (panics caught, deadline enforced), ack the result.
func (p *Pool) run(r *registered, origin Origin, where Where, d *mqnode.Delivery) {
	defer p.runWG.Done()
	t := d.Task
	task := &Task{
		ID: t.Id, Queue: t.Queue, Payload: t.Payload, Headers: t.Headers, Attempt: t.Attempt,
		Created: time.UnixMilli(t.CreatedUnixMs), Origin: origin, Tier: tierOf(where), LastError: t.LastError, Producer: t.Producer,
	}
	leaseCtx, loseLease := context.WithCancelCause(p.runParent())
	defer loseLease(nil)
	ctx, cancel := context.WithTimeout(withTask(leaseCtx, task), r.timeout)
	defer cancel()
	p.stats.busy.Add(1)
	defer p.stats.busy.Add(-1)
	stopExtending := p.keepLease(ctx, loseLease, origin, d.Receipt)
	began := time.Now()
	res := call(ctx, r.h, task)
	p.metrics.observe(task, where, res.outcome, began)
	took := time.Since(began)
	p.sizer.handled(took)
	p.schedMu.Lock()
	p.sched.ObserveTask(r.queue, res.outcome == outcomeDone, took)
	p.schedMu.Unlock()
	calls, bad := task.takeCalls()
	if bad != "" {
		p.log.Warn("handler reported calls to an invalid backend name; dropped", "queue", r.queue, "backend", bad)
	}
	stopExtending()
	// The slot is the handler's: free it before the ack's round trip, so
	// the fetch loop can pull the next task meanwhile.
	<-p.slots
	p.credits.give(1)
	if p.killed.Load() {
		return // hard stop: the lease comes back through release or expiry
	}
	if errors.Is(context.Cause(leaseCtx), errLeaseLost) {
		p.stats.leaseLost.Add(1)
		return // someone else may have the task now: do not settle it
	}
	if p.beforeAck != nil && !p.beforeAck(task, res) {
		return
	}
	if err := p.ackerFor(origin).ack(res.ackItem(d.Receipt, calls)); err != nil {
		p.stats.ackErrors.Add(1)
		p.log.Warn("ack failed", "task", t.Id, "origin", origin, "err", err)
	}
	p.stats.done(where, res.outcome)
}

var errLeaseLost = errors.New("lease lost")

// call runs the handler, turning a panic into a retry.
func call(ctx context.Context, h Handler, t *Task) (res Result) {
	defer func() {
		if v := recover(); v != nil {
			res = panicResult(fmt.Sprintf("%v\n%s", v, debug.Stack()))
		}
	}()
	return h(ctx, t)
}

// keepLease extends the lease every ExtendEvery until the returned stop is
// called (which waits for an extension in flight) or ctx ends; if the node
// says the lease is gone, the handler is cancelled. A timer, not a
// goroutine per task: most handlers end before the first extension.
func (p *Pool) keepLease(ctx context.Context, loseLease context.CancelCauseFunc, origin Origin, receipt []byte) (stop func()) {
	var (
		mu      sync.Mutex
		stopped bool
		running sync.WaitGroup
		t       *time.Timer
	)
	t = time.AfterFunc(p.cfg.ExtendEvery, func() {
		mu.Lock()
		if stopped || ctx.Err() != nil {
			mu.Unlock()
			return
		}
		running.Add(1)
		mu.Unlock()
		defer running.Done()
		rctx, rcancel := context.WithTimeout(ctx, p.cfg.ExtendEvery)
		_, err := p.client(origin).AckOne(rctx, &mqnode.AckItem{Receipt: receipt, Kind: mqnode.AckExtend, ExtendMs: p.cfg.Lease.Milliseconds()})
		rcancel()
		switch {
		case err == nil:
			p.stats.extensions.Add(1)
		case errors.Is(err, mqnode.ErrStaleReceipt):
			p.log.Warn("lease lost while the handler ran; cancelling it", "origin", origin)
			loseLease(errLeaseLost)
			return
		default:
			p.log.Debug("lease extension failed; will retry", "origin", origin, "err", err)
		}
		mu.Lock()
		if !stopped {
			t.Reset(p.cfg.ExtendEvery)
		}
		mu.Unlock()
	})
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
		running.Wait()
	}
}
