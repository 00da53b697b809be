package sim

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/worker"
)

// metrics collects what a run observes: every enqueued and completed task,
// every execution and backend call, per-phase latencies and locality, and
// the time series.
type metrics struct {
	mu          sync.Mutex
	start       time.Time
	phase       int
	enqueued    map[string]string // task id → origin host
	completions map[string]int    // task id → completions
	phases      []*phaseAcc
	series      []Sample
	// Running totals: executions, retries among them, backend calls, and
	// completions by origin node.
	attempts, retries, calls int
	nodeDone                 map[string]int
	origins                  map[string]time.Duration // node → its first enqueue
	// outages are the backend's down and up times (up < 0: still down).
	outages []outage
	// wiped are the hosts lose-host took with their disks (losehost.go).
	wiped map[string]bool
}

type outage struct{ down, up time.Duration }

type phaseAcc struct {
	name       string
	start, end time.Duration
	done       int
	where      [3]int // local, same IDC, other IDC
	latencies  []time.Duration
	// attempts are executions, retries those with Attempt > 1, calls the
	// backend calls they reported.
	attempts, retries, calls int
	enqueueLat               []time.Duration // producers' Enqueue calls
	doneBy                   map[string]int  // completions by origin node
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
	// Attempts, Retries and Calls count executions, executions with
	// Attempt > 1 and backend calls so far.
	Attempts int `json:"attempts"`
	Retries  int `json:"retries"`
	Calls    int `json:"backend_calls"`
	// Deferred is the retries the nodes' retry gates deferred so far
	// (summed over the live nodes); RetryGates the nodes whose retry gate
	// is closed (limiting retries) now.
	Deferred   uint64 `json:"retries_deferred"`
	RetryGates int    `json:"retry_gates"`
	// NodeDone counts completions so far by the node the task was
	// enqueued on.
	NodeDone map[string]int `json:"node_done"`
	// CPU is the CPU usage (0..1, all cores) since the previous sample as
	// the CPU throttle's sampler reads it (throttle.cpu.sampler: this
	// machine's by default); CPULimit the sum of the nodes' active CPU
	// dispatch limits (tasks/s; 0: none).
	CPU      float64 `json:"cpu"`
	CPULimit float64 `json:"cpu_limit"`
}

func newMetrics() *metrics {
	return &metrics{enqueued: map[string]string{}, completions: map[string]int{}, nodeDone: map[string]int{}, origins: map[string]time.Duration{}}
}

func (m *metrics) begin(start time.Time, firstPhase string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.start = start
	m.phases = []*phaseAcc{{name: firstPhase, doneBy: map[string]int{}}}
}

// enterPhase closes the current phase and starts a named one.
func (m *metrics) enterPhase(name string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	at := now.Sub(m.start)
	m.phases[len(m.phases)-1].end = at
	m.phases = append(m.phases, &phaseAcc{name: name, start: at, doneBy: map[string]int{}})
	m.phase = len(m.phases) - 1
}

// enqueue records tasks enqueued on a host's node; took, when > 0, is how
// long a producer's Enqueue call took.
func (m *metrics) enqueue(ids []string, host string, took time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range ids {
		m.enqueued[id] = host
	}
	if _, ok := m.origins[host]; !ok {
		m.origins[host] = time.Since(m.start)
	}
	if took > 0 {
		p := m.phases[m.phase]
		p.enqueueLat = append(p.enqueueLat, took)
	}
}

// attempt counts one execution of a task.
func (m *metrics) attempt(t *worker.Task) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.phases[m.phase]
	m.attempts++
	p.attempts++
	if t.Attempt > 1 {
		m.retries++
		p.retries++
	}
}

// called counts n backend calls.
func (m *metrics) called(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls += n
	m.phases[m.phase].calls += n
}

// backend records the backend going down or coming back.
func (m *metrics) backend(down bool, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	at := now.Sub(m.start)
	if down {
		m.outages = append(m.outages, outage{down: at, up: -1})
	} else if n := len(m.outages); n > 0 && m.outages[n-1].up < 0 {
		m.outages[n-1].up = at
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
	m.completions[completionID(t)]++ // a replayed task counts for its original
	origin := t.Origin.Node          // the node's name is its host's
	m.nodeDone[origin]++
	p := m.phases[m.phase]
	p.doneBy[origin]++
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
	s.Attempts, s.Retries, s.Calls = m.attempts, m.retries, m.calls
	s.NodeDone = maps.Clone(m.nodeDone)
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
