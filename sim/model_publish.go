// The scale model's backlog broadcast: publishers polled in virtual time,
// notices delivered to every subscribed pool's view.

package sim

import (
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

// subGroup is every pool subscribed with one pattern: a notice matches it
// once, and goes to each member alive.
type subGroup struct {
	tier    backlog.Tier
	pattern backlog.Pattern
	members [][]*mPool // by IDC
	alive   []int      // by IDC
}

// delivery is where a notice of one node goes in one IDC.
type delivery struct {
	idc    int
	delay  int64
	groups []*subGroup
}

// subscribe resolves every pool's filter into groups and every node's
// notices into deliveries.
func (m *model) subscribe() error {
	nIDC := len(m.idcs)
	byKey := map[string]*subGroup{}
	index := map[string][]*subGroup{} // tier|idc token|node token
	for _, p := range m.pools {
		f, node := m.filter, ""
		if p.node != nil {
			node = p.node.name
		} else {
			// A worker-only host has no local tier (as sim's runner).
			f = backlog.Filters{Tiers: maps.Clone(f.Tiers)}
			delete(f.Tiers, "local")
		}
		subs, err := f.Resolve(m.idcs[p.idc], node)
		if err != nil {
			return fmt.Errorf("filter %s: %w", m.cfg.Filter, err)
		}
		p.subs = subs
		for _, s := range subs {
			m.subscribed[s.Tier] = true
			m.maxRate[s.Tier] = s.Filter.MaxRate
			if s.Pattern.Summary {
				// Summaries are routed by setupSummaries.
				p.summary[s.Tier], m.summaryTier[s.Tier] = true, true
				continue
			}
			key := s.Pattern.Text
			g := byKey[key]
			if g == nil {
				g = &subGroup{tier: s.Tier, pattern: s.Pattern, members: make([][]*mPool, nIDC), alive: make([]int, nIDC)}
				byKey[key] = g
				m.groups = append(m.groups, g)
				toks := strings.Split(key, ".")
				idcTok, nodeTok := "*", "*"
				if len(toks) > 2 && toks[2] != ">" {
					idcTok = toks[2]
					if len(toks) > 3 && toks[3] != ">" {
						nodeTok = toks[3]
					}
				}
				ik := fmt.Sprintf("%d|%s|%s", s.Tier, idcTok, nodeTok)
				index[ik] = append(index[ik], g)
			}
			g.members[p.idc] = append(g.members[p.idc], p)
			g.alive[p.idc]++
			p.groups = append(p.groups, g)
		}
		p.view = m.newView(p)
	}
	for _, n := range m.nodes {
		idc := m.idcs[n.idc]
		for _, t := range backlog.Tiers {
			for kind, queue := range []string{modelQueue, backlog.HeartbeatQueue} {
				subj := backlog.Subject(t, idc, n.name, queue)
				var matched []*subGroup
				for _, it := range [][2]string{{idc, n.name}, {idc, "*"}, {"*", n.name}, {"*", "*"}} {
					for _, g := range index[fmt.Sprintf("%d|%s|%s", t, it[0], it[1])] {
						if g.pattern.Matches(subj) {
							matched = append(matched, g)
						}
					}
				}
				for dst := range nIDC {
					var gs []*subGroup
					for _, g := range matched {
						if len(g.members[dst]) > 0 {
							gs = append(gs, g)
						}
					}
					if len(gs) == 0 {
						continue
					}
					delay := m.cfg.Net.NoticeCrossIDC
					if dst == n.idc {
						delay = m.cfg.Net.NoticeSameIDC
						if t == backlog.TierHost {
							delay = m.cfg.Net.NoticeLocal
						}
					}
					n.recip[t][kind] = append(n.recip[t][kind], &delivery{idc: dst, delay: int64(delay), groups: gs})
				}
			}
		}
	}
	return nil
}

func (m *model) newView(p *mPool) *viewCache { return newViewCache(p.subs, m.clock, m.ix) }

func (m *model) retireView(c *viewCache) {
	st := c.v.Stats()
	for t := range backlog.NumTiers {
		m.accepted[t] += st.Accepted[t]
		m.dropped[t] += st.Dropped[t]
	}
	m.stale += st.Stale
}

// ---- event queue ----

// poll is one observation of a node by its publisher: the node's real
// backlog.Planner decides what to send (as under Publisher.Tick).
func (m *model) poll(n *mNode) {
	if n.down {
		return // its publisher died with it
	}
	m.materialize(n)
	ready := uint64(n.readyLen())
	var oldest time.Duration
	if ready > 0 {
		oldest = time.Duration(m.now - n.ready[n.head])
	}
	m.levels = append(m.levels[:0], mqnode.QueueLevel{Queue: modelQueue, Ready: ready, OldestReady: oldest, EnqueuedTotal: n.enqueued})
	for _, nt := range n.plan.Tick(m.levels, m.clock()) {
		if m.hooks != nil && m.hooks.onPublish != nil {
			m.hooks.onPublish(n.name, nt)
		}
		m.publish(n, nt)
	}
}

// publish sends a notice to every pool subscribed to it.
func (m *model) publish(n *mNode, nt backlog.Notice) {
	kind, tier := 0, nt.Tier
	if nt.Msg.Queue == backlog.HeartbeatQueue {
		kind = 1
	}
	m.published[tier]++
	if m.sums[tier] != nil {
		if kind == 0 {
			m.observeSummarized(n, tier, nt.Msg)
		}
		return
	}
	dls := n.recip[tier][kind]
	if kind == 1 && !m.cfg.ApplyHeartbeats {
		var c uint64
		for _, dl := range dls {
			for _, g := range dl.groups {
				c += uint64(g.alive[dl.idc])
			}
		}
		m.deliveredHB[tier] += c
		m.phases[m.cur].delivered[tier] += c
		return
	}
	for _, dl := range dls {
		e := m.newEvent(evDeliver, m.now+dl.delay+m.crossExtra(n.idc, dl.idc))
		e.notice, e.tier, e.dl, e.node = nt.Msg, tier, dl, n
	}
}

func (m *model) deliver(e *event) {
	var c uint64
	for _, g := range e.dl.groups {
		if g.alive[e.dl.idc] == 0 {
			continue
		}
		for _, p := range g.members[e.dl.idc] {
			if p.alive {
				p.view.apply(m.now, e.tier, e.notice, int32(e.node.idx))
				c++
			}
		}
	}
	if e.notice.Queue == backlog.HeartbeatQueue {
		m.deliveredHB[e.tier] += c
	} else {
		m.deliveredQ[e.tier] += c
	}
	m.phases[m.cur].delivered[e.tier] += c
}

// ---- pools ----
