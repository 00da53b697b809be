package sim

import (
	"container/heap"
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/backlog/backlogpb"
	"github.com/mqmesh/mqmesh/worker"
)

// modelQueue is the one queue of the model.
const modelQueue = "q"

// modelEpoch is virtual time zero on the views' clocks.
var modelEpoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

const never = math.MaxInt64

// Event kinds.
const (
	evTick       = iota // publishers of one poll slot observe their node
	evDeliver           // a notice reaches the pools of one IDC
	evPoolWake          // a pool's fetch loop goes on
	evPullArrive        // a pull request reaches its node
	evNodeWake          // a long-polling pull may be answered
	evPullReply         // a pull reply reaches its pool
	evRequeue           // a dead pool's leases are released
	evTimeline          // a timeline event (-1: end of load)
	evSample            // backlog sample, progress, end check
)

type event struct {
	t    int64
	seq  uint64
	kind uint8
	i    int // tick slot, timeline index
	step uint64
	pool *mPool
	node *mNode
	d    worker.Decision
	sent int64
	// tasks are enqueue times (pull reply, requeue).
	tasks      []int64
	readyAfter uint64
	notice     *backlogpb.Notice
	tier       backlog.Tier
	dl         *delivery
}

type eventQueue []*event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	return q[i].t < q[j].t || q[i].t == q[j].t && q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}

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

	st       [backlog.NumTiers]backlog.QueueState
	sent     [backlog.NumTiers]uint32 // level last sent (mirrors QueueState)
	hb       [backlog.NumTiers]int64
	syncReq  [backlog.NumTiers]bool
	lastSync [backlog.NumTiers]int64
	seq      uint64
	// recip[tier][0: queue, 1: heartbeat] are the deliveries of a notice.
	recip [backlog.NumTiers][2][]*delivery

	waiter       *mPool // a long-polling pull
	waitStep     uint64
	waitD        worker.Decision
	waitDeadline int64
	waitSeq      uint64

	firstHelp int64
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
	drained  bool
	helping  bool
	subs     []modelSub
	groups   []*subGroup
	helped   int64
}

type modelPhase struct {
	name       string
	start, end int64
	done       int64
	where      [3]int64
	hist       latHist
	peak       uint64
	delivered  [backlog.NumTiers]uint64
	poolNs     float64
}

// latHist is a latency histogram with 1% wide buckets (microseconds).
type latHist struct {
	b []uint64
	n uint64
}

var logBucket = math.Log(1.01)

func (h *latHist) add(ns int64) {
	us := float64(max(ns, 0)) / 1e3
	i := 0
	if us >= 1 {
		i = 1 + int(math.Log(us)/logBucket)
	}
	if i >= len(h.b) {
		h.b = append(h.b, make([]uint64, i+1-len(h.b)+64)...)
	}
	h.b[i]++
	h.n++
}

func (h *latHist) merge(o *latHist) {
	if len(o.b) > len(h.b) {
		h.b = append(h.b, make([]uint64, len(o.b)-len(h.b))...)
	}
	for i, c := range o.b {
		h.b[i] += c
	}
	h.n += o.n
}

// quantileMs is the upper bound of the bucket holding quantile q.
func (h *latHist) quantileMs(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	var c uint64
	for i, v := range h.b {
		c += v
		if c >= max(rank, 1) {
			if i == 0 {
				return 0.001
			}
			return math.Round(math.Exp(float64(i)*logBucket)) / 1e3
		}
	}
	return 0
}

