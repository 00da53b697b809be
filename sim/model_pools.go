// The scale model's pools and pulls: each pool's worker.Scheduler per step,
// pulls, replies, kills and restores in virtual time.

package sim

import (
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/worker"
)

type runTask struct {
	done, enq int64
	origin    int32
	where     int8
	// failed: the handler fails (a retry after RetryBackoff); took is its
	// service time, which the pool's scheduler learns its health from.
	failed bool
	took   int64
}

// runHeap is a min-heap of running tasks by completion time.
type runHeap []runTask

func (h *runHeap) push(x runTask) {
	*h = append(*h, x)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if s[p].done <= s[i].done {
			break
		}
		s[p], s[i] = s[i], s[p]
		i = p
	}
}

func (h *runHeap) pop() runTask {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && s[l].done < s[m].done {
			m = l
		}
		if r < len(s) && s[r].done < s[m].done {
			m = r
		}
		if m == i {
			break
		}
		s[m], s[i] = s[i], s[m]
		i = m
	}
	*h = s
	return top
}

func (m *model) wakePool(p *mPool, at int64) {
	p.step++
	e := m.newEvent(evPoolWake, at)
	e.pool, e.step = p, p.step
}

// newScheduler is a pool's fetch-loop core: worker.Scheduler with the
// pool's random source (and a test's stand-in policy or observer).
func (m *model) newScheduler(p *mPool) *worker.Scheduler {
	decide := worker.Decide
	if m.hooks != nil && m.hooks.decide != nil {
		decide = m.hooks.decide
	}
	if m.hooks != nil && m.hooks.onDecide != nil {
		inner := decide
		decide = func(s worker.Situation, c worker.PolicyConfig, rng *rand.Rand) worker.Decision {
			state, _ := p.pcg.MarshalBinary()
			d := inner(s, c, rng)
			m.hooks.onDecide(p.name, s, state, d)
			return d
		}
	}
	node := ""
	if p.node != nil {
		node = p.node.name
	}
	return worker.NewScheduler(worker.SchedulerConfig{IDC: m.idcs[p.idc], Node: node, Policy: m.cfg.Policy, Rand: p.rng, Decide: decide})
}

// flush completes the tasks of p done by t.
func (m *model) flush(p *mPool, t int64) {
	for len(p.running) > 0 && p.running[0].done <= t {
		r := p.running.pop()
		p.sched.ObserveTask(modelQueue, !r.failed, time.Duration(r.took))
		if r.failed {
			// Nacked: ready again on its node after the queue's backoff,
			// keeping its enqueue time (latency counts from the first).
			m.retries++
			m.phaseAt(r.done).retries++
			m.requeueAt(m.nodes[r.origin], r.enq, r.done+int64(m.cfg.RetryBackoff))
			continue
		}
		m.complete(r)
	}
}

func (m *model) requeueAt(n *mNode, enq, at int64) {
	b := append(m.buf(1), enq)
	m.requeueLater(n, b, at)
}

func (m *model) complete(r runTask) {
	m.completed++
	m.lastDone = max(m.lastDone, r.done)
	ph := m.phaseAt(r.done)
	ph.done++
	ph.where[r.where]++
	ph.hist.add(r.done - r.enq)
}

func (m *model) rtt(w worker.Where) int64 {
	switch w {
	case worker.Local:
		return int64(m.cfg.Net.PullLocal)
	case worker.SameIDC:
		return int64(m.cfg.Net.PullSameIDC)
	}
	return int64(m.cfg.Net.PullCrossIDC)
}

// poolStep runs the pool's fetch loop (the shell of worker's fetch, in
// virtual time) until it blocks: reserve the free slots, ask the pool's
// worker.Scheduler, send the pull. A remote pull goes on while the loop
// continues; a pull of the own node, an idle or full slots stop it until
// the reply, the wake or a freed slot.
func (m *model) poolStep(p *mPool) {
	m.flush(p, m.now)
	p.step++ // a pending wake is void: the loop runs now
	for {
		free := m.cfg.Slots - len(p.running) - p.reserved
		if free <= 0 {
			if len(p.running) > 0 {
				m.wakePool(p, p.running[0].done) // blocked until a slot frees
			}
			return // else a remote pull holds every slot: its reply wakes the loop
		}
		entries := p.view.read(m.now)
		if m.cfg.CheckViews > 0 && m.decisions%uint64(m.cfg.CheckViews) == 0 {
			m.viewChecks++
			if !p.view.check() {
				m.viewMismatches++
				p.view.resync()
				entries = p.view.read(m.now)
			}
		}
		acts := p.sched.Next(m.clock(), modelQueue, entries, min(free, m.limit))
		m.decisions++
		a := acts[0]
		target := m.byName[a.Node]
		if a.Where == worker.Nowhere || target == nil || m.idcs[target.idc] != a.IDC {
			m.wakePool(p, m.now+max(int64(a.Wait), 1))
			return
		}
		p.reserved += a.Slots
		e := m.newEvent(evPullArrive, m.now+int64(a.Delay)+m.half(p.idc, target.idc, a.Where))
		e.pool, e.step, e.node, e.a, e.sent = p, p.gen, target, a, m.now
		if a.Where == worker.Local {
			p.localBusy = true
			return
		}
	}
}

