package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
)

// meshStatsJSON is the stable --json output of `mqmesh stats --mesh`: the
// queues summed over every alive node of the mesh.
type meshStatsJSON struct {
	// Nodes are the alive nodes the node at --server knows, with an error
	// for each one that did not answer.
	Nodes []meshNodeJSON `json:"nodes"`
	// Complete is false when a node did not answer: the sums lack it.
	Complete bool `json:"complete"`
	// Queues are summed over the nodes that answered, sorted by name.
	Queues []meshQueueJSON `json:"queues"`
}

type meshNodeJSON struct {
	IDC   string `json:"idc"`
	Name  string `json:"name"`
	Error string `json:"error,omitempty"`
}

// meshQueueJSON is one queue summed over the nodes that have it.
type meshQueueJSON struct {
	Queue              string  `json:"queue"`
	Nodes              int     `json:"nodes"` // nodes that have the queue
	Ready              uint64  `json:"ready"`
	Leased             uint64  `json:"leased"`
	Delayed            uint64  `json:"delayed"`
	Dead               uint64  `json:"dead"`
	EnqueueRate        float64 `json:"enqueue_rate"`
	AckRate            float64 `json:"ack_rate"`
	EnqueuedTotal      uint64  `json:"enqueued_total"`
	AckedTotal         uint64  `json:"acked_total"`
	NackedTotal        uint64  `json:"nacked_total"`
	ExpiredLeasesTotal uint64  `json:"expired_leases_total"`
	DeadTotal          uint64  `json:"dead_total"`
}

// runMesh asks the node at --server for the membership, then every alive
// node (over the same connection: NATS routes and gateways carry the
// requests) for its stats, and sums them per queue.
func (o *statsOptions) runMesh(ctx context.Context, stdout, stderr io.Writer) error {
	c, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	idc, name := c.Node()
	rctx, cancel := o.request(ctx)
	rep, err := mesh.FetchMembers(rctx, c.Conn(), idc, name)
	cancel()
	if err != nil {
		if errors.Is(err, mesh.ErrNotMember) {
			return fmt.Errorf("stats --mesh: node %s/%s runs standalone (no mesh to sum)", idc, name)
		}
		return fmt.Errorf("stats --mesh: %w", err)
	}
	out := meshStatsJSON{Complete: true, Nodes: []meshNodeJSON{}, Queues: []meshQueueJSON{}}
	sums := map[string]*meshQueueJSON{}
	for _, m := range newMembersJSON(rep).Members {
		if m.Role != string(mesh.RoleNode) || m.State != string(mesh.StateAlive) {
			continue
		}
		n := meshNodeJSON{IDC: m.IDC, Name: m.Name}
		rctx, cancel := o.request(ctx)
		st, err := mqnode.NewClient(c.Conn(), m.IDC, m.Name).StatsReply(rctx, o.Queue)
		cancel()
		if err != nil {
			n.Error = err.Error()
			out.Complete = false
			out.Nodes = append(out.Nodes, n)
			continue
		}
		out.Nodes = append(out.Nodes, n)
		for _, q := range st.Queues {
			s := sums[q.Queue]
			if s == nil {
				s = &meshQueueJSON{Queue: q.Queue}
				sums[q.Queue] = s
			}
			s.Nodes++
			s.Ready += q.Ready
			s.Leased += q.Leased
			s.Delayed += q.Delayed
			s.Dead += q.Dead
			s.EnqueueRate += q.EnqueueRate
			s.AckRate += q.AckRate
			s.EnqueuedTotal += q.EnqueuedTotal
			s.AckedTotal += q.AckedTotal
			s.NackedTotal += q.NackedTotal
			s.ExpiredLeasesTotal += q.ExpiredLeasesTotal
			s.DeadTotal += q.DeadTotal
		}
	}
	for _, s := range sums {
		out.Queues = append(out.Queues, *s)
	}
	slices.SortFunc(out.Queues, func(a, b meshQueueJSON) int { return strings.Compare(a.Queue, b.Queue) })
	if !out.Complete {
		for _, n := range out.Nodes {
			if n.Error != "" {
				fmt.Fprintf(stderr, "stats --mesh: node %s/%s did not answer: %s (not in the sums)\n", n.IDC, n.Name, n.Error)
			}
		}
	}
	if o.JSON {
		return writeJSON(stdout, out)
	}
	answered := 0
	for _, n := range out.Nodes {
		if n.Error == "" {
			answered++
		}
	}
	fmt.Fprintf(stdout, "mesh of %d alive node(s) as %s/%s sees it; %d answered\n", len(out.Nodes), idc, name, answered)
	tw := newTable(stdout)
	fmt.Fprintln(tw, "QUEUE\tNODES\tREADY\tLEASED\tDELAYED\tDEAD\tENQ/S\tACK/S\tENQUEUED\tACKED\tNACKED\tEXPIRED\tDEAD TOTAL")
	for _, q := range out.Queues {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%d\t%d\t%d\t%d\t%d\n", q.Queue, q.Nodes, q.Ready, q.Leased, q.Delayed, q.Dead,
			q.EnqueueRate, q.AckRate, q.EnqueuedTotal, q.AckedTotal, q.NackedTotal, q.ExpiredLeasesTotal, q.DeadTotal)
	}
	return tw.Flush()
}

// writeTotals prints the lifetime totals of every queue (they survive
// restarts of the node).
func writeTotals(w io.Writer, out statsJSON) error {
	fmt.Fprintln(w)
	tw := newTable(w)
	fmt.Fprintln(tw, "QUEUE\tENQUEUED\tACKED\tNACKED\tEXPIRED\tDEAD TOTAL")
	for _, q := range out.Queues {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\n", q.Queue, q.EnqueuedTotal, q.AckedTotal, q.NackedTotal, q.ExpiredLeasesTotal, q.DeadTotal)
	}
	return tw.Flush()
}
