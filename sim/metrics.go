package sim

import (
	"slices"
	"sync"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/worker"
)

// metrics collects what a run observes: every enqueued and completed task,
// per-phase latencies and locality, and the time series.
type metrics struct {
	mu          sync.Mutex
	start       time.Time
	phase       int
	enqueued    map[string]string // task id → origin host
	completions map[string]int    // task id → completions
	phases      []*phaseAcc
	series      []Sample
}

type phaseAcc struct {
	name       string
	start, end time.Duration
	done       int
	where      [3]int // local, same IDC, other IDC
	latencies  []time.Duration
}

// Sample is one point of the time series.
type Sample struct {
	T       float64           `json:"t"` // seconds since the start of the load
	Phase   string            `json:"phase"`
	Backlog map[string]uint64 `json:"backlog"` // per IDC: ready + delayed + leased
	Total   uint64            `json:"total_backlog"`
	Done    int               `json:"done"`    // completions so far
	Notices uint64            `json:"notices"` // backlog notices accepted by all pools so far
	Workers int               `json:"workers"` // pools alive
	// Where counts completions so far by where the task ran: local, same
	// IDC, other IDC.
	Where [3]int `json:"where"`
	// P99Ms is the p99 latency of the tasks completed since the last sample.
	P99Ms float64 `json:"p99_ms"`
}

func newMetrics() *metrics {
	return &metrics{enqueued: map[string]string{}, completions: map[string]int{}}
}

func (m *metrics) begin(start time.Time, firstPhase string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.start = start
	m.phases = []*phaseAcc{{name: firstPhase}}
}

// enterPhase closes the current phase and starts a named one.
func (m *metrics) enterPhase(name string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	at := now.Sub(m.start)
	m.phases[len(m.phases)-1].end = at
	m.phases = append(m.phases, &phaseAcc{name: name, start: at})
	m.phase = len(m.phases) - 1
}

func (m *metrics) enqueue(ids []string, host string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range ids {
		m.enqueued[id] = host
	}
}

func whereOf(t backlog.Tier) int {
	switch t {
	case backlog.TierIDC:
		return 1
	case backlog.TierGlobal:
		return 2
	}
	return 0
}

func (m *metrics) done(t *worker.Task, h *simHost, now time.Time) {
	w := whereOf(t.Tier)
	if h.workerOnly && w == 0 {
		w = 1
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.completions[t.ID]++
	p := m.phases[m.phase]
	p.done++
	p.where[w]++
	p.latencies = append(p.latencies, now.Sub(t.Created))
}

func (m *metrics) sample(s Sample) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s.Phase = m.phases[m.phase].name
	var done int
	for _, p := range m.phases {
		done += p.done
		for i := range s.Where {
			s.Where[i] += p.where[i]
		}
	}
	s.Done = done
	if n := len(m.series); n > 0 {
		prev := m.series[n-1]
		// p99 of the tasks completed since the previous sample.
		p := m.phases[m.phase]
		fresh := done - prev.Done
		if fresh > 0 && fresh <= len(p.latencies) {
			s.P99Ms = ms(percentile(p.latencies[len(p.latencies)-fresh:], 0.99))
		}
	}
	m.series = append(m.series, s)
}

func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	c := slices.Clone(ds)
	slices.Sort(c)
	i := int(q * float64(len(c)-1))
	return c[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
