package worker

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/internal/meshtest"
	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
)

// host is one host of an in-process mesh: a node agent and a worker pool.
type host struct {
	idc, name string
	agent     *mesh.NodeAgent
	client    *mqnode.Client
	pool      *Pool
	slowdown  atomic.Int64 // handler latency multiplier (1 = normal)
	stopped   atomic.Bool
}

// cluster is idcs × hosts hosts on loopback: the nodes of a
// meshtest cluster, each with a worker pool.
type cluster struct {
	t     *testing.T
	mesh  *meshtest.Cluster
	hosts []*host
	// processedBy[origin node][pool host] counts handled tasks.
	mu          sync.Mutex
	processedBy map[string]map[string]int
	firstRemote map[string]time.Time // pool host → first task from another node
	handler     func(*host) Handler
}

const baseLatency = 4 * time.Millisecond

func startCluster(t *testing.T, idcs, perIDC, slots int, filters backlog.Filters) *cluster {
	return startClusterWith(t, clusterOptions{idcs: idcs, perIDC: perIDC, slots: slots, filters: filters})
}

// clusterOptions: node adjusts every node's config; handler, when set,
// replaces the default "push" handler (a sleep of baseLatency × slowdown).
type clusterOptions struct {
	idcs, perIDC, slots int
	filters             backlog.Filters
	node                func(*mqnode.Config)
	handler             func(*host) Handler
}

func startClusterWith(t *testing.T, o clusterOptions) *cluster {
	c := &cluster{t: t, processedBy: map[string]map[string]int{}, firstRemote: map[string]time.Time{}, handler: o.handler}
	// Seeds 1: every node and pool joins through one member, as these tests
	// always did (TestFilterSwitchStopsCrossIDCPulls fails 3 of 3 when the
	// pool names two seeds: a cross-IDC pull decided before the switch
	// completes after it; reported, not fixed here).
	c.mesh = meshtest.New(t, meshtest.Options{IDCs: o.idcs, NodesPerIDC: o.perIDC, Logger: testlog.NewLevel(t, 4), Seeds: 1,
		Node: func(cfg *mesh.NodeAgentConfig) {
			if o.node != nil {
				o.node(&cfg.Node)
			}
		}})
	for _, n := range c.mesh.Nodes {
		h := &host{idc: n.IDC, name: n.Name, agent: n.Agent(), client: n.Client()}
		h.slowdown.Store(1)
		c.hosts = append(c.hosts, h)
	}
	for _, h := range c.hosts {
		c.startPool(h, o.slots, o.filters)
	}
	return c
}

func (c *cluster) startPool(h *host, slots int, filters backlog.Filters) {
	t := c.t
	nc := c.mesh.MustConnect(t, c.mesh.Node(h.name), secrets.RoleWorker)
	f := filters
	p, err := New(nc, Config{ID: "pool-" + h.name, IDC: h.idc, Host: h.name, Node: h.name, Slots: slots, Filters: &f,
		Mesh: c.mesh.WorkerMesh(), Logger: testlog.NewLevel(t, 4)})
	if err != nil {
		t.Fatal(err)
	}
	if c.handler != nil {
		must(t, p.Handle("push", c.handler(h)))
	} else {
		must(t, p.Handle("push", c.pushHandler(h)))
	}
	must(t, p.Start(context.Background()))
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	h.pool = p
}

func (c *cluster) pushHandler(h *host) Handler {
	return func(ctx context.Context, task *Task) Result {
		select {
		case <-time.After(baseLatency * time.Duration(h.slowdown.Load())):
		case <-ctx.Done():
			return Retry(ctx.Err(), 0)
		}
		c.mu.Lock()
		m := c.processedBy[task.Origin.Node]
		if m == nil {
			m = map[string]int{}
			c.processedBy[task.Origin.Node] = m
		}
		m[h.name]++
		if task.Origin.Node != h.name {
			if _, ok := c.firstRemote[h.name]; !ok {
				c.firstRemote[h.name] = time.Now()
			}
		}
		c.mu.Unlock()
		return Done()
	}
}

