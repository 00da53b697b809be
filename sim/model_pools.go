// The scale model's pools and pulls: the real worker.Decide per step,
// pulls, replies, kills and restores in virtual time.

package sim

import (
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

// flush completes the tasks of p done by t.
func (m *model) flush(p *mPool, t int64) {
	for len(p.running) > 0 && p.running[0].done <= t {
		m.complete(p.running.pop())
	}
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

// poolStep is one turn of the fetch loop (worker's fetch): reserve the
// free slots, ask the policy, send the pull.
func (m *model) poolStep(p *mPool) {
	m.flush(p, m.now)
	free := m.cfg.Slots - len(p.running)
	if free <= 0 {
		m.wakePool(p, p.running[0].done) // blocked until a slot frees
		return
	}
	s := worker.Situation{
		IDC: m.idcs[p.idc], Node: p.name, Queue: modelQueue, Free: min(free, m.limit),
		LocalDrained: p.drained, Helping: p.helping, Entries: p.view.read(m.now), Now: m.clock(),
	}
	if m.cfg.CheckViews > 0 && m.decisions%uint64(m.cfg.CheckViews) == 0 {
		m.viewChecks++
		if !p.view.check() {
			m.viewMismatches++
			p.view.resync()
			s.Entries = p.view.read(m.now)
		}
	}
	var state []byte
	if m.hooks != nil && m.hooks.onDecide != nil {
		state, _ = p.pcg.MarshalBinary()
	}
	d := m.decide(s, m.cfg.Policy, p.rng)
	m.decisions++
	if state != nil {
		m.hooks.onDecide(p.name, s, state, d)
	}
	target := m.byName[d.Node]
	if d.Where == worker.Nowhere || target == nil || m.idcs[target.idc] != d.IDC {
		m.wakePool(p, m.now+int64(max(d.Wait, m.cfg.Policy.Idle)))
		return
	}
	p.step++
	e := m.newEvent(evPullArrive, m.now+int64(d.Delay)+m.rtt(d.Where)/2)
	e.pool, e.step, e.node, e.d, e.sent = p, p.step, target, d, m.now
}

func (m *model) pullArrive(e *event) {
	p, n := e.pool, e.node
	if !p.alive || p.step != e.step {
		return // the pool died: its request goes unanswered
	}
	m.pulls++
	if m.hooks != nil && m.hooks.onPull != nil {
		m.hooks.onPull(p.name, e.d, time.Duration(e.sent), time.Duration(m.now))
	}
	m.materialize(n)
	if n.readyLen() == 0 && e.d.Wait > 0 {
		n.waiter, n.waitStep, n.waitD, n.waitDeadline = p, e.step, e.d, m.now+int64(e.d.Wait)
		n.waitSeq++
		m.scheduleNodeWake(n)
		return
	}
	m.serve(n, p, e.step, e.d)
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
	if !p.alive || p.step != n.waitStep {
		n.waiter = nil
		return
	}
	m.materialize(n)
	if n.readyLen() == 0 && m.now < n.waitDeadline {
		m.scheduleNodeWake(n)
		return
	}
	n.waiter = nil
	m.serve(n, p, n.waitStep, n.waitD)
}

// serve answers a pull with up to MaxTasks of the oldest ready tasks.
func (m *model) serve(n *mNode, p *mPool, step uint64, d worker.Decision) {
	k := min(max(d.MaxTasks, 1), n.readyLen())
	tasks := m.take(n, k)
	m.inNet += int64(k)
	e := m.newEvent(evPullReply, m.now+m.rtt(d.Where)/2)
	e.pool, e.step, e.node, e.d, e.tasks, e.readyAfter = p, step, n, d, tasks, uint64(n.readyLen())
}

func (m *model) pullReply(e *event) {
	p, n, d := e.pool, e.node, e.d
	m.inNet -= int64(len(e.tasks))
	if !p.alive || p.step != e.step {
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
	slow := m.slow[p.idc]
	for _, enq := range e.tasks {
		svc := int64(float64(m.dist.sample(p.rng)) * slow)
		p.running.push(runTask{done: m.now + max(svc, 1), enq: enq, origin: int32(n.idx), where: where})
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
	// As worker's fetch loop after a pull.
	if d.Where == worker.Local {
		p.drained = got < d.MaxTasks
		if d.Wait > 0 {
			p.helping = false
		}
	} else {
		p.drained = false
		p.helping = got > 0
		p.view.correct(d.IDC, d.Node, modelQueue, e.readyAfter, int32(n.idx))
	}
	m.poolStep(p)
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
	if p.node.waiter == p {
		p.node.waiter = nil
	}
	m.retireView(p.view)
	p.view = nil
	for _, g := range p.groups {
		g.alive[p.idc]--
	}
	m.aliveCount--
}

// restorePools starts the dead pools of an IDC afresh: a new view, and a
// sync request on each tier they subscribe (Watcher.Apply).
func (m *model) restorePools(idc int) {
	var sync [backlog.NumTiers]bool
	for _, p := range m.idcPools[idc] {
		if p.alive {
			continue
		}
		p.alive, p.drained, p.helping = true, false, false
		p.view = m.newView(p)
		for _, g := range p.groups {
			g.alive[p.idc]++
		}
		m.aliveCount++
		for _, s := range p.subs {
			if s.tier == backlog.TierHost {
				p.node.syncReq[backlog.TierHost] = true
			} else {
				sync[s.tier] = true
			}
		}
		m.wakePool(p, m.now)
	}
	if sync[backlog.TierIDC] {
		for _, n := range m.idcNodes[idc] {
			n.syncReq[backlog.TierIDC] = true
		}
	}
	if sync[backlog.TierGlobal] {
		for _, n := range m.nodes {
			n.syncReq[backlog.TierGlobal] = true
		}
	}
}

// ---- sampling and the end ----
