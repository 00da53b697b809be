// The scale model's host crashes, restarts, slow links and the summarizer
// election they move.

package sim

import (
	"errors"
	"math"
	"slices"
	"strings"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/worker"
)

// errNodeDown is the error of a pull sent to a crashed node (no responder:
// it fails at once).
var errNodeDown = errors.New("node down")

// killNodes crashes the first share of idc's nodes by name (its summarizer
// first): node and pool stop at once. The node's ready tasks wait on its
// disk; arrivals meant for it are refused while it is down (producers'
// enqueues fail). Gossip declares it failed LeaseRelease later: views
// forget it, and the IDC elects another summarizer if it was the one.
func (m *model) killNodes(idc int, share float64) {
	order := slices.Clone(m.idcNodes[idc])
	slices.SortFunc(order, func(a, b *mNode) int { return strings.Compare(a.name, b.name) })
	k := int(math.Ceil(share * float64(len(order))))
	for _, n := range order {
		if k == 0 {
			break
		}
		if n.down {
			continue
		}
		k--
		m.materialize(n)
		n.down = true
		m.crashed++
		if w := n.waiter; w != nil {
			n.waiter = nil
			m.failPull(w, n, n.waitStep, n.waitA)
		}
		if n.pool != nil {
			m.kill(n.pool)
		}
		e := m.newEvent(evGossipDead, m.now+int64(m.cfg.LeaseRelease))
		e.node, e.step = n, n.inc
	}
}

// gossipDead: gossip declared n failed (if it is still down, in the same
// incarnation): every view forgets it (mesh.FeedView), its IDC's
// summarizers forget it, and the IDC's election may move.
func (m *model) gossipDead(n *mNode, inc uint64) {
	if !n.down || n.inc != inc {
		return
	}
	for _, p := range m.pools {
		if p.alive {
			p.view.forget(m.idcs[n.idc], n.name, int32(n.idx))
		}
	}
	for _, t := range backlog.SummaryTiers {
		if m.sums[t] != nil {
			m.sums[t][n.idc].sum.Forget(n.name)
		}
	}
	m.elect(n.idc)
}

// restartNodes restarts idc's crashed nodes on their disks (a new
// incarnation of their publisher) and their pools.
func (m *model) restartNodes(idc int) {
	var sync [backlog.NumTiers]bool
	for _, n := range m.idcNodes[idc] {
		if !n.down {
			continue
		}
		n.down = false
		n.inc++
		n.plan = backlog.NewPlanner(backlog.PlannerConfig{IDC: m.idcs[idc], Node: n.name, Incarnation: n.inc, Policies: m.cfg.Publisher})
		if n.pool != nil {
			m.restorePool(n.pool, &sync)
		}
	}
	m.syncTiers(idc, sync)
	m.elect(idc)
}

// elect makes the lowest alive node of IDC x its summarizer
// (backlog.SummaryElected), if that changed: the node starts a new
// Summarizer, and asks the IDC's nodes to re-send their state.
func (m *model) elect(x int) {
	var best *mNode
	for _, n := range m.idcNodes[x] {
		if !n.down && (best == nil || n.name < best.name) {
			best = n
		}
	}
	for _, t := range backlog.SummaryTiers {
		if m.sums[t] == nil || best == nil {
			continue
		}
		ms := m.sums[t][x]
		if ms.node == best {
			continue
		}
		ms.node = best
		ms.inc++
		cfg := ms.cfg
		cfg.Node, cfg.Incarnation = best.name, ms.inc
		ms.sum = backlog.NewSummarizer(cfg)
		m.elections++
		for _, n := range m.idcNodes[x] {
			if !n.down {
				n.plan.RequestSync(t)
			}
		}
	}
}

// failPull answers a pull of p to a crashed node with an error.
func (m *model) failPull(p *mPool, n *mNode, step uint64, a worker.Action) {
	e := m.newEvent(evPullReply, m.now+m.half(p.idc, n.idc, a.Where))
	e.pool, e.step, e.node, e.a, e.err = p, step, n, a, true
}

// half is the one-way time of a pull between IDCs a and b: half the
// round trip by distance, plus any slow link's latency on either side.
func (m *model) half(a, b int, w worker.Where) int64 {
	d := m.rtt(w) / 2
	if a != b {
		d += m.linkExtra[a] + m.linkExtra[b]
	}
	return d
}

// crossExtra is what slow links add to a notice from IDC a to IDC b.
func (m *model) crossExtra(a, b int) int64 {
	if a == b {
		return 0
	}
	return m.linkExtra[a] + m.linkExtra[b]
}
