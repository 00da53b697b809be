package worker

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

func maxBatch(c PolicyConfig) int { return max(c.LocalBatch, c.RemoteBatch, c.CrossIDCBatch) }

// fetch is the pull loop of one queue: reserve free slots, ask the policy
// where to pull, pull, hand each task to a slot. A pull from another node
// runs on its own goroutine (one at a time per queue), so a slow or cut
// link never holds up the own node's work; a node whose pull failed is
// avoided for a while (doubling up to MaxAvoid).
func (p *Pool) fetch(r *registered) {
	defer p.fetchWG.Done()
	var (
		drained    bool
		helping    atomic.Bool
		remoteBusy atomic.Bool
		remoteWG   sync.WaitGroup
		remoteDone = make(chan struct{}, 1)
	)
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
		now := time.Now()
		var entries []backlog.Entry
		if !remoteBusy.Load() {
			entries = p.avoidFilter(p.view.Entries(), now)
		}
		d := p.decide(Situation{IDC: p.cfg.IDC, Node: p.cfg.Node, Queue: r.queue, Free: k, LocalDrained: drained, Helping: helping.Load(), Entries: entries, Now: now})
		if d.Where == Nowhere {
			p.release(k)
			if !p.sleep(d.Wait) {
				return
			}
			continue
		}
		if d.Where != Local {
			remoteBusy.Store(true)
			remoteWG.Add(1)
			go func() {
				defer remoteWG.Done()
				got, err := p.pullRemote(r, d, k)
				helping.Store(err == nil && got > 0)
				remoteBusy.Store(false)
				select {
				case remoteDone <- struct{}{}:
				default:
				}
			}()
			drained = false // back to the own node first
			continue
		}
		// While a remote pull is out, do not park on the own node: look at it
		// at once, and again when the remote pull ends (or soon).
		park := d.Wait > 0 && remoteBusy.Load()
		if park {
			d.Wait = 0
		}
		// Not cancelled by Stop: a pull cut short would strand leases.
		ctx, cancel := context.WithTimeout(context.Background(), d.Wait+mqnode.DefaultRequestTimeout)
		ds, _, err := p.client(Origin{IDC: d.IDC, Node: d.Node}).Pull(ctx, mqnode.PullRequest{
			Queue: r.queue, MaxTasks: d.MaxTasks, MaxWait: d.Wait, Lease: p.cfg.Lease, WorkerID: p.cfg.ID,
		})
		cancel()
		p.release(k - len(ds))
		p.stats.pull(Local, len(ds))
		drained = err == nil && len(ds) < d.MaxTasks
		if d.Wait > 0 {
			helping.Store(false) // a long poll: nobody needed help
		}
		if err != nil {
			p.log.Warn("pull from the own node failed", "node", d.Node, "queue", r.queue, "err", err)
			if !p.sleep(100 * time.Millisecond) {
				return
			}
			continue
		}
		p.dispatch(r, Origin{IDC: d.IDC, Node: d.Node}, Local, ds)
		if park && len(ds) == 0 {
			t := time.NewTimer(20 * time.Millisecond)
			select {
			case <-remoteDone:
			case <-t.C:
			case <-p.fetchStop:
				t.Stop()
				return
			}
			t.Stop()
		}
	}
}

// pullRemote makes a pull the policy sent to another node, with its k
// reserved slots, and hands the tasks to them.
func (p *Pool) pullRemote(r *registered, d Decision, k int) (int, error) {
	if !p.sleep(d.Delay) {
		p.release(k)
		return 0, errStopping
	}
	origin := Origin{IDC: d.IDC, Node: d.Node}
	ctx, cancel := context.WithTimeout(context.Background(), d.Wait+p.cfg.Policy.RemoteTimeout)
	pr, err := p.client(origin).PullResult(ctx, mqnode.PullRequest{
		Queue: r.queue, MaxTasks: d.MaxTasks, MaxWait: d.Wait, Lease: p.cfg.Lease, WorkerID: p.cfg.ID,
	})
	cancel()
	ds, readyAfter := pr.Deliveries, pr.ReadyAfter
	p.release(k - len(ds))
	p.stats.pull(d.Where, len(ds))
	if err != nil {
		back := p.avoid(origin)
		p.view.Correct(d.IDC, d.Node, r.queue, 0)
		p.log.Warn("pull from another node failed; avoiding it", "from", origin, "queue", r.queue, "for", back, "err", err)
		return 0, err
	}
	p.trust(origin)
	if len(ds) == 0 && pr.Throttled > 0 {
		// Its backlog is held back by its overload protection: helping
		// cannot speed it up. Look elsewhere until its throttle may open.
		p.pause(origin, r.queue, max(pr.Throttled, minThrottlePause))
	}
	p.view.Correct(d.IDC, d.Node, r.queue, readyAfter)
	p.dispatch(r, origin, d.Where, ds)
	return len(ds), nil
}

var errStopping = errors.New("stopping")

func (p *Pool) dispatch(r *registered, origin Origin, where Where, ds []*mqnode.Delivery) {
	for _, dl := range ds {
		p.runWG.Add(1)
		go p.run(r, origin, where, dl)
	}
}

// avoid records a failed pull from o and returns how long o is avoided.
func (p *Pool) avoid(o Origin) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.avoided[o]
	a.backoff = min(max(2*a.backoff, time.Second), p.cfg.Policy.MaxAvoid)
	a.until = time.Now().Add(a.backoff)
	p.avoided[o] = a
	return a.backoff
}

// minThrottlePause is the least time a pool leaves alone a node whose pull
// came back empty because a throttle held its tasks back.
const minThrottlePause = 250 * time.Millisecond

type pausedKey struct {
	o     Origin
	queue string
}

// pause leaves queue on o alone for d (its throttle held tasks back);
// o's other queues and its failure backoff are untouched.
func (p *Pool) pause(o Origin, queue string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for k, until := range p.paused {
		if now.After(until) {
			delete(p.paused, k)
		}
	}
	p.paused[pausedKey{o, queue}] = now.Add(min(d, p.cfg.Policy.MaxAvoid))
}

func (p *Pool) trust(o Origin) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.avoided, o)
}

// avoidFilter drops the entries of nodes being avoided and of queues paused
// on a node.
func (p *Pool) avoidFilter(es []backlog.Entry, now time.Time) []backlog.Entry {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.avoided) == 0 && len(p.paused) == 0 {
		return es
	}
	out := es[:0]
	for _, e := range es {
		o := Origin{IDC: e.IDC, Node: e.Node}
		if a, ok := p.avoided[o]; ok && now.Before(a.until) {
			continue
		}
		if until, ok := p.paused[pausedKey{o, e.Queue}]; ok && now.Before(until) {
			continue
		}
		out = append(out, e)
	}
	return out
}

type avoidance struct {
	until   time.Time
	backoff time.Duration
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
	ctx, cancel := context.WithTimeout(withTask(leaseCtx, task), r.timeout)
	defer cancel()
	p.stats.busy.Add(1)
	defer p.stats.busy.Add(-1)
	extDone := make(chan struct{})
	extStopped := make(chan struct{})
	go p.keepLease(ctx, loseLease, origin, d.Receipt, extDone, extStopped)
	started := time.Now()
	res := call(ctx, r.h, task)
	p.metrics.observe(task, where, res.outcome, started)
	calls, bad := task.takeCalls()
	if bad != "" {
		p.log.Warn("handler reported calls to an invalid backend name; dropped", "queue", r.queue, "backend", bad)
	}
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
