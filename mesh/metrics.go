package mesh

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

var mMembers = prometheus.NewDesc("mqmesh_gossip_members", "Mesh members as this member's gossip sees them, by role and state (alive, suspect, failed, left).", []string{"role", "state"}, nil)

// Collector reports the membership by role and state.
func (m *Mesh) Collector() prometheus.Collector { return meshCollector{m} }

type meshCollector struct{ m *Mesh }

func (c meshCollector) Describe(ch chan<- *prometheus.Desc) { ch <- mMembers }

func (c meshCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[[2]string]int{}
	for _, r := range []Role{RoleNode, RoleWorker} {
		for _, s := range []State{StateAlive, StateSuspect, StateFailed, StateLeft} {
			counts[[2]string{string(r), string(s)}] = 0
		}
	}
	for _, mb := range c.m.Members() {
		counts[[2]string{string(mb.Meta.Role), string(mb.State)}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(mMembers, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}

// Collectors are the agent's metrics: its node's, the membership's and
// its backlog publisher's notices. Register them after Start.
func (a *NodeAgent) Collectors() []prometheus.Collector {
	return []prometheus.Collector{a.Node.Collector(), a.Mesh.Collector(), backlog.PublisherCollector(a.publisher)}
}

func (a *NodeAgent) publisher() *backlog.Publisher { return a.pub }

// workerDirectory answers "which IDC, host and node is worker id on" from
// the membership, for the node's trace; refreshed at most once a second.
type workerDirectory struct {
	m    *Mesh
	mu   sync.Mutex
	at   time.Time
	byID map[string]mqnode.WorkerInfo
}

func (d *workerDirectory) lookup(id string) (mqnode.WorkerInfo, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	wi, ok := d.byID[id]
	if ok || time.Since(d.at) < time.Second {
		return wi, ok
	}
	d.at = time.Now()
	d.byID = map[string]mqnode.WorkerInfo{}
	for _, mb := range d.m.Members() {
		if mb.Meta.Role == RoleWorker {
			d.byID[mb.Meta.Name] = mqnode.WorkerInfo{IDC: mb.Meta.IDC, Host: mb.Meta.Host, Node: mb.Meta.Node}
		}
	}
	wi, ok = d.byID[id]
	return wi, ok
}
