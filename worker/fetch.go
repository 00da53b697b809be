package worker

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

func maxBatch(c PolicyConfig) int { return max(c.LocalBatch, c.RemoteBatch, c.CrossIDCBatch) }

// fetch is the pull loop of one queue: reserve free slots, ask the policy
// where to pull, pull, hand each task to a slot.
func (p *Pool) fetch(r *registered) {
	defer p.fetchWG.Done()
	drained, helping := false, false
	limit := maxBatch(p.cfg.Policy)
	for {
		// Reserve at least one slot, then whatever else is free.
		select {
		case p.slots <- struct{}{}:
		case <-p.fetchStop:
			return
		}
		k := 1
	more:
		for k < limit {
			select {
			case p.slots <- struct{}{}:
				k++
			default:
				break more
			}
		}
		d := p.decide(Situation{IDC: p.cfg.IDC, Node: p.cfg.Node, Queue: r.queue, Free: k, LocalDrained: drained, Helping: helping, Entries: p.view.Entries(), Now: time.Now()})
		if d.Where == Nowhere {
			p.release(k)
			if !p.sleep(d.Wait) {
				return
			}
			continue
		}
		if !p.sleep(d.Delay) {
			p.release(k)
			return
		}
		origin := Origin{IDC: d.IDC, Node: d.Node}
		// Not cancelled by Stop: a pull cut short would strand leases.
		ctx, cancel := context.WithTimeout(context.Background(), d.Wait+mqnode.DefaultRequestTimeout)
		ds, readyAfter, err := p.client(origin).Pull(ctx, mqnode.PullRequest{
			Queue: r.queue, MaxTasks: d.MaxTasks, MaxWait: d.Wait, Lease: p.cfg.Lease, WorkerID: p.cfg.ID,
		})
		cancel()
		p.release(k - len(ds))
		p.stats.pull(d.Where, len(ds))
		switch {
		case d.Where == Local:
			drained = err == nil && len(ds) < d.MaxTasks
			if d.Wait > 0 {
				helping = false // a long poll: nobody needed help
			}
		default:
			// Back to the own node first after every remote pull.
			drained = false
			helping = err == nil && len(ds) > 0
			if err == nil {
				p.view.Correct(d.IDC, d.Node, r.queue, readyAfter)
			}
		}
		if err != nil {
			if errors.Is(err, mqnode.ErrUnavailable) && d.Where != Local {
				p.view.Correct(d.IDC, d.Node, r.queue, 0) // gone or stopping: look elsewhere
			}
			p.log.Warn("pull failed", "from", origin, "queue", r.queue, "err", err)
			if !p.sleep(100 * time.Millisecond) {
				return
			}
			continue
		}
		for _, dl := range ds {
			p.runWG.Add(1)
			go p.run(r, origin, d.Where, dl)
		}
	}
}

func (p *Pool) release(n int) {
	for i := 0; i < n; i++ {
		<-p.slots
	}
}

func tierOf(w Where) backlog.Tier {
	switch w {
	case SameIDC:
		return backlog.TierIDC
	case OtherIDC:
		return backlog.TierGlobal
	}
	return backlog.TierHost
}

// run executes one delivery in its slot: keep the lease alive, call the
// handler (panics caught, deadline enforced), ack the result.
func (p *Pool) run(r *registered, origin Origin, where Where, d *mqnode.Delivery) {
	defer p.runWG.Done()
	defer p.release(1)
	t := d.Task
	task := &Task{
		ID: t.Id, Queue: t.Queue, Payload: t.Payload, Headers: t.Headers, Attempt: t.Attempt,
		Created: time.UnixMilli(t.CreatedUnixMs), Origin: origin, Tier: tierOf(where), LastError: t.LastError,
	}
	leaseCtx, loseLease := context.WithCancelCause(p.runCtx)
	defer loseLease(nil)
	ctx, cancel := context.WithTimeout(leaseCtx, r.timeout)
	defer cancel()
	p.stats.busy.Add(1)
	defer p.stats.busy.Add(-1)
	extDone := make(chan struct{})
	extStopped := make(chan struct{})
	go p.keepLease(ctx, loseLease, origin, d.Receipt, extDone, extStopped)
	res := call(ctx, r.h, task)
	close(extDone)
	<-extStopped
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
	if err := p.ackerFor(origin).ack(res.ackItem(d.Receipt)); err != nil {
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

// keepLease extends the lease every ExtendEvery until done; if the node
// says the lease is gone, the handler is cancelled.
func (p *Pool) keepLease(ctx context.Context, loseLease context.CancelCauseFunc, origin Origin, receipt []byte, done <-chan struct{}, stopped chan<- struct{}) {
	defer close(stopped)
	t := time.NewTicker(p.cfg.ExtendEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, rcancel := context.WithTimeout(context.Background(), p.cfg.ExtendEvery)
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
	}
}
