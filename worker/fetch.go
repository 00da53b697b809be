package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

// fetch is the pull loop of one queue, a thin shell around the pool's
// Scheduler: take free credits (slots plus prefetch, prefetch.go), ask
// the scheduler what to do, do it, tell it what came of it. Pulls run on
// their own goroutines: up to localPulls of the own node at once
// (pipelined, so a pool is not held to one batch per round trip) and the
// one pull from another node the scheduler allows, so a slow or cut link
// never holds up the own node's work. A long poll of the own node goes
// alone: it is made once the pulls out have said the node is drained, and
// nothing else is decided while it is out. Only free handler slots help
// other nodes: the prefetch is for the own node's tasks.
func (p *Pool) fetch(r *registered) {
	defer p.fetchWG.Done()
	var pullWG sync.WaitGroup
	defer pullWG.Wait()
	// ended gets every pull that ended; at most localPulls local and one
	// remote pull are out, so a send never blocks.
	ended := make(chan pullEnd, localPulls+1)
	var out pullsOut
	for {
		p.noteEnded(ended, &out)
		if out.local >= localPulls || out.long {
			if !p.idle(time.Hour, ended, &out) {
				return
			}
			continue
		}
		_, batch := p.sizer.size()
		k := p.credits.take(max(batch, p.cfg.Policy.RemoteBatch, p.cfg.Policy.CrossIDCBatch), p.fetchStop)
		if k == 0 {
			return
		}
		helpFree := p.cfg.Slots - len(p.slots) - int(p.waiting.Load())
		view := p.view.Entries()
		if helpFree <= 0 {
			view = nil // no other node to help: every handler slot is taken
		}
		p.schedMu.Lock()
		acts := p.sched.Next(time.Now(), r.queue, view, k)
		p.schedMu.Unlock()
		for _, a := range acts {
			switch {
			case a.Where == Nowhere:
				p.credits.give(a.Slots)
				if !p.idle(a.Wait, ended, &out) {
					return
				}
			case a.Where == Local && a.Wait > 0 && out.local > 0:
				// A long poll: wait for the pulls out first.
				p.credits.give(a.Slots)
				if !p.idle(time.Hour, ended, &out) {
					return
				}
			case a.Where == Local:
				if a.Wait > 0 {
					// A long poll waits on an empty queue: it keeps only its
					// queue's share of the credits, the others' loops need
					// theirs meanwhile.
					if share := p.credits.share(len(p.handlers)); a.Slots > share {
						p.credits.give(a.Slots - share)
						a.Slots, a.MaxTasks = share, min(a.MaxTasks, share)
					}
				}
				out.local++
				out.long = a.Wait > 0
				pullWG.Add(1)
				go func() {
					defer pullWG.Done()
					ds, origin := p.pullLocal(r, a)
					p.waiting.Add(int64(len(ds)))
					ended <- pullEnd{where: Local, long: a.Wait > 0}
					p.dispatch(r, origin, Local, ds)
				}()
			default:
				a.MaxTasks = max(min(a.MaxTasks, helpFree), 1)
				pullWG.Add(1)
				go func() {
					defer pullWG.Done()
					ds, origin := p.pullRemote(r, a)
					p.waiting.Add(int64(len(ds)))
					ended <- pullEnd{where: a.Where}
					p.dispatch(r, origin, a.Where, ds)
				}()
			}
		}
	}
}

// pullEnd tells the fetch loop a pull ended; pullsOut is what it has out.
type (
	pullEnd struct {
		where Where
		long  bool
	}
	pullsOut struct {
		local int  // pulls of the own node
		long  bool // one of them is a long poll
	}
)

func (o *pullsOut) ended(e pullEnd) {
	if e.where == Local {
		o.local--
	}
	if e.long {
		o.long = false
	}
}

// noteEnded takes note of the pulls that ended, without waiting.
func (p *Pool) noteEnded(ended <-chan pullEnd, out *pullsOut) {
	for {
		select {
		case e := <-ended:
			out.ended(e)
		default:
			return
		}
	}
}