// load enqueues rate tasks/s on every host (or only on the given ones)
// for d, in batches every 20 ms. It returns the number enqueued per host.
func (c *cluster) load(rate int, d time.Duration, only ...*host) map[string]int {
	targets := c.hosts
	if len(only) > 0 {
		targets = only
	}
	counts := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, h := range targets {
		wg.Add(1)
		go func(h *host) {
			defer wg.Done()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			per := max(rate/50, 1)
			for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
				items := make([]*mqnode.EnqueueItem, per)
				for i := range items {
					items[i] = &mqnode.EnqueueItem{}
				}
				if _, err := h.client.Enqueue(context.Background(), "push", items...); err != nil {
					c.t.Error(err)
					return
				}
				mu.Lock()
				counts[h.name] += per
				mu.Unlock()
			}
		}(h)
	}
	wg.Wait()
	return counts
}

func (c *cluster) processed() (total int, byOrigin map[string]map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	byOrigin = map[string]map[string]int{}
	for o, m := range c.processedBy {
		byOrigin[o] = map[string]int{}
		for p, n := range m {
			byOrigin[o][p] = n
			total += n
		}
	}
	return total, byOrigin
}

func (c *cluster) backlog() uint64 {
	var n uint64
	for _, h := range c.hosts {
		if _, qs, err := h.client.Stats(context.Background(), "push"); err == nil && len(qs) > 0 {
			n += qs[0].Ready + qs[0].Leased + qs[0].Delayed
		}
	}
	return n
}

func everythingFilter() backlog.Filters {
	return backlog.Filters{Tiers: map[string]backlog.TierSpec{
		"local":  {Subject: "bl.h.{idc}.{node}.>", MinBacklog: 1},
		"idc":    {Subject: "bl.i.{idc}.>", MinBacklog: 1},
		"global": {Subject: "bl.g.>", MinBacklog: 1},
	}}
}

