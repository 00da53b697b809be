package backlog

import (
	"cmp"
	"hash/fnv"
	"math/bits"
	"slices"
	"strconv"
	"time"

	"github.com/mqmesh/mqmesh/backlog/backlogpb"
)

// The per-IDC summary of the IDC and global tiers. Every worker of another IDC
// hearing every backlogged node's global notice costs each worker O(mesh):
// 232 notices per worker per second at 3,000 hosts. Instead one node per IDC
// (the summarizer: its lowest alive node, by gossip) hears its IDC's
// global-tier notices (bl.g.<idc>.>, which then never cross a gateway) and
// republishes, per shard, the K most backlogged nodes of that shard on
// SummarySubject, on change and at most once per MinInterval. A worker
// subscribes to one shard of every IDC, so it hears at most one summary
// of at most K nodes per IDC per MinInterval, whatever the mesh size; and
// the shards together name every backlogged node (Shards ≥ nodes ÷ K), so
// helpers spread over all of them instead of herding on one "best" list.
// The IDC tier is summarized alike for the IDC's own workers (bl.i.<idc>.>
// in, bls.i.<idc>.<shard> out): after a restart, a pool would otherwise
// hear every backlogged node of its IDC.

// SummaryRoot is the first token of summary subjects.
const SummaryRoot = "bls"

// DefaultSummaryK is how many nodes a summary names at most, per queue.
const DefaultSummaryK = 8

// SummaryTiers are the tiers heard as summaries (the host tier is the
// host's own node: nothing to summarize).
var SummaryTiers = []Tier{TierIDC, TierGlobal}

// SummarySubject is where the summarizer of idc publishes shard's summary
// of tier t: bls.<tier>.<idc>.<shard>.
func SummarySubject(t Tier, idc string, shard int) string {
	return SummaryRoot + "." + t.Token() + "." + idc + "." + strconv.Itoa(shard)
}

// SummaryShards is the number of shards an IDC of nodes nodes is split
// into so that a shard holds about k nodes at most: a power of two (a
// small change of membership changes nothing), at least 1.
func SummaryShards(nodes, k int) int {
	if k <= 0 {
		k = DefaultSummaryK
	}
	need := (nodes + k - 1) / k
	if need <= 1 {
		return 1
	}
	return 1 << bits.Len(uint(need-1))
}

// HashShard is the default shard of a name among shards: FNV-1a.
func HashShard(name string, shards int) int {
	if shards <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return int(h.Sum32() % uint32(shards))
}

// SummaryConfig configures a Summarizer. Zero fields take their defaults.
type SummaryConfig struct {
	// Tier summarized (TierIDC or TierGlobal; default global): its
	// defaults below.
	Tier      Tier
	IDC, Node string
	// Incarnation orders the summarizer's restarts.
	Incarnation uint64
	// K is the most nodes a summary names per queue. Default 8.
	K int
	// Shards splits the IDC's nodes (ShardOf). Default 1.
	Shards int
	// ShardOf places a node in a shard (nil: HashShard). The scale model
	// places by rank, which balances shards exactly.
	ShardOf func(node string) int
	// MinInterval is the least time between two summaries of one shard.
	// Default 100ms on the IDC tier, 250ms on the global tier.
	MinInterval time.Duration
	// Heartbeat refreshes a shard with backlog whose summary did not
	// change. Default: the tier's heartbeat (5s, 15s), so workers' default
	// StaleAfter (3×) keeps the entries.
	Heartbeat time.Duration
	// StaleAfter forgets a node whose notices stopped (it died without
	// gossip telling yet). Default 3 × the tier's heartbeat.
	StaleAfter time.Duration
}

func (c SummaryConfig) withDefaults() SummaryConfig {
	if c.K <= 0 {
		c.K = DefaultSummaryK
	}
	if c.Shards <= 0 {
		c.Shards = 1
	}
	if c.ShardOf == nil {
		shards := c.Shards
		c.ShardOf = func(node string) int { return HashShard(node, shards) }
	}
	if c.Tier != TierIDC {
		c.Tier = TierGlobal
	}
	if c.MinInterval <= 0 {
		c.MinInterval = 250 * time.Millisecond
		if c.Tier == TierIDC {
			c.MinInterval = 100 * time.Millisecond
		}
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = DefaultPolicies[c.Tier].Heartbeat
	}
	if c.StaleAfter <= 0 {
		c.StaleAfter = 3 * DefaultPolicies[c.Tier].Heartbeat
	}
	return c
}

// Summarizer is the deterministic core of an IDC's summary (no goroutine,
// clock or I/O): Observe the global-tier notices of the IDC's nodes,
// Forget a node gossip says is gone, and Tick returns the summaries to
// publish. The node shell (Publisher, when its node is the IDC's
// summarizer) and the scale model drive it alike. Not safe for
// concurrent use.
type Summarizer struct {
	cfg    SummaryConfig
	seq    uint64
	swept  time.Time
	nodes  map[string]*sumNode
	shards []sumShard
	out    []*backlogpb.Summary
}

type sumNode struct {
	shard    int
	inc, seq uint64
	heard    time.Time
	queues   map[string]*backlogpb.Notice
}

type sumShard struct {
	nodes         map[string]*sumNode
	dirty, synced bool
	sent          time.Time
	// last is what the shard's last summary said (node|queue|level), so
	// a notice that changes no ranking sends nothing.
	last []string
}

