// Package meshview takes snapshots of a whole mesh for the operator's
// views (`mqmesh top`, the web dashboard): from one connection it asks a
// node for the membership, then every node for its stats and operations
// summary, in parallel, over NATS (routes and gateways carry the requests).
// A standalone node is a mesh of one.
package meshview

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mesh/meshpb"
	"github.com/mqmesh/mqmesh/mqnode"
)

// Node is one node as the snapshot saw it.
type Node struct {
	IDC   string
	Name  string
	State string // gossip state: alive, suspect, failed, left
	// Err is why the node did not answer ("" when it did).
	Err string

	Ready, Leased, Delayed, Dead uint64
	// InRate and OutRate are enqueues and acks per second (10 s averages).
	InRate, OutRate float64
	// OldestReadyMs is the age of the oldest ready task of any queue.
	OldestReadyMs int64
	// Throttles are the active throttles: "cpu", "retry:<queue>",
	// "budget:<backend>".
	Throttles []string
	// Leases of this node's tasks by where the worker was.
	LeasesLocal, LeasesIDC, LeasesOther, LeasesUnknown uint64
	Queues                                             []QueueStats
	// Backends are the backend budgets the node draws on.
	Backends []Backend
	// Latency are the node\'s latency histograms per queue, cumulative
	// since it started (diff two snapshots for an interval\'s quantiles).
	Latency []Latency
	// Alert is what an operator should look at ("" when all is well).
	Alert string
}

// QueueStats is one queue of a node.
type QueueStats struct {
	Name                         string
	Ready, Leased, Delayed, Dead uint64
	InRate, OutRate              float64
	OldestReadyMs                int64
}

// Latency is one queue's histograms: counts per upper bound (seconds),
// cumulative, then the total.
type Latency struct {
	Queue                          string
	Bounds                         []float64
	ScheduleToStart, EnqueueToDone []uint64
}

// Backend is one backend's budget as a node sees it (calls/s).
type Backend struct {
	Name                                string
	Budget, NodeUsage, MeshUsage, Share float64
	Constrained                         bool
}

// Snapshot is the mesh at one moment.
type Snapshot struct {
	Time    time.Time
	Nodes   []Node // sorted by IDC, name
	Workers int    // alive worker members (0 for a standalone node)
	// Mesh is false when the node asked is standalone.
	Mesh bool
}

// Thresholds of the alert column.
const (
	OldestAlert = 30 * time.Second
)

