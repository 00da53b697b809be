// The scale model's phases: the latency histogram they keep, the timeline
// that opens them and applies its faults, the periodic sample, and the
// end of a run.

package sim

import (
	"math"
	"slices"
	"sort"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
)

type modelPhase struct {
	name       string
	start, end int64
	done       int64
	where      [3]int64
	hist       latHist
	peak       uint64
	retries    int64
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
		m.errRate[idc] = ev.ErrorRate
	case "restore":
		m.slow[idc] = m.slowBase[idc]
		m.errRate[idc] = m.errBase[idc]
	case "kill-pools":
		m.accrue()
		for _, p := range m.idcPools[idc] {
			m.kill(p)
		}
	case "restore-pools":
		m.accrue()
		m.restorePools(idc)
	case "kill-nodes":
		m.accrue()
		m.killNodes(idc, ev.Share)
	case "restart-nodes":
		m.accrue()
		m.restartNodes(idc)
	case "slow-link":
		m.linkExtra[idc] = int64(ev.Latency)
	case "heal":
		m.linkExtra[idc] = 0
	case "restore-all":
		m.accrue()
		copy(m.slow, m.slowBase)
		copy(m.errRate, m.errBase)
		clear(m.linkExtra)
		for i := range m.idcs {
			m.restartNodes(i)
			m.restorePools(i)
		}
	}
}

// report hands the progress callback where the run is (at every sample,
// and every few thousand events, so a slow stretch still reports).
func (m *model) report() {
	if m.progress == nil {
		return
	}
	var done int64
	for _, p := range m.phases {
		done += p.done
	}
	m.progress(ModelProgress{Hosts: len(m.pools), VirtualS: time.Duration(m.now).Seconds(), Phase: m.phases[m.cur].name,
		Backlog: uint64(m.readyTotal), Done: done, Events: m.events})
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
	m.report()
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