func (m *model) pullArrive(e *event) {
	p, n := e.pool, e.node
	if !p.alive || p.gen != e.step {
		return // the pool died: its request goes unanswered
	}
	m.pulls++
	if m.hooks != nil && m.hooks.onPull != nil {
		m.hooks.onPull(p.name, e.a, time.Duration(e.sent), time.Duration(m.now))
	}
	if n.down {
		m.failPull(p, n, e.step, e.a)
		return
	}
	m.materialize(n)
	if n.readyLen() == 0 && e.a.Wait > 0 {
		n.waiter, n.waitStep, n.waitA, n.waitDeadline = p, e.step, e.a, m.now+int64(e.a.Wait)
		n.waitSeq++
		m.scheduleNodeWake(n)
		return
	}
	m.serve(n, p, e.step, e.a)
}

func (m *model) scheduleNodeWake(n *mNode) {
	at := n.waitDeadline
	if n.nextArr < m.loadEnd {
		at = min(at, n.nextArr)
	}
	e := m.newEvent(evNodeWake, max(at, m.now))
	e.node, e.step = n, n.waitSeq
}

func (m *model) nodeWake(e *event) {
	n := e.node
	p := n.waiter
	if p == nil || e.step != n.waitSeq {
		return
	}
	if !p.alive || p.gen != n.waitStep {
		n.waiter = nil
		return
	}
	m.materialize(n)
	if n.readyLen() == 0 && m.now < n.waitDeadline {
		m.scheduleNodeWake(n)
		return
	}
	n.waiter = nil
	m.serve(n, p, n.waitStep, n.waitA)
}

// serve answers a pull with up to MaxTasks of the oldest ready tasks.
func (m *model) serve(n *mNode, p *mPool, step uint64, a worker.Action) {
	k := min(max(a.MaxTasks, 1), n.readyLen())
	tasks := m.take(n, k)
	m.inNet += int64(k)
	e := m.newEvent(evPullReply, m.now+m.half(p.idc, n.idc, a.Where))
	e.pool, e.step, e.node, e.a, e.tasks, e.readyAfter = p, step, n, a, tasks, uint64(n.readyLen())
}

func (m *model) pullReply(e *event) {
	p, n, a := e.pool, e.node, e.a
	m.inNet -= int64(len(e.tasks))
	if !p.alive || p.gen != e.step {
		// Delivered to a dead pool: leased until gossip declares it dead.
		m.requeueLater(n, e.tasks, max(m.now, p.killedAt+int64(m.cfg.LeaseRelease)))
		return
	}
	where := int8(2)
	switch {
	case n == p.node:
		where = 0
	case n.idc == p.idc:
		where = 1
	}
	slow, errRate := m.slow[p.idc], m.errRate[p.idc]
	for _, enq := range e.tasks {
		svc := max(int64(float64(m.dist.sample(p.rng))*slow), 1)
		failed := errRate > 0 && p.rng.Float64() < errRate
		p.running.push(runTask{done: m.now + svc, enq: enq, origin: int32(n.idx), where: where, failed: failed, took: svc})
	}
	if got := len(e.tasks); got > 0 && n != p.node && n.idc == m.faultIDC && p.idc != m.faultIDC &&
		m.now >= m.faultStart && m.now < m.faultEnd {
		m.firstHelp = min(m.firstHelp, m.now)
		n.firstHelp = min(n.firstHelp, m.now)
		p.helped += int64(got)
	}
	got := len(e.tasks)
	m.bufs = append(m.bufs, e.tasks)
	e.tasks = nil
	// As worker's pullLocal and pullRemote: give back the unfilled slots,
	// tell the scheduler, correct the view.
	p.reserved -= a.Slots
	res := worker.PullResult{Action: a, Got: got, ReadyAfter: e.readyAfter}
	if e.err {
		res.Err = errNodeDown
	}
	p.sched.Observe(res, m.clock())
	if a.Where == worker.Local {
		p.localBusy = false
		m.poolStep(p)
		return
	}
	if !e.err {
		p.view.correct(a.IDC, a.Node, modelQueue, e.readyAfter, int32(n.idx))
	}
	if !p.localBusy {
		m.poolStep(p) // the loop waited for a slot or idled: it goes on
	}
}

