package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/throttle"
)

// TestBackendBudgetMeshWide: 3 nodes, handlers making k = 3 calls to one
// backend per task (reported with Task.Call), a budget of B = 300 calls/s
// set in every node's config. Two nodes have a backlog the handlers could
// run at ~30× the budget; the third gets a light steady load of 10
// tasks/s (30 calls/s). After convergence the mesh-wide call rate stays
// within ±10% of B, the light node gets what it needs, and the two heavy
// nodes split the rest.
func TestBackendBudgetMeshWide(t *testing.T) {
	if testing.Short() {
		t.Skip("2 × 9 s of load on a 3-node mesh")
	}
	// One IDC (usage shared over routes) and three IDCs of one node each
	// (shared over gateways).
	for _, shape := range []struct {
		name         string
		idcs, perIDC int
	}{{"one-idc", 1, 3}, {"three-idcs", 3, 1}} {
		t.Run(shape.name, func(t *testing.T) { budgetMeshWide(t, shape.idcs, shape.perIDC) })
	}
}

func budgetMeshWide(t *testing.T, idcs, perIDC int) {
	const budget, k = 300.0, 3
	var mu sync.Mutex
	calls := map[int64]map[string]int{} // 100 ms bucket → origin node → calls
	start := time.Now()
	c := startClusterWith(t, clusterOptions{idcs: idcs, perIDC: perIDC, slots: 8, filters: everythingFilter(),
		node: func(cfg *mqnode.Config) {
			cfg.Throttle = testlog.NoCPUThrottle
			cfg.Throttle.Backends = map[string]throttle.BackendConfig{"user-db": {Budget: budget}}
		},
		handler: func(h *host) Handler {
			return func(ctx context.Context, task *Task) Result {
				for i := 0; i < k; i++ {
					_ = task.Call("user-db", func() error { time.Sleep(time.Millisecond); return nil })
				}
				b := time.Since(start).Milliseconds() / 100
				mu.Lock()
				if calls[b] == nil {
					calls[b] = map[string]int{}
				}
				calls[b][task.Origin.Node] += k
				mu.Unlock()
				return Done()
			}
		}})
	start = time.Now()
	light := c.hosts[2]
	lightDone := make(chan struct{})
	go func() { // 10 tasks/s for the whole run
		defer close(lightDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 95; i++ {
			if _, err := light.client.Enqueue(context.Background(), "push", &mqnode.EnqueueItem{}); err != nil {
				t.Error(err)
				return
			}
			<-tick.C
		}
	}()
	defer func() { <-lightDone }()
	for _, h := range c.hosts[:2] {
		items := make([]*mqnode.EnqueueItem, 2000)
		for i := range items {
			items[i] = &mqnode.EnqueueItem{}
		}
		if _, err := h.client.Enqueue(context.Background(), "push", items...); err != nil {
			t.Fatal(err)
		}
	}
	const run = 9 * time.Second
	time.Sleep(time.Until(start.Add(run)))
	mu.Lock()
	defer mu.Unlock()
	// Mesh-wide calls per 1 s window, sliding by 100 ms.
	rate := func(from int64) (total float64, per map[string]float64) {
		per = map[string]float64{}
		for b := from; b < from+10; b++ {
			for n, x := range calls[b] {
				per[n] += float64(x)
				total += float64(x)
			}
		}
		return total, per
	}
	last := int64(run/(100*time.Millisecond)) - 10
	// Converged: from then on every 1 s window is within ±25% of B (a
	// loaded machine may stall a handler for a moment) ...
	converged := int64(-1)
	for b := last; b >= 0; b-- {
		if r, _ := rate(b); r < 0.75*budget || r > 1.25*budget {
			break
		}
		converged = b
	}
	var line string
	for b := int64(0); b <= last; b += 10 {
		r, _ := rate(b)
		line += fmt.Sprintf(" %.0f", r)
	}
	t.Logf("mesh-wide calls/s per second:%s (budget %v)", line, budget)
	if converged < 0 || converged > 50 {
		t.Fatalf("call rate not within ±25%% of the budget in every second of the last 4 s (converged at bucket %d)", converged)
	}
	t.Logf("every 1 s window within ±25%% of the budget from %.1f s after the load started", float64(converged)/10)
	// ... and the last 4 s on average within ±10%, every node progressing.
	var sum float64
	perNode := map[string]float64{}
	for b := last - 30; b <= last; b += 10 {
		r, per := rate(b)
		sum += r
		for n, x := range per {
			perNode[n] += x / 4
		}
	}
	t.Logf("last 4 s: mesh %.0f calls/s; per origin node %v", sum/4, perNode)
	if mean := sum / 4; mean < 0.9*budget || mean > 1.1*budget {
		t.Errorf("mesh-wide %.0f calls/s over the last 4 s, budget %v", mean, budget)
	}
	if perNode[light.name] < 0.7*30 {
		t.Errorf("light node %s: %.0f calls/s, it needs 30", light.name, perNode[light.name])
	}
	for _, h := range c.hosts {
		if h != light && perNode[h.name] < 0.25*budget {
			t.Errorf("heavy node %s starved: %.0f calls/s of tasks it dispatched", h.name, perNode[h.name])
		}
		rep, err := h.client.StatsReply(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Backends) != 1 || rep.Backends[0].Nodes != 3 || rep.Backends[0].Budget != budget {
			t.Errorf("node %s backend stats %v", h.name, rep.Backends)
		}
	}
}
