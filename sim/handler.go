package sim

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/mqmesh/mqmesh/worker"
)

// backends holds the live state of every IDC's backend (its "path to the
// push service"): a slowdown factor and an error rate that faults change,
// and whether it is down (refusing every call).
type backends struct {
	mu   sync.RWMutex
	m    map[string]Backend
	base map[string]Backend
	down map[string]bool
}

func newBackends(s Scenario) *backends {
	b := &backends{m: map[string]Backend{}, base: map[string]Backend{}, down: map[string]bool{}}
	for _, idc := range s.Topology.IDCs {
		be := Backend{Slowdown: 1, ErrorRate: s.Handler.ErrorRate}
		if o, ok := s.Handler.PerIDC[idc.Name]; ok {
			if o.Slowdown > 0 {
				be.Slowdown = o.Slowdown
			}
			be.ErrorRate = min(0.99, be.ErrorRate+o.ErrorRate)
		}
		b.m[idc.Name], b.base[idc.Name] = be, be
	}
	return b
}

func (b *backends) get(idc string) (Backend, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.m[idc], b.down[idc]
}

// setDown marks an IDC's backend (every IDC's when idc is "") down or up,
// and says whether any changed.
func (b *backends) setDown(idc string, down bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	changed := false
	for name := range b.m {
		if (idc == "" || name == idc) && b.down[name] != down {
			b.down[name] = down
			changed = true
		}
	}
	return changed
}

func (b *backends) degrade(idc string, slowdown, errRate float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	base := b.base[idc]
	b.m[idc] = Backend{Slowdown: base.Slowdown * slowdown, ErrorRate: min(0.99, base.ErrorRate+errRate)}
}

func (b *backends) restore(idc string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m[idc] = b.base[idc]
}

// latencyDist is a lognormal with the given median and p99.
type latencyDist struct{ mu, sigma float64 }

func newLatency(median, p99 time.Duration) latencyDist {
	mu := math.Log(float64(median))
	sigma := 0.0
	if p99 > median {
		sigma = (math.Log(float64(p99)) - mu) / 2.3263478740 // z of 0.99
	}
	return latencyDist{mu: mu, sigma: sigma}
}

func (l latencyDist) sample(rng *rand.Rand) time.Duration {
	return time.Duration(math.Exp(l.mu + l.sigma*rng.NormFloat64()))
}

var (
	errBackend     = errors.New("simulated backend failure")
	errBackendDown = errors.New("simulated backend down: connection refused")
)

// handler is the simulated business handler of one host: it runs in the
// host's IDC, so it uses that IDC's backend whatever node the task came
// from (helping from a healthy IDC is what beats a degraded one). Every
// execution is counted (attempts, retries); the backend calls it makes are
// reported to the node (Task.Report) and counted.
func (r *run) handler(h *simHost) worker.Handler {
	dist := newLatency(r.s.Handler.Median.D(), r.s.Handler.P99.D())
	calls := 0
	if b := r.s.Handler.Backend; b != nil {
		calls = b.Calls
	}
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(r.s.Seed, uint64(h.index)+1))
	return func(ctx context.Context, t *worker.Task) worker.Result {
		r.metrics.attempt(t)
		if r.deploy.ackBadly(h.idc, t) {
			return worker.Done() // a bad deploy: success reported, no work done
		}
		be, down := r.backends.get(h.idc)
		if down {
			// Refused at the first call: the execution fails at once.
			r.called(t, min(calls, 1))
			return worker.Retry(errBackendDown, 0)
		}
		mu.Lock()
		d := time.Duration(float64(dist.sample(rng)) * be.Slowdown)
		fail := rng.Float64() < be.ErrorRate
		mu.Unlock()
		burnCPU(r.s.Handler.CPU.D())
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return worker.Retry(ctx.Err(), 0)
		}
		r.called(t, calls)
		if fail {
			return worker.Retry(errBackend, 0)
		}
		r.metrics.done(t, h, time.Now())
		return worker.Done()
	}
}

// called reports n calls of task t to the handler's backend.
func (r *run) called(t *worker.Task, n int) {
	if n > 0 {
		t.Report(r.s.Handler.Backend.Name, n)
		r.metrics.called(n)
	}
}