// NewSummarizer returns a summarizer with no knowledge.
func NewSummarizer(cfg SummaryConfig) *Summarizer {
	cfg = cfg.withDefaults()
	s := &Summarizer{cfg: cfg, nodes: map[string]*sumNode{}, shards: make([]sumShard, cfg.Shards)}
	for i := range s.shards {
		s.shards[i].nodes = map[string]*sumNode{}
	}
	return s
}

// Tier is the tier summarized.
func (s *Summarizer) Tier() Tier { return s.cfg.Tier }

// Observe records a notice of the tier of a node of the summarizer's IDC
// (others, heartbeats and out-of-order notices are ignored).
func (s *Summarizer) Observe(n *backlogpb.Notice, now time.Time) {
	if n.Idc != s.cfg.IDC || n.Queue == HeartbeatQueue {
		return
	}
	sn := s.nodes[n.Node]
	switch {
	case sn == nil || n.Incarnation > sn.inc:
		if sn != nil {
			s.drop(n.Node, sn)
		}
		shard := s.cfg.ShardOf(n.Node)
		if shard < 0 || shard >= len(s.shards) {
			shard = 0
		}
		sn = &sumNode{shard: shard, inc: n.Incarnation, queues: map[string]*backlogpb.Notice{}}
		s.nodes[n.Node] = sn
		s.shards[shard].nodes[n.Node] = sn
	case n.Incarnation < sn.inc || n.Seq < sn.seq:
		return
	}
	sn.seq, sn.heard = n.Seq, now
	_, had := sn.queues[n.Queue]
	if n.Level == 0 || n.Ready == 0 {
		if had {
			delete(sn.queues, n.Queue)
			s.markDirty(sn.shard)
		}
		return
	}
	sn.queues[n.Queue] = n
	s.markDirty(sn.shard)
}

// Forget drops a node (gossip says it left or failed).
func (s *Summarizer) Forget(node string) {
	if sn := s.nodes[node]; sn != nil {
		s.drop(node, sn)
	}
}

func (s *Summarizer) drop(node string, sn *sumNode) {
	delete(s.nodes, node)
	delete(s.shards[sn.shard].nodes, node)
	s.markDirty(sn.shard)
}

// RequestSync re-sends every shard with backlog at the next Tick (a
// worker subscribed and asked for the current state).
func (s *Summarizer) RequestSync() {
	for i := range s.shards {
		s.shards[i].synced = true
	}
}

func (s *Summarizer) markDirty(shard int) { s.shards[shard].dirty = true }

// Tick returns the summaries to publish at now: a shard whose top K
// changed (a node entered, left or changed level), at most once per
// MinInterval; an unchanged shard with backlog every Heartbeat; every
// shard with backlog after RequestSync. The slice is reused by the next
// Tick.
func (s *Summarizer) Tick(now time.Time) []*backlogpb.Summary {
	s.out = s.out[:0]
	if now.Sub(s.swept) >= time.Second {
		s.swept = now
		for name, sn := range s.nodes {
			if now.Sub(sn.heard) > s.cfg.StaleAfter {
				s.drop(name, sn)
			}
		}
	}
	for i := range s.shards {
		sh := &s.shards[i]
		if !sh.sent.IsZero() && now.Sub(sh.sent) < s.cfg.MinInterval {
			continue
		}
		hb := len(sh.last) > 0 && now.Sub(sh.sent) >= s.cfg.Heartbeat
		if !sh.dirty && !hb && !(sh.synced && len(sh.last) > 0) {
			continue
		}
		top, backlogged := s.top(i)
		sig := make([]string, len(top))
		for j, n := range top {
			sig[j] = n.Node + "|" + n.Queue + "|" + strconv.FormatUint(uint64(n.Level), 10)
		}
		changed := !slices.Equal(sig, sh.last)
		sh.dirty = false
		if !changed && !hb && !(sh.synced && len(sig) > 0) {
			continue
		}
		sh.synced = false
		s.seq++
		s.out = append(s.out, &backlogpb.Summary{
			Idc: s.cfg.IDC, Shard: uint32(i), Shards: uint32(len(s.shards)), Summarizer: s.cfg.Node,
			Incarnation: s.cfg.Incarnation, Seq: s.seq, SentUnixMs: now.UnixMilli(),
			Backlogged: uint32(backlogged), Nodes: top, Heartbeat: !changed,
		})
		sh.sent, sh.last = now, sig
	}
	return s.out
}

// top is shard i's K most backlogged nodes per queue (level, then oldest
// task, then name), and how many nodes of the shard have backlog.
func (s *Summarizer) top(i int) ([]*backlogpb.Notice, int) {
	var all []*backlogpb.Notice
	backlogged := 0
	for _, sn := range s.shards[i].nodes {
		if len(sn.queues) == 0 {
			continue
		}
		backlogged++
		for _, n := range sn.queues {
			all = append(all, n)
		}
	}
	slices.SortFunc(all, func(a, b *backlogpb.Notice) int {
		return cmp.Or(cmp.Compare(a.Queue, b.Queue), cmp.Compare(b.Level, a.Level),
			cmp.Compare(b.OldestReadyAgeMs, a.OldestReadyAgeMs), cmp.Compare(a.Node, b.Node))
	})
	out, per := all[:0], 0
	for j, n := range all {
		if j > 0 && all[j-1].Queue != n.Queue {
			per = 0
		}
		if per < s.cfg.K {
			out = append(out, n)
		}
		per++
	}
	return out, backlogged
}

// SummaryElected says whether self is its IDC's summarizer: the lowest
// name among the IDC's alive nodes (gossip), self included.
func SummaryElected(self string, alive []string) bool {
	for _, n := range alive {
		if n < self {
			return false
		}
	}
	return true
}
