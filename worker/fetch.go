package worker

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

func maxBatch(c PolicyConfig) int { return max(c.LocalBatch, c.RemoteBatch, c.CrossIDCBatch) }

// fetch is the pull loop of one queue, a thin shell around the pool's
// Scheduler: reserve free slots, ask the scheduler what to do, do it, tell
// it what came of it. A pull from another node runs on its own goroutine
// (the scheduler allows one at a time per queue), so a slow or cut link
// never holds up the own node's work.
func (p *Pool) fetch(r *registered) {
	defer p.fetchWG.Done()
	var remoteWG sync.WaitGroup
	remoteDone := make(chan struct{}, 1)
	defer remoteWG.Wait()
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
		p.schedMu.Lock()
		acts := p.sched.Next(time.Now(), r.queue, p.view.Entries(), k)
		p.schedMu.Unlock()
		for _, a := range acts {
			switch a.Where {
			case Nowhere:
				p.release(a.Slots)
				if !p.idle(a.Wait, remoteDone) {
					return
				}
			case Local:
				p.pullLocal(r, a)
			default:
				remoteWG.Add(1)
				go func() {
					defer remoteWG.Done()
					p.pullRemote(r, a)
					select {
					case remoteDone <- struct{}{}:
					default:
					}
				}()
			}
		}
	}
}

// idle waits d, or until a remote pull ends; false when stopping.
func (p *Pool) idle(d time.Duration, remoteDone <-chan struct{}) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-remoteDone:
	case <-t.C:
	case <-p.fetchStop:
		return false
	}
	return true
}

func (p *Pool) observe(res PullResult) time.Duration {
	p.schedMu.Lock()
	defer p.schedMu.Unlock()
	return p.sched.Observe(res, time.Now())
}

// pullLocal makes a pull of the own node with the action's slots.
func (p *Pool) pullLocal(r *registered, a Action) {
	// Not cancelled by Stop: a pull cut short would strand leases.
	ctx, cancel := context.WithTimeout(context.Background(), a.Wait+mqnode.DefaultRequestTimeout)
	origin := Origin{IDC: a.IDC, Node: a.Node}
	ds, _, err := p.client(origin).Pull(ctx, mqnode.PullRequest{
		Queue: r.queue, MaxTasks: a.MaxTasks, MaxWait: a.Wait, Lease: p.cfg.Lease, WorkerID: p.cfg.ID,
	})
	cancel()
	p.release(a.Slots - len(ds))
	p.stats.pull(Local, len(ds))
	p.observe(PullResult{Action: a, Got: len(ds), Err: err})
	if err != nil {
		p.log.Warn("pull from the own node failed", "node", a.Node, "queue", r.queue, "err", err)
		return
	}
	p.dispatch(r, origin, Local, ds)
}

// pullRemote makes a pull the scheduler sent to another node, with its
// reserved slots, and hands the tasks to them.
func (p *Pool) pullRemote(r *registered, a Action) {
	origin := Origin{IDC: a.IDC, Node: a.Node}
	if !p.sleep(a.Delay) {
		p.release(a.Slots)
		p.observe(PullResult{Action: a, Err: errStopping})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.Wait+p.cfg.Policy.RemoteTimeout)
	pr, err := p.client(origin).PullResult(ctx, mqnode.PullRequest{
		Queue: r.queue, MaxTasks: a.MaxTasks, MaxWait: a.Wait, Lease: p.cfg.Lease, WorkerID: p.cfg.ID,
	})
	cancel()
	ds, readyAfter := pr.Deliveries, pr.ReadyAfter
	p.release(a.Slots - len(ds))
	p.stats.pull(a.Where, len(ds))
	back := p.observe(PullResult{Action: a, Got: len(ds), Err: err, ReadyAfter: readyAfter, Throttled: pr.Throttled})
	if err != nil {
		p.view.Correct(a.IDC, a.Node, r.queue, 0)
		p.log.Warn("pull from another node failed; avoiding it", "from", origin, "queue", r.queue, "for", back, "err", err)
		return
	}
	p.view.Correct(a.IDC, a.Node, r.queue, readyAfter)
	p.dispatch(r, origin, a.Where, ds)
}

var errStopping = errors.New("stopping")

func (p *Pool) dispatch(r *registered, origin Origin, where Where, ds []*mqnode.Delivery) {
	for _, dl := range ds {
		p.runWG.Add(1)
		go p.run(r, origin, where, dl)
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
	t := d.Task
	task := &Task{
		ID: t.Id, Queue: t.Queue, Payload: t.Payload, Headers: t.Headers, Attempt: t.Attempt,
		Created: time.UnixMilli(t.CreatedUnixMs), Origin: origin, Tier: tierOf(where), LastError: t.LastError,
	}
	leaseCtx, loseLease := context.WithCancelCause(p.runCtx)
	defer loseLease(nil)
	ctx, cancel := context.WithTimeout(withTask(leaseCtx, task), r.timeout)
	defer cancel()
	p.stats.busy.Add(1)
	defer p.stats.busy.Add(-1)
	extDone := make(chan struct{})
	extStopped := make(chan struct{})
	go p.keepLease(ctx, loseLease, origin, d.Receipt, extDone, extStopped)
	began := time.Now()
	res := call(ctx, r.h, task)
	p.metrics.observe(task, where, res.outcome, began)
	p.schedMu.Lock()
	p.sched.ObserveTask(r.queue, res.outcome == outcomeDone, time.Since(began))
	p.schedMu.Unlock()
	calls, bad := task.takeCalls()
	if bad != "" {
		p.log.Warn("handler reported calls to an invalid backend name; dropped", "queue", r.queue, "backend", bad)
	}
	close(extDone)
	<-extStopped
	// The slot is the handler's: free it before the ack's round trip, so
	// the fetch loop can pull the next task meanwhile.
	p.release(1)
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