// idle waits d, or until a pull ends; false when stopping.
func (p *Pool) idle(d time.Duration, ended <-chan pullEnd, out *pullsOut) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case e := <-ended:
		out.ended(e)
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

// pullLocal makes a pull of the own node with the action's credits, and
// resizes the prefetch and the local batch by its round trip.
func (p *Pool) pullLocal(r *registered, a Action) ([]*mqnode.Delivery, Origin) {
	// Not cancelled by Stop: a pull cut short would strand leases.
	ctx, cancel := context.WithTimeout(context.Background(), a.Wait+mqnode.DefaultRequestTimeout)
	origin := Origin{IDC: a.IDC, Node: a.Node}
	t0 := time.Now()
	pr, err := p.client(origin).PullResult(ctx, mqnode.PullRequest{
		Queue: r.queue, MaxTasks: a.MaxTasks, MaxWait: a.Wait, Lease: p.cfg.Lease, WorkerID: p.cfg.ID,
	})
	cancel()
	ds := pr.Deliveries
	if err == nil && a.Wait == 0 {
		p.sizer.pulled(time.Since(t0))
	}
	p.credits.give(a.Slots - len(ds))
	p.stats.pull(Local, len(ds))
	prefetch, batch := p.sizer.size()
	p.credits.setLimit(p.cfg.Slots + prefetch)
	p.schedMu.Lock()
	p.sched.SetLocalBatch(batch)
	p.sched.Observe(PullResult{Action: a, Got: len(ds), Err: err, ReadyAfter: pr.ReadyAfter, Throttled: pr.Throttled}, time.Now())
	p.schedMu.Unlock()
	if err != nil {
		// Retried every localRetry: while the node is down (a pull then
		// fails at once) one line per queue per 10 s, with the count held back.
		if ok, held := p.pullWarn.Allow(r.queue, time.Now()); ok {
			p.log.Warn("pull from the own node failed", "node", a.Node, "queue", r.queue, "err", err, "suppressed", held)
		}
		return nil, origin
	}
	return ds, origin
}

// pullRemote makes a pull the scheduler sent to another node, with its
// reserved credits.
func (p *Pool) pullRemote(r *registered, a Action) ([]*mqnode.Delivery, Origin) {
	origin := Origin{IDC: a.IDC, Node: a.Node}
	if !p.sleep(a.Delay) {
		p.credits.give(a.Slots)
		p.observe(PullResult{Action: a, Err: errStopping})
		return nil, origin
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.Wait+p.cfg.Policy.RemoteTimeout)
	pr, err := p.client(origin).PullResult(ctx, mqnode.PullRequest{
		Queue: r.queue, MaxTasks: a.MaxTasks, MaxWait: a.Wait, Lease: p.cfg.Lease, WorkerID: p.cfg.ID,
	})
	cancel()
	ds, readyAfter := pr.Deliveries, pr.ReadyAfter
	p.credits.give(a.Slots - len(ds))
	p.stats.pull(a.Where, len(ds))
	back := p.observe(PullResult{Action: a, Got: len(ds), Err: err, ReadyAfter: readyAfter, Throttled: pr.Throttled})
	if err != nil {
		p.view.Correct(a.IDC, a.Node, r.queue, 0)
		p.log.Warn("pull from another node failed; avoiding it", "from", origin, "queue", r.queue, "for", back, "err", err)
		return nil, origin
	}
	p.view.Correct(a.IDC, a.Node, r.queue, readyAfter)
	return ds, origin
}

var errStopping = errors.New("stopping")

// dispatch starts each delivery in a handler slot as one frees up (the
// deliveries beyond the free slots are the prefetch). After a kill the
// ones not started are left to their leases.
func (p *Pool) dispatch(r *registered, origin Origin, where Where, ds []*mqnode.Delivery) {
	for i, dl := range ds {
		p.slots <- struct{}{}
		p.waiting.Add(-1)
		if p.killed.Load() {
			<-p.slots
			p.waiting.Add(-int64(len(ds) - i - 1))
			p.credits.give(len(ds) - i)
			return
		}
		p.runWG.Add(1)
		go p.run(r, origin, where, dl)
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
