// The scale model's state and its construction: nodes (ready tasks and
// publisher state), pools, the model itself, and the arrival process.

package sim

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/worker"
)

// modelQueue is the one queue of the model.
const modelQueue = "q"

// modelEpoch is virtual time zero on the views' clocks.
var modelEpoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

const never = math.MaxInt64

// mNode is one host's node: a FIFO of the enqueue times of its ready
// tasks, lazily fed by its arrival process, and its publisher's state.
type mNode struct {
	idx, idc int
	name     string
	pool     *mPool
	ready    []int64 // ready[head:] ascending
	head     int
	nextArr  int64
	rng      *rand.Rand

	// plan is the node's publisher core; enqueued counts its arrivals.
	plan     *backlog.Planner
	enqueued uint64
	// recip[tier][0: queue, 1: heartbeat] are the deliveries of a notice.
	recip [backlog.NumTiers][2][]*delivery

	waiter       *mPool // a long-polling pull
	waitStep     uint64
	waitA        worker.Action
	waitDeadline int64
	waitSeq      uint64

	firstHelp int64
	// down: the node crashed (kill-nodes); inc is its incarnation.
	down bool
	inc  uint64
}

func (n *mNode) readyLen() int { return len(n.ready) - n.head }

// mPool is one host's worker pool: its fetch loop, its slots, its view.
type mPool struct {
	idx, idc int
	name     string
	node     *mNode
	alive    bool
	step     uint64
	killedAt int64
	view     *viewCache
	pcg      *rand.PCG
	rng      *rand.Rand
	running  runHeap
	// sched is the pool's fetch-loop core (worker.Scheduler); gen changes
	// when the pool dies, so replies to its old pulls are dropped;
	// reserved counts the slots held by pulls in flight; localBusy: a pull
	// of the own node is out (the loop waits for it).
	sched     *worker.Scheduler
	gen       uint64
	reserved  int
	localBusy bool
	subs      []backlog.Subscription
	groups    []*subGroup
	helped    int64
	// summary[t]: the pool hears tier t as summaries (one shard of each
	// IDC), not as every node's notices.
	summary [backlog.NumTiers]bool
}

type model struct {
	cfg      ModelConfig
	hooks    *modelHooks
	progress func(ModelProgress)

	now     int64
	seq     uint64
	q       eventQueue
	free    []*event
	bufs    [][]int64
	clock   func() time.Time
	loadEnd int64
	end     int64
	stopped bool
	levels  []mqnode.QueueLevel

	idcs      []string
	nodes     []*mNode
	pools     []*mPool
	byName    map[string]*mNode
	ix        *nodeIndex
	idcNodes  [][]*mNode
	idcPools  [][]*mPool
	slots     [][]*mNode // poll slots
	groups    []*subGroup
	sums      [backlog.NumTiers][]*mSummary // per tier and IDC, when pools hear summaries
	filter    backlog.Filters
	dist      latencyDist
	slowBase  []float64
	errBase   []float64 // handler error rate per IDC (scenario)
	errRate   []float64 // ... now (a degrade event sets it)
	slow      []float64
	limit     int
	meanGap   float64
	tickEvery int64

	// counters
	events, decisions, pulls             uint64
	viewChecks, viewMismatches           uint64
	enqueued, completed, inNet, requeued int64
	retries                              int64
	readyTotal                           int64
	readyIDC                             []int64
	lastDone                             int64
	peak                                 uint64
	published                            [backlog.NumTiers]uint64
	summaries                            uint64
	crashed, elections, refused          int64
	linkExtra                            []int64 // slow-link latency per IDC, each way
	deliveredHB                          [backlog.NumTiers]uint64
	deliveredQ                           [backlog.NumTiers]uint64
	accepted, dropped                    [backlog.NumTiers]uint64
	stale                                uint64
	subscribed                           [backlog.NumTiers]bool
	summaryTier                          [backlog.NumTiers]bool
	maxRate                              [backlog.NumTiers]float64

	phases     []*modelPhase
	cur        int
	aliveCount int
	accrued    int64

	// the fault measured: first kill-pools or degrade of the timeline
	faultIdx             int
	faultIDC             int
	faultStart, faultEnd int64
	firstHelp            int64
	faultPeak            uint64
	drained              bool
	drainedAfter         int64
}