// Take snapshots the mesh that node (idc, name) belongs to, over nc. Each
// node gets timeout to answer; one that does not is in the snapshot with
// its error.
func Take(ctx context.Context, nc *nats.Conn, idc, name string, timeout time.Duration) (*Snapshot, error) {
	snap := &Snapshot{Time: time.Now()}
	mctx, cancel := context.WithTimeout(ctx, timeout)
	members, err := mesh.FetchMembers(mctx, nc, idc, name)
	cancel()
	switch {
	case errors.Is(err, mesh.ErrNotMember):
		snap.Nodes = []Node{{IDC: idc, Name: name, State: "alive"}}
	case err != nil:
		return nil, err
	default:
		snap.Mesh = true
		for _, m := range members.Members {
			meta := m.GetMeta()
			switch meta.GetRole() {
			case meshpb.Role_NODE:
				snap.Nodes = append(snap.Nodes, Node{IDC: meta.GetIdc(), Name: meta.GetName(), State: strings.ToLower(m.GetState().String())})
			case meshpb.Role_WORKER:
				if m.GetState() == meshpb.State_ALIVE {
					snap.Workers++
				}
			}
		}
	}
	slices.SortFunc(snap.Nodes, func(a, b Node) int {
		if c := strings.Compare(a.IDC, b.IDC); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	var wg sync.WaitGroup
	for i := range snap.Nodes {
		n := &snap.Nodes[i]
		if n.State == "left" || n.State == "failed" {
			n.Err = "not a live member (" + n.State + ")"
			n.Alert = alert(n)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			fill(ctx, nc, n, timeout)
			n.Alert = alert(n)
		}()
	}
	wg.Wait()
	return snap, nil
}

func fill(ctx context.Context, nc *nats.Conn, n *Node, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := mqnode.NewClient(nc, n.IDC, n.Name)
	rep, err := c.StatsReply(ctx, "")
	if err != nil {
		n.Err = err.Error()
		return
	}
	for _, q := range rep.Queues {
		n.Ready += q.Ready
		n.Leased += q.Leased
		n.Delayed += q.Delayed
		n.Dead += q.Dead
		n.InRate += q.EnqueueRate
		n.OutRate += q.AckRate
		n.OldestReadyMs = max(n.OldestReadyMs, q.OldestReadyAgeMs)
		for _, t := range q.Throttles {
			if t.Active {
				n.Throttles = append(n.Throttles, throttleName(t.Kind, t.Backend, q.Queue))
			}
		}
		n.Queues = append(n.Queues, QueueStats{Name: q.Queue, Ready: q.Ready, Leased: q.Leased, Delayed: q.Delayed, Dead: q.Dead,
			InRate: q.EnqueueRate, OutRate: q.AckRate, OldestReadyMs: q.OldestReadyAgeMs})
	}
	for _, t := range rep.NodeThrottles {
		if t.Active {
			n.Throttles = append(n.Throttles, throttleName(t.Kind, t.Backend, ""))
		}
	}
	n.Throttles = slices.Compact(n.Throttles)
	for _, b := range rep.Backends {
		n.Backends = append(n.Backends, Backend{Name: b.Backend, Budget: b.Budget, NodeUsage: b.NodeUsage, MeshUsage: b.MeshUsage, Share: b.Share, Constrained: b.Constrained})
	}
	if s, err := c.Summary(ctx); err == nil {
		n.LeasesLocal, n.LeasesIDC, n.LeasesOther, n.LeasesUnknown = s.LeasesLocal, s.LeasesIdc, s.LeasesOther, s.LeasesUnknown
		for _, l := range s.Latency {
			n.Latency = append(n.Latency, Latency{Queue: l.Queue, Bounds: l.Bounds, ScheduleToStart: l.ScheduleToStart, EnqueueToDone: l.EnqueueToDone})
		}
	}
}

func throttleName(kind, backend, queue string) string {
	switch {
	case backend != "":
		return kind + ":" + backend
	case queue != "":
		return kind + ":" + queue
	}
	return kind
}

// alert says what is wrong with a node, most pressing first.
func alert(n *Node) string {
	var a []string
	if n.Err != "" {
		a = append(a, "DOWN")
	}
	if n.State != "" && n.State != "alive" {
		a = append(a, strings.ToUpper(n.State))
	}
	if age := time.Duration(n.OldestReadyMs) * time.Millisecond; age >= OldestAlert {
		a = append(a, fmt.Sprintf("oldest %s", age.Round(time.Second)))
	}
	if len(n.Throttles) > 0 {
		a = append(a, "throttled "+strings.Join(n.Throttles, ","))
	}
	if n.Dead > 0 {
		a = append(a, fmt.Sprintf("%d dead", n.Dead))
	}
	return strings.Join(a, "; ")
}

// IDCTotal sums the nodes of one IDC.
type IDCTotal struct {
	IDC                          string
	Nodes, Down                  int
	Ready, Leased, Delayed, Dead uint64
	InRate, OutRate              float64
	OldestReadyMs                int64
	LeasesLocal, LeasesIDC       uint64
	LeasesOther, LeasesUnknown   uint64
}

// ByIDC sums the snapshot per IDC, in IDC order.
func (s *Snapshot) ByIDC() []IDCTotal {
	var out []IDCTotal
	for _, n := range s.Nodes {
		if len(out) == 0 || out[len(out)-1].IDC != n.IDC {
			out = append(out, IDCTotal{IDC: n.IDC})
		}
		t := &out[len(out)-1]
		t.Nodes++
		if n.Err != "" {
			t.Down++
		}
		t.Ready += n.Ready
		t.Leased += n.Leased
		t.Delayed += n.Delayed
		t.Dead += n.Dead
		t.InRate += n.InRate
		t.OutRate += n.OutRate
		t.OldestReadyMs = max(t.OldestReadyMs, n.OldestReadyMs)
		t.LeasesLocal += n.LeasesLocal
		t.LeasesIDC += n.LeasesIDC
		t.LeasesOther += n.LeasesOther
		t.LeasesUnknown += n.LeasesUnknown
	}
	return out
}
