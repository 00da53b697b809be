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
// push service"): a slowdown factor and an error rate that faults change.
type backends struct {
	mu   sync.RWMutex
	m    map[string]Backend
	base map[string]Backend
}

func newBackends(s Scenario) *backends {
	b := &backends{m: map[string]Backend{}, base: map[string]Backend{}}
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

func (b *backends) get(idc string) Backend {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.m[idc]
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

var errBackend = errors.New("simulated backend failure")

// handler is the simulated business handler of one host: it runs in the
// host's IDC, so it uses that IDC's backend whatever node the task came
// from (helping from a healthy IDC is what beats a degraded one).
func (r *run) handler(h *simHost) worker.Handler {
	dist := newLatency(r.s.Handler.Median.D(), r.s.Handler.P99.D())
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(r.s.Seed, uint64(h.index)+1))
	return func(ctx context.Context, t *worker.Task) worker.Result {
		be := r.backends.get(h.idc)
		mu.Lock()
		d := time.Duration(float64(dist.sample(rng)) * be.Slowdown)
		fail := rng.Float64() < be.ErrorRate
		mu.Unlock()
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return worker.Retry(ctx.Err(), 0)
		}
		if fail {
			return worker.Retry(errBackend, 0)
		}
		r.metrics.done(t, h, time.Now())
		return worker.Done()
	}
}