func newModel(c ModelConfig) (*model, error) {
	f, err := filterFor(c.Filter)
	if c.Filters != nil {
		f, err = *c.Filters, nil
	}
	if err != nil {
		return nil, err
	}
	m := &model{
		cfg: c, hooks: c.hooks, filter: f,
		idcs: c.IDCs, byName: map[string]*mNode{},
		loadEnd: int64(c.Duration), end: int64(c.Duration + c.Drain),
		dist:      newLatency(c.Handler.Median.D(), c.Handler.P99.D()),
		limit:     max(c.Policy.LocalBatch, c.Policy.RemoteBatch, c.Policy.CrossIDCBatch),
		firstHelp: never, faultIdx: -1, faultIDC: -1,
	}
	m.clock = func() time.Time { return modelEpoch.Add(time.Duration(m.now)) }
	if c.Rate > 0 {
		m.meanGap = 1e9 / c.Rate
	}
	nIDC := len(c.IDCs)
	m.readyIDC = make([]int64, nIDC)
	m.linkExtra = make([]int64, nIDC)
	m.idcNodes = make([][]*mNode, nIDC)
	m.idcPools = make([][]*mPool, nIDC)
	m.slowBase = make([]float64, nIDC)
	for i, name := range c.IDCs {
		m.slowBase[i] = 1
		if b, ok := c.Handler.PerIDC[name]; ok && b.Slowdown > 0 {
			m.slowBase[i] = b.Slowdown
		}
	}
	m.slow = slices.Clone(m.slowBase)
	m.errBase = make([]float64, nIDC)
	for i, name := range c.IDCs {
		m.errBase[i] = c.Handler.ErrorRate
		if b, ok := c.Handler.PerIDC[name]; ok && b.ErrorRate > 0 {
			m.errBase[i] = b.ErrorRate
		}
	}
	m.errRate = slices.Clone(m.errBase)
	// Hosts: IDC i gets Hosts/nIDC, the first Hosts%nIDC one more; a
	// WorkerOnly share of them runs a pool without a node.
	for i := range nIDC {
		count := c.Hosts / nIDC
		if i < c.Hosts%nIDC {
			count++
		}
		wo := min(int(math.Round(float64(count)*c.WorkerOnly)), count-1)
		for h := 1; h <= count; h++ {
			var n *mNode
			name := WorkerHostName(c.IDCs[i], h-(count-wo))
			if h <= count-wo {
				idx := len(m.nodes)
				n = &mNode{idx: idx, idc: i, name: HostName(c.IDCs[i], h), firstHelp: never, inc: 1,
					rng: rand.New(rand.NewPCG(c.Seed, 0x9e3779b97f4a7c15^uint64(idx)))}
				n.plan = backlog.NewPlanner(backlog.PlannerConfig{IDC: c.IDCs[i], Node: n.name, Incarnation: 1, Policies: c.Publisher})
				n.nextArr = m.firstArrival(n)
				m.nodes = append(m.nodes, n)
				m.byName[n.name] = n
				m.idcNodes[i] = append(m.idcNodes[i], n)
				name = n.name
			}
			idx := len(m.pools)
			pcg := rand.NewPCG(c.Seed^0x5851f42d4c957f2d, uint64(idx))
			p := &mPool{idx: idx, idc: i, name: name, node: n, alive: true, pcg: pcg, rng: rand.New(pcg)}
			p.sched = m.newScheduler(p)
			if n != nil {
				n.pool = p
			}
			m.pools = append(m.pools, p)
			m.idcPools[i] = append(m.idcPools[i], p)
		}
	}
	m.ix = &nodeIndex{rank: make([]int32, len(m.nodes)), byName: map[string]int32{}}
	order := slices.Clone(m.nodes)
	slices.SortFunc(order, func(a, b *mNode) int {
		if c := strings.Compare(m.idcs[a.idc], m.idcs[b.idc]); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	for r, n := range order {
		m.ix.rank[n.idx] = int32(r)
		m.ix.byName[n.name] = int32(n.idx)
	}
	if err := m.subscribe(); err != nil {
		return nil, err
	}
	m.setupSummaries()
	m.aliveCount = len(m.pools)
	// Publishers poll every Poll, spread over 20 slots.
	const nslots = 20
	m.tickEvery = max(int64(c.Poll)/nslots, 1)
	m.slots = make([][]*mNode, nslots)
	for i, n := range m.nodes {
		m.slots[i%nslots] = append(m.slots[i%nslots], n)
	}
	// Phases and the fault measured.
	first := "normal"
	if len(c.Timeline) > 0 && c.Timeline[0].At == 0 {
		first = phaseName(c.Timeline[0])
	}
	m.phases = []*modelPhase{{name: first}}
	m.faultStart, m.faultEnd = never, m.loadEnd
	for i, ev := range c.Timeline {
		if m.faultIdx < 0 && (ev.Action == "kill-pools" || ev.Action == "degrade") {
			m.faultIdx, m.faultIDC, m.faultStart = i, slices.Index(c.IDCs, ev.IDC), int64(ev.At)
			continue
		}
		if m.faultIdx >= 0 && m.faultEnd == m.loadEnd && int64(ev.At) >= m.faultStart &&
			(ev.Action == "restore-all" || (ev.Action == "restore-pools" || ev.Action == "restore") && slices.Index(c.IDCs, ev.IDC) == m.faultIDC) {
			m.faultEnd = int64(ev.At)
		}
	}
	return m, nil
}

func (m *model) firstArrival(n *mNode) int64 {
	switch {
	case m.meanGap == 0:
		return never
	case m.cfg.FixedRate:
		return int64(n.rng.Float64() * m.meanGap)
	}
	return int64(n.rng.ExpFloat64() * m.meanGap)
}

func (m *model) gap(n *mNode) int64 {
	if m.cfg.FixedRate {
		return max(int64(m.meanGap), 1)
	}
	return max(int64(n.rng.ExpFloat64()*m.meanGap), 1)
}

// ---- nodes ----

// materialize enqueues the arrivals of n up to now.
func (m *model) materialize(n *mNode) {
	for n.down && n.nextArr <= m.now && n.nextArr < m.loadEnd {
		m.refused++ // the node is down: its producers' enqueues fail
		n.nextArr += m.gap(n)
	}
	for n.nextArr <= m.now && n.nextArr < m.loadEnd {
		n.ready = append(n.ready, n.nextArr)
		n.enqueued++
		m.enqueued++
		m.readyTotal++
		m.readyIDC[n.idc]++
		n.nextArr += m.gap(n)
	}
}

func (m *model) take(n *mNode, k int) []int64 {
	b := append(m.buf(k), n.ready[n.head:n.head+k]...)
	n.head += k
	switch {
	case n.head == len(n.ready):
		n.ready, n.head = n.ready[:0], 0
	case n.head >= 1024 && 2*n.head >= len(n.ready):
		n.ready = n.ready[:copy(n.ready, n.ready[n.head:])]
		n.head = 0
	}
	m.readyTotal -= int64(k)
	m.readyIDC[n.idc] -= int64(k)
	return b
}