type model struct {
	cfg      ModelConfig
	hooks    *modelHooks
	decide   func(worker.Situation, worker.PolicyConfig, *rand.Rand) worker.Decision
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

	idcs      []string
	nodes     []*mNode
	pools     []*mPool
	byName    map[string]*mNode
	ix        *nodeIndex
	idcNodes  [][]*mNode
	idcPools  [][]*mPool
	slots     [][]*mNode // poll slots
	groups    []*subGroup
	filter    backlog.Filters
	dist      latencyDist
	slowBase  []float64
	slow      []float64
	limit     int
	meanGap   float64
	tickEvery int64

	// counters
	events, decisions, pulls             uint64
	viewChecks, viewMismatches           uint64
	enqueued, completed, inNet, requeued int64
	readyTotal                           int64
	readyIDC                             []int64
	lastDone                             int64
	peak                                 uint64
	published                            [backlog.NumTiers]uint64
	deliveredHB                          [backlog.NumTiers]uint64
	deliveredQ                           [backlog.NumTiers]uint64
	accepted, dropped                    [backlog.NumTiers]uint64
	stale                                uint64
	subscribed                           [backlog.NumTiers]bool
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
		cfg: c, hooks: c.hooks, decide: worker.Decide, filter: f,
		idcs: c.IDCs, byName: map[string]*mNode{},
		loadEnd: int64(c.Duration), end: int64(c.Duration + c.Drain),
		dist:      newLatency(c.Handler.Median.D(), c.Handler.P99.D()),
		limit:     max(c.Policy.LocalBatch, c.Policy.RemoteBatch, c.Policy.CrossIDCBatch),
		firstHelp: never, faultIdx: -1, faultIDC: -1,
	}
	if m.hooks != nil && m.hooks.decide != nil {
		m.decide = m.hooks.decide
	}
	m.clock = func() time.Time { return modelEpoch.Add(time.Duration(m.now)) }
	if c.Rate > 0 {
		m.meanGap = 1e9 / c.Rate
	}
	nIDC := len(c.IDCs)
	m.readyIDC = make([]int64, nIDC)
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
	// Hosts: IDC i gets Hosts/nIDC, the first Hosts%nIDC one more.
	for i := range nIDC {
		count := c.Hosts / nIDC
		if i < c.Hosts%nIDC {
			count++
		}
		for h := 1; h <= count; h++ {
			idx := len(m.nodes)
			n := &mNode{idx: idx, idc: i, name: HostName(c.IDCs[i], h), firstHelp: never,
				rng: rand.New(rand.NewPCG(c.Seed, 0x9e3779b97f4a7c15^uint64(idx)))}
			for t := range n.hb {
				n.hb[t] = math.MinInt64 / 2
				n.lastSync[t] = math.MinInt64 / 2
			}
			n.nextArr = m.firstArrival(n)
			pcg := rand.NewPCG(c.Seed^0x5851f42d4c957f2d, uint64(idx))
			p := &mPool{idx: idx, idc: i, name: n.name, node: n, alive: true, pcg: pcg, rng: rand.New(pcg)}
			n.pool = p
			m.nodes = append(m.nodes, n)
			m.pools = append(m.pools, p)
			m.byName[n.name] = n
			m.idcNodes[i] = append(m.idcNodes[i], n)
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

func (m *model) newEvent(kind uint8, at int64) *event {
	var e *event
	if n := len(m.free); n > 0 {
		e = m.free[n-1]
		m.free = m.free[:n-1]
	} else {
		e = &event{}
	}
	m.seq++
	e.t, e.seq, e.kind = at, m.seq, kind
	heap.Push(&m.q, e)
	return e
}

func (m *model) recycle(e *event) {
	*e = event{}
	m.free = append(m.free, e)
}

func (m *model) buf(n int) []int64 {
	if k := len(m.bufs); k > 0 {
		b := m.bufs[k-1]
		m.bufs = m.bufs[:k-1]
		if cap(b) >= n {
			return b[:0]
		}
	}
	return make([]int64, 0, max(n, 8))
}

func (m *model) run(ctx context.Context) error {
	m.newEvent(evTick, 0).i = 0
	m.newEvent(evSample, 0)
	for i := range m.cfg.Timeline {
		m.newEvent(evTimeline, int64(m.cfg.Timeline[i].At)).i = i
	}
	m.newEvent(evTimeline, m.loadEnd).i = -1
	for _, p := range m.pools {
		m.wakePool(p, 0)
	}
	for !m.stopped && len(m.q) > 0 {
		e := heap.Pop(&m.q).(*event)
		m.now = e.t
		m.events++
		if m.events&0xfff == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		m.handle(e)
		m.recycle(e)
	}
	m.finish()
	return nil
}

func (m *model) handle(e *event) {
	switch e.kind {
	case evTick:
		for _, n := range m.slots[e.i] {
			m.poll(n)
		}
		if m.now < m.end {
			m.newEvent(evTick, m.now+m.tickEvery).i = (e.i + 1) % len(m.slots)
		}
	case evDeliver:
		m.deliver(e)
	case evPoolWake:
		if p := e.pool; p.alive && p.step == e.step {
			m.poolStep(p)
		}
	case evPullArrive:
		m.pullArrive(e)
	case evNodeWake:
		m.nodeWake(e)
	case evPullReply:
		m.pullReply(e)
	case evRequeue:
		m.requeue(e)
	case evTimeline:
		m.timeline(e.i)
	case evSample:
		m.sample()
	}
}

// ---- nodes ----

// materialize enqueues the arrivals of n up to now.
func (m *model) materialize(n *mNode) {
	for n.nextArr <= m.now && n.nextArr < m.loadEnd {
		n.ready = append(n.ready, n.nextArr)
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

func (m *model) phaseAt(t int64) *modelPhase {
	i := sort.Search(len(m.phases), func(i int) bool { return m.phases[i].start > t }) - 1
	return m.phases[max(i, 0)]
}

func (m *model) accrue() {
	m.phases[m.cur].poolNs += float64(m.aliveCount) * float64(m.now-m.accrued)
	m.accrued = m.now
}

func (m *model) enterPhase(name string) {
	m.accrue()
	m.phases[m.cur].end = m.now
	m.phases = append(m.phases, &modelPhase{name: name, start: m.now})
	m.cur = len(m.phases) - 1
}

func (m *model) timeline(i int) {
	if i < 0 {
		m.enterPhase("drain")
		m.apply(Event{Action: "restore-all"})
		return
	}
	tl := m.cfg.Timeline
	ev := tl[i]
	starts := ev.Phase != "" || i == 0 || tl[i-1].At != ev.At
	if starts && !(i == 0 && ev.At == 0) {
		m.enterPhase(phaseName(ev))
	}
	m.apply(ev)
}

func (m *model) apply(ev Event) {
	idc := slices.Index(m.idcs, ev.IDC)
	switch ev.Action {
	case "degrade":
		m.slow[idc] = m.slowBase[idc] * ev.Slowdown
	case "restore":
		m.slow[idc] = m.slowBase[idc]
	case "kill-pools":
		m.accrue()
		for _, p := range m.idcPools[idc] {
			m.kill(p)
		}
	case "restore-pools":
		m.accrue()
		m.restorePools(idc)
	case "restore-all":
		m.accrue()
		copy(m.slow, m.slowBase)
		for i := range m.idcs {
			m.restorePools(i)
		}
	}
}

func (m *model) sample() {
	for _, n := range m.nodes {
		m.materialize(n)
	}
	total := uint64(m.readyTotal)
	m.peak = max(m.peak, total)
	ph := m.phases[m.cur]
	ph.peak = max(ph.peak, total)
	if m.faultIDC >= 0 && m.now >= m.faultStart && m.now <= m.faultEnd {
		m.faultPeak = max(m.faultPeak, uint64(m.readyIDC[m.faultIDC]))
	}
	if m.progress != nil {
		var done int64
		for _, p := range m.phases {
			done += p.done
		}
		m.progress(ModelProgress{Hosts: len(m.nodes), VirtualS: time.Duration(m.now).Seconds(), Phase: ph.name, Backlog: total, Done: done, Events: m.events})
	}
	switch {
	case m.now >= m.loadEnd && m.readyTotal == 0 && m.inNet == 0 && m.requeued == 0:
		m.drained = true
		m.stopped = true
	case m.now >= m.end:
		m.stopped = true
	default:
		m.newEvent(evSample, m.now+int64(m.cfg.Sample))
	}
}

func (m *model) finish() {
	m.accrue()
	for _, p := range m.pools {
		m.flush(p, never)
		if p.view != nil {
			m.retireView(p.view)
		}
	}
	m.phases[m.cur].end = m.now
	if m.drained {
		m.drainedAfter = max(m.lastDone-m.loadEnd, 0)
	} else {
		m.drainedAfter = m.now - m.loadEnd
	}
}
