// The scale model's backlog broadcast: publishers polled in virtual time,
// notices delivered to every subscribed pool's view.

package sim

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/backlog/backlogpb"
)

// modelSub is a resolved tier subscription (as backlog's Filters.resolve).
type modelSub struct {
	tier    backlog.Tier
	pattern backlog.Pattern
	filter  backlog.TierFilter
}

// resolveModelFilters mirrors backlog.Filters.resolve (unexported there):
// substitute the pool's IDC and node, parse each tier's pattern, default
// StaleAfter to 3 × the tier's default heartbeat.
func resolveModelFilters(f backlog.Filters, idc, node string) ([]modelSub, error) {
	names := make([]string, 0, len(f.Tiers))
	for name := range f.Tiers {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []modelSub
	for _, name := range names {
		spec := f.Tiers[name]
		t, err := backlog.ParseTier(name)
		if err != nil {
			return nil, err
		}
		text := strings.ReplaceAll(strings.ReplaceAll(spec.Subject, "{idc}", idc), "{node}", node)
		p, err := backlog.ParsePattern(text)
		if err != nil {
			return nil, err
		}
		if p.Tier != t {
			return nil, fmt.Errorf("tiers.%s: subject %q is of tier %s", name, text, p.Tier)
		}
		stale := spec.StaleAfter
		if stale == 0 {
			stale = 3 * backlog.DefaultPolicies[t].Heartbeat
		}
		out = append(out, modelSub{tier: t, pattern: p, filter: backlog.TierFilter{MinBacklog: spec.MinBacklog, MaxRate: spec.MaxRate, StaleAfter: stale}})
	}
	return out, nil
}

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
		subs, err := resolveModelFilters(m.filter, m.idcs[p.idc], p.name)
		if err != nil {
			return fmt.Errorf("filter %s: %w", m.cfg.Filter, err)
		}
		p.subs = subs
		for _, s := range subs {
			m.subscribed[s.tier] = true
			m.maxRate[s.tier] = s.filter.MaxRate
			key := s.pattern.Text
			g := byKey[key]
			if g == nil {
				g = &subGroup{tier: s.tier, pattern: s.pattern, members: make([][]*mPool, nIDC), alive: make([]int, nIDC)}
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
				ik := fmt.Sprintf("%d|%s|%s", s.tier, idcTok, nodeTok)
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

// poll is one observation of a node by its publisher (Publisher.Tick).
func (m *model) poll(n *mNode) {
	m.materialize(n)
	ready := uint64(n.readyLen())
	var oldest time.Duration
	if ready > 0 {
		oldest = time.Duration(m.now - n.ready[n.head])
	}
	now := m.clock()
	for _, tier := range backlog.Tiers {
		pol := m.cfg.Publisher[tier]
		if pol.Off {
			continue
		}
		sync := false
		if n.syncReq[tier] && m.now-n.lastSync[tier] >= int64(pol.MinInterval) {
			n.syncReq[tier], n.lastSync[tier], sync = false, m.now, true
		}
		send, level, hb := pol.Decide(&n.st[tier], ready, oldest, now)
		if m.hooks != nil && m.hooks.onPublish != nil {
			m.hooks.onPublish(n.name, tier, ready, oldest, now, send, level, hb)
		}
		if send {
			n.sent[tier] = level
		} else if sync && n.sent[tier] > 0 {
			send, level = true, n.sent[tier]
		}
		if send {
			m.publish(n, tier, 0, ready, oldest, level, hb)
		}
	}
	for _, tier := range backlog.Tiers {
		pol := m.cfg.Publisher[tier]
		if !pol.Off && pol.NodeHeartbeat && m.now-n.hb[tier] >= int64(pol.Heartbeat) {
			n.hb[tier] = m.now
			m.publish(n, tier, 1, 0, 0, 0, true)
		}
	}
}

// publish sends a notice (kind 0: the queue, 1: the node heartbeat) to
// every pool subscribed to it.
func (m *model) publish(n *mNode, tier backlog.Tier, kind int, ready uint64, oldest time.Duration, level uint32, hb bool) {
	n.seq++
	m.published[tier]++
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
	queue := modelQueue
	if kind == 1 {
		queue = backlog.HeartbeatQueue
	}
	notice := &backlogpb.Notice{
		Idc: m.idcs[n.idc], Node: n.name, Queue: queue, Ready: ready, OldestReadyAgeMs: oldest.Milliseconds(),
		Seq: n.seq, Incarnation: 1, Level: level, Heartbeat: hb, SentUnixMs: m.clock().UnixMilli(),
	}
	for _, dl := range dls {
		e := m.newEvent(evDeliver, m.now+dl.delay)
		e.notice, e.tier, e.dl, e.node = notice, tier, dl, n
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
