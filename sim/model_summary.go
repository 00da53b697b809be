// The scale model's per-IDC summaries: each IDC's summarizers (a
// backlog.Summarizer per summarized tier, the structs the elected node's
// Publisher runs) hear their IDC's notices of the tier, and their summaries
// reach the pools subscribed to their shard (the IDC tier: the IDC's own
// pools; the global tier: every IDC's).

package sim

import (
	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/backlog/backlogpb"
)

// mSummary is one IDC's summarizer of one tier and where its summaries go.
type mSummary struct {
	tier backlog.Tier
	sum  *backlog.Summarizer
	// node is the IDC's summarizer: its lowest alive node (by name); inc
	// its summarizer's incarnation; cfg the summarizer's configuration.
	node *mNode
	inc  uint64
	cfg  backlog.SummaryConfig
	// to[shard][dst IDC] are the pools of dst subscribed to shard.
	to [][][]*mPool
}

// setupSummaries builds every IDC's summarizer once pools are subscribed.
// Shards are sized to the IDC (backlog.SummaryShards); a node's shard is
// its rank in its IDC modulo the shards, and a pool's shard of IDC X its
// rank in its own IDC modulo X's shards, so shards hold equal numbers of
// nodes and of helpers (the real shell hashes names instead).
func (m *model) setupSummaries() {
	nIDC := len(m.idcs)
	for _, t := range backlog.SummaryTiers {
		if !m.summaryTier[t] {
			continue
		}
		m.sums[t] = make([]*mSummary, nIDC)
		for x := range nIDC {
			nodes := m.idcNodes[x]
			shards := backlog.SummaryShards(len(nodes), m.cfg.SummaryK)
			first := nodes[0].idx
			ms := &mSummary{tier: t, node: nodes[0], inc: 1, to: make([][][]*mPool, shards)}
			ms.cfg = backlog.SummaryConfig{
				Tier: t, IDC: m.idcs[x], Node: nodes[0].name, Incarnation: 1, K: m.cfg.SummaryK, Shards: shards,
				ShardOf: func(node string) int {
					if n := m.byName[node]; n != nil {
						return (n.idx - first) % shards
					}
					return 0
				},
			}
			ms.sum = backlog.NewSummarizer(ms.cfg)
			for s := range ms.to {
				ms.to[s] = make([][]*mPool, nIDC)
			}
			for y := range nIDC {
				if t == backlog.TierIDC && y != x {
					continue
				}
				for i, p := range m.idcPools[y] {
					if p.summary[t] {
						s := i % shards
						ms.to[s][y] = append(ms.to[s][y], p)
					}
				}
			}
			m.sums[t][x] = ms
		}
	}
}

// observeSummarized hands a node's notice of a summarized tier to its
// IDC's summarizer (it reaches it within the IDC).
func (m *model) observeSummarized(n *mNode, t backlog.Tier, msg *backlogpb.Notice) {
	e := m.newEvent(evSumObserve, m.now+int64(m.cfg.Net.NoticeSameIDC))
	e.notice, e.node, e.tier = msg, n, t
}

// tickSummaries runs every summarizer (each poll) and sends its summaries.
func (m *model) tickSummaries() {
	for _, t := range backlog.SummaryTiers {
		for x, ms := range m.sums[t] {
			m.tickSummary(x, ms)
		}
	}
}

func (m *model) tickSummary(x int, ms *mSummary) {
	if !ms.node.down { // a crashed summarizer says nothing until re-elected
		for _, s := range ms.sum.Tick(m.clock()) {
			m.summaries++
			for dst, pools := range ms.to[s.Shard] {
				if len(pools) == 0 {
					continue
				}
				delay := m.cfg.Net.NoticeCrossIDC
				if dst == x {
					delay = m.cfg.Net.NoticeSameIDC
				}
				e := m.newEvent(evSummary, m.now+int64(delay)+m.crossExtra(x, dst))
				e.summary, e.pools, e.tier = s, pools, ms.tier
			}
		}
	}
}

// deliverSummary applies a summary to the views of its pools alive.
func (m *model) deliverSummary(e *event) {
	var c uint64
	for _, p := range e.pools {
		if p.alive {
			p.view.applySummary(m.now, e.tier, e.summary)
			c++
		}
	}
	m.deliveredQ[e.tier] += c
	m.phases[m.cur].delivered[e.tier] += c
}

// applySummary is View.ApplySummary, mirrored: the copy is rebuilt from
// the view (a summary names at most K nodes per queue, so this is cheap).
func (c *viewCache) applySummary(now int64, t backlog.Tier, s *backlogpb.Summary) {
	if !c.v.ApplySummary(t, s) {
		return
	}
	for _, n := range s.Nodes {
		// The view heard the node only if it applied its notice.
		if idx, ok := c.ix.byName[n.Node]; ok && c.v.NodeHeard(n.Idc, n.Node).Equal(c.clock()) {
			c.heard[idx] = heardAt{now, max(n.Incarnation, c.heard[idx].inc)}
		}
	}
	c.resync()
}