func (m *model) requeueLater(n *mNode, tasks []int64, at int64) {
	if len(tasks) == 0 {
		return
	}
	e := m.newEvent(evRequeue, at)
	e.node, e.tasks = n, tasks
	m.requeued += int64(len(tasks))
}

func (m *model) requeue(e *event) {
	n := e.node
	for _, enq := range e.tasks {
		r := n.ready[n.head:]
		i := sort.Search(len(r), func(i int) bool { return r[i] > enq })
		n.ready = slices.Insert(n.ready, n.head+i, enq)
	}
	k := int64(len(e.tasks))
	m.requeued -= k
	m.readyTotal += k
	m.readyIDC[n.idc] += k
	m.bufs = append(m.bufs, e.tasks)
	e.tasks = nil
	if n.waiter != nil {
		e := m.newEvent(evNodeWake, m.now)
		e.node, e.step = n, n.waitSeq
	}
}

// ---- timeline ----

// kill: a pool dies without a word. Its running tasks are leased: they
// are ready again LeaseRelease later, when gossip has declared it dead.
func (m *model) kill(p *mPool) {
	if !p.alive {
		return
	}
	m.flush(p, m.now)
	byOrigin := map[int32][]int64{}
	var origins []int32
	for _, r := range p.running {
		if byOrigin[r.origin] == nil {
			origins = append(origins, r.origin)
		}
		byOrigin[r.origin] = append(byOrigin[r.origin], r.enq)
	}
	slices.Sort(origins)
	for _, o := range origins {
		m.requeueLater(m.nodes[o], byOrigin[o], m.now+int64(m.cfg.LeaseRelease))
	}
	p.running = p.running[:0]
	p.alive, p.killedAt = false, m.now
	p.step++
	p.gen++
	p.reserved, p.localBusy = 0, false
	if p.node != nil && p.node.waiter == p {
		p.node.waiter = nil
	}
	m.retireView(p.view)
	p.view = nil
	for _, g := range p.groups {
		g.alive[p.idc]--
	}
	m.aliveCount--
}

// restorePools starts the dead pools of an IDC afresh (those of crashed
// hosts wait for restart-nodes).
func (m *model) restorePools(idc int) {
	var sync [backlog.NumTiers]bool
	for _, p := range m.idcPools[idc] {
		if !p.alive && (p.node == nil || !p.node.down) {
			m.restorePool(p, &sync)
		}
	}
	m.syncTiers(idc, sync)
}

// restorePool starts a dead pool afresh: a new scheduler and view, and a
// sync request on each tier it subscribes (Watcher.Apply), noted in sync
// for syncTiers.
func (m *model) restorePool(p *mPool, sync *[backlog.NumTiers]bool) {
	p.alive = true
	p.sched = m.newScheduler(p)
	p.view = m.newView(p)
	for _, g := range p.groups {
		g.alive[p.idc]++
	}
	m.aliveCount++
	for _, s := range p.subs {
		if s.Tier == backlog.TierHost {
			p.node.plan.RequestSync(backlog.TierHost)
		} else {
			sync[s.Tier] = true
		}
	}
	m.wakePool(p, m.now)
}

// syncTiers sends the sync requests of pools of idc that (re)started.
func (m *model) syncTiers(idc int, sync [backlog.NumTiers]bool) {
	if sync[backlog.TierIDC] {
		for _, n := range m.idcNodes[idc] {
			n.plan.RequestSync(backlog.TierIDC)
		}
	}
	if sync[backlog.TierGlobal] {
		for _, n := range m.nodes {
			n.plan.RequestSync(backlog.TierGlobal)
		}
	}
	for _, t := range backlog.SummaryTiers {
		if !sync[t] {
			continue
		}
		for x, ms := range m.sums[t] {
			if t == backlog.TierGlobal || x == idc {
				ms.sum.RequestSync()
			}
		}
	}
}

// ---- sampling and the end ----