// TestLocalityAndHelping: 2 IDCs × 3 hosts. Under steady load within every
// host's capacity at least 99% of tasks run on their own host. Then one
// host's pool is slowed 10×: its backlog is drained by the other hosts of
// its IDC first; the other IDC may step in only later (the predicted-wait
// escalation reaches the global tier once the IDC tier was announced for
// twice its MinInterval without bringing the wait down), nothing is lost,
// and the backlog returns to zero.
func TestLocalityAndHelping(t *testing.T) {
	if testing.Short() {
		t.Skip("6-host mesh skipped in -short mode")
	}
	c := startCluster(t, 2, 3, 8, everythingFilter())
	// Steady: 100 tasks/s per host; capacity 8 slots / 4 ms = 2000/s.
	sent := c.load(100, 3*time.Second)
	want := 0
	for _, n := range sent {
		want += n
	}
	eventually(t, 20*time.Second, "steady load processed", func() bool { n, _ := c.processed(); return n >= want })
	_, by := c.processed()
	local := 0
	for origin, m := range by {
		local += m[origin]
	}
	ratio := float64(local) / float64(want)
	t.Logf("steady state: %d of %d tasks ran on their own host (locality %.4f)", local, want, ratio)
	if ratio < 0.99 {
		t.Fatalf("locality %.4f < 0.99: %v", ratio, by)
	}

	// Slow hA1's pool 10×: capacity 8/40ms = 200/s under a load of 400/s.
	slow := c.hosts[0]
	slow.slowdown.Store(10)
	c.mu.Lock()
	c.firstRemote = map[string]time.Time{}
	c.mu.Unlock()
	before, byBefore := c.processed()
	start := time.Now()
	sent2 := c.load(400, 4*time.Second, slow)
	eventually(t, 60*time.Second, "backlog drained", func() bool {
		n, _ := c.processed()
		return n >= before+sent2[slow.name] && c.backlog() == 0
	})
	drainedIn := time.Since(start)
	_, byAfter := c.processed()
	m, m0 := byAfter[slow.name], byBefore[slow.name]
	helpedSame, helpedOther := 0, 0
	for _, h := range c.hosts[1:] {
		n := m[h.name] - m0[h.name]
		if h.idc == slow.idc {
			helpedSame += n
		} else {
			helpedOther += n
		}
	}
	c.mu.Lock()
	var first time.Time
	for _, ts := range c.firstRemote {
		if first.IsZero() || ts.Before(first) {
			first = ts
		}
	}
	c.mu.Unlock()
	own := m[slow.name] - m0[slow.name]
	t.Logf("slow host: %d tasks enqueued at 400/s for 4s; its own pool ran %d, same-IDC hosts %d, other IDC %d; first remote task %s after the slowdown; all drained in %s",
		sent2[slow.name], own, helpedSame, helpedOther, first.Sub(start).Round(time.Millisecond), drainedIn.Round(time.Millisecond))
	if helpedSame == 0 {
		t.Fatal("no host of the same IDC helped")
	}
	// The other IDC hears of the slow host only once the IDC tier has been
	// announced for twice its MinInterval and the predicted wait stayed over the
	// global target (backlog.TierPolicy.Wait): the same IDC helps first.
	var firstSame, firstOther time.Time
	for _, h := range c.hosts[1:] {
		ts, ok := c.firstRemote[h.name]
		switch {
		case !ok:
		case h.idc == slow.idc && (firstSame.IsZero() || ts.Before(firstSame)):
			firstSame = ts
		case h.idc != slow.idc && (firstOther.IsZero() || ts.Before(firstOther)):
			firstOther = ts
		}
	}
	settle := backlog.DefaultPolicies[backlog.TierIDC].MinInterval
	if helpedOther != 0 && (firstSame.IsZero() || firstOther.Sub(firstSame) < settle/2) {
		t.Fatalf("the other IDC ran %d tasks from %s, the same IDC from %s: not escalated one tier at a time",
			helpedOther, firstOther.Sub(start), firstSame.Sub(start))
	}
	for _, h := range c.hosts {
		if st := h.pool.Stats(); st.AckErrors != 0 {
			t.Fatalf("%s: %d ack errors", h.name, st.AckErrors)
		}
	}

	// Drain rate: the slow host's pool stops; a backlog of 3000 tasks on
	// its node is drained by the other hosts (its IDC first; the other IDC
	// too, as 3000 is past the global tier's threshold).
	slow.pool.Stop(context.Background())
	helperStats := map[string]Stats{}
	for _, h := range c.hosts[1:] {
		helperStats[h.name] = h.pool.Stats()
	}
	before, byBefore = c.processed()
	items := make([]*mqnode.EnqueueItem, 3000)
	for i := range items {
		items[i] = &mqnode.EnqueueItem{}
	}
	start = time.Now()
	if _, err := slow.client.Enqueue(context.Background(), "push", items...); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for c.backlog() != 0 {
		if time.Now().After(deadline) {
			for _, h := range c.hosts {
				_, qs, _ := h.client.Stats(context.Background(), "push")
				t.Logf("%s: %v view=%+v stats=%+v", h.name, qs, h.pool.View().Entries(), h.pool.Stats())
			}
			t.Fatal("backlog of a stopped pool not drained by its IDC")
		}
		time.Sleep(10 * time.Millisecond)
	}
	el := time.Since(start)
	// Tasks per remote pull: the helpers' drain is bounded by round trips
	// (one remote pull in flight per pool, sized by the slots free then).
	var remotePulls, remoteTasks uint64
	for _, h := range c.hosts[1:] {
		st, s0 := h.pool.Stats(), helperStats[h.name]
		for _, w := range []Where{SameIDC, OtherIDC} {
			remotePulls += st.Pulls[w] - s0.Pulls[w]
			remoteTasks += st.Processed[w] - s0.Processed[w]
		}
	}
	t.Logf("helpers made %d remote pulls for %d tasks (%.1f per pull)", remotePulls, remoteTasks, float64(remoteTasks)/float64(max(remotePulls, 1)))
	after, byAfter := c.processed()
	same, other := 0, 0
	for _, h := range c.hosts[1:] {
		n := byAfter[slow.name][h.name] - byBefore[slow.name][h.name]
		if h.idc == slow.idc {
			same += n
		} else {
			other += n
		}
	}
	rate := float64(after-before) / el.Seconds()
	// 5 hosts × 8 slots / 4 ms: 10,000 tasks/s of handler capacity.
	t.Logf("stopped pool's backlog of %d drained in %s (same IDC %d, other IDC %d: the backlog is past the global tier's threshold): %.0f tasks/s = %.0f%% of the 5 helpers' handler capacity (10,000/s)",
		after-before, el.Round(time.Millisecond), same, other, rate, rate/10000*100)
}
