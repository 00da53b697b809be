package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/mqnode"
)

// statsOptions are the flags of `mqmesh stats`.
type statsOptions struct {
	clientOptions
	// Queue limits the output to one queue ("" for all).
	Queue string
	// Mesh sums every alive node of the mesh per queue.
	Mesh bool
}

// statsJSON is the stable --json output of `mqmesh stats`.
type statsJSON struct {
	Node   nodeJSON         `json:"node"`
	Queues []queueStatsJSON `json:"queues"` // sorted by name; [] when none
	// Throttles are the node-wide throttles (the CPU throttle).
	Throttles []throttleJSON `json:"throttles"`
	// Backends are the backends handlers report calls to, with their
	// budgets and this node's share ([] when none).
	Backends []backendJSON `json:"backends"`
	// Replication is the node's buddy replication (stats_repl.go).
	Replication *replJSON `json:"replication,omitempty"`
}

// throttleJSON is one throttle: what it limits, how far and why.
type throttleJSON struct {
	Kind    string `json:"kind"`              // retry, cpu or budget
	Backend string `json:"backend,omitempty"` // budget: the backend
	Active  bool   `json:"active"`            // holding dispatch back now
	// Limit is retries/s (retry), tasks/s (cpu) or calls/s (budget share);
	// 0 when none is in force.
	Limit  float64    `json:"limit"`
	Reason string     `json:"reason"`
	Since  *time.Time `json:"since,omitempty"` // last change of Active
	// Deferred counts tasks held back (see mqnode/throttle.State).
	Deferred uint64 `json:"deferred_total"`
}

// backendJSON is one backend's usage and budget as the node sees it.
type backendJSON struct {
	Backend     string  `json:"backend"`
	Budget      float64 `json:"budget"`     // calls/s for the whole mesh; 0 = none
	NodeUsage   float64 `json:"node_usage"` // calls/s by tasks this node dispatched
	MeshUsage   float64 `json:"mesh_usage"` // calls/s reported by every node
	Share       float64 `json:"share"`      // this node's part of the budget
	Nodes       uint32  `json:"nodes"`      // nodes sharing the budget
	Constrained bool    `json:"constrained"`
	Deferred    uint64  `json:"deferred_total"`
}

// nodeJSON identifies the node that answered.
type nodeJSON struct {
	Name       string    `json:"name"`
	IDC        string    `json:"idc"`
	Version    string    `json:"version"`
	Durability string    `json:"durability"`
	StartedAt  time.Time `json:"started_at"`
	ServerID   string    `json:"server_id"`
	MaxPayload int64     `json:"max_payload"` // bytes
}

// queueStatsJSON is one queue's statistics.
type queueStatsJSON struct {
	Queue   string `json:"queue"`
	Ready   uint64 `json:"ready"`   // waiting to be pulled
	Leased  uint64 `json:"leased"`  // delivered, not yet settled
	Delayed uint64 `json:"delayed"` // waiting for their not-before time
	Dead    uint64 `json:"dead"`    // in the dead letter queue
	// OldestReadyAgeMs is how long the oldest ready task has waited (0: none).
	OldestReadyAgeMs int64 `json:"oldest_ready_age_ms"`
	// EnqueueRate and AckRate are tasks per second, 10 s moving averages.
	EnqueueRate        float64 `json:"enqueue_rate"`
	AckRate            float64 `json:"ack_rate"`
	EnqueuedTotal      uint64  `json:"enqueued_total"`
	AckedTotal         uint64  `json:"acked_total"`
	NackedTotal        uint64  `json:"nacked_total"`
	ExpiredLeasesTotal uint64  `json:"expired_leases_total"`
	DeadTotal          uint64  `json:"dead_total"`
	// RetriesDeferredTotal counts retries the retry gate put back.
	RetriesDeferredTotal uint64         `json:"retries_deferred_total"`
	Throttles            []throttleJSON `json:"throttles"` // retry gate and budgets
	// LostTotal counts records found missing at start (store damage, see
	// <data>/mqnode-damage.log); CorruptTotal counts unreadable records
	// moved to the dead letter queue.
	LostTotal    uint64 `json:"lost_total"`
	CorruptTotal uint64 `json:"corrupt_total"`
	// Settled tasks kept for `mqmesh replay` (keep_settled; 0 = off), and
	// the bytes they hold.
	KeepSettled  string `json:"keep_settled"`
	SettledKept  uint64 `json:"settled_kept"`
	SettledBytes uint64 `json:"settled_bytes"`
}

func newStatsCommand() *cobra.Command {
	o := &statsOptions{}
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show the queues of a node",
		Long: `Show per-queue statistics of one node: tasks ready, leased, delayed and
dead, the age of the oldest ready task, and enqueue and ack rates (tasks/s,
10 s moving averages). Then the node's throttles (overload protection):
the CPU throttle of the node, the retry gate of each queue and the backend
budgets each queue draws on, each with its state (open or LIMITING), its
current limit, the tasks it held back and why; and the backends handlers
report calls to, with the mesh-wide budget, usage and this node's share.
Lifetime totals (enqueued, acked, nacked, expired leases, dead-lettered)
survive restarts of the node.

With --mesh, the node at --server lists the alive nodes of its mesh and
every one is asked (over the same connection); the queues are summed per
queue, totals included: the whole mesh's completeness at a glance.`,
		Example: `  mqmesh stats
  mqmesh stats --server nats://10.0.0.5:4222 --queue orders --json
  mqmesh stats --mesh --server nats://127.0.1.1:4222`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	o.bind(cmd.Flags())
	cmd.Flags().StringVarP(&o.Queue, "queue", "q", "", "only this queue (default: all)")
	cmd.Flags().BoolVar(&o.Mesh, "mesh", false, "sum every alive node of the mesh, per queue")
	return cmd
}

// Validate checks the flags.
func (o *statsOptions) Validate() error {
	if err := o.clientOptions.Validate(); err != nil {
		return err
	}
	if o.Queue != "" {
		return validateQueue(o.Queue)
	}
	return nil
}

func (o *statsOptions) run(ctx context.Context, stdout, stderr io.Writer) error {
	if o.Mesh {
		return o.runMesh(ctx, stdout, stderr)
	}
	c, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	rctx, cancel := o.request(ctx)
	defer cancel()
	rep, err := c.StatsReply(rctx, o.Queue)
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	out := newStatsJSON(rep)
	if o.JSON {
		return writeJSON(stdout, out)
	}
	tw := newTable(stdout)
	fmt.Fprintln(tw, "QUEUE\tREADY\tLEASED\tDELAYED\tDEAD\tOLDEST\tENQ/S\tACK/S")
	for _, q := range out.Queues {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%.1f\t%.1f\n", q.Queue, q.Ready, q.Leased, q.Delayed, q.Dead,
			formatAge(q.OldestReadyAgeMs), q.EnqueueRate, q.AckRate)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, q := range out.Queues {
		if q.LostTotal+q.CorruptTotal > 0 {
			fmt.Fprintf(stdout, "queue %s: store damage found: %d records lost, %d unreadable (dead-lettered); see mqnode-damage.log in the node's data dir\n",
				q.Queue, q.LostTotal, q.CorruptTotal)
		}
	}
	if err := writeKept(stdout, out); err != nil {
		return err
	}
	if err := writeThrottles(stdout, out); err != nil {
		return err
	}
	if err := writeRepl(stdout, out.Replication); err != nil {
		return err
	}
	return writeTotals(stdout, out)
}

// writeThrottles prints the throttles table (every throttle, in force or
// not, with its reason) and the backends table when handlers report calls.
func writeThrottles(w io.Writer, out statsJSON) error {
	fmt.Fprintln(w)
	tw := newTable(w)
	fmt.Fprintln(tw, "THROTTLE\tSCOPE\tSTATE\tLIMIT\tDEFERRED\tWHY")
	row := func(scope string, t throttleJSON) {
		state, limit := "open", "-"
		if t.Active {
			state = "LIMITING"
		}
		if t.Limit > 0 {
			limit = fmt.Sprintf("%.1f/s", t.Limit)
		}
		kind := t.Kind
		if t.Backend != "" {
			kind += ":" + t.Backend
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", kind, scope, state, limit, t.Deferred, t.Reason)
	}
	for _, t := range out.Throttles {
		row("node", t)
	}
	for _, q := range out.Queues {
		for _, t := range q.Throttles {
			row(q.Queue, t)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(out.Backends) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "BACKEND\tBUDGET/S\tMESH/S\tNODE/S\tSHARE/S\tNODES\tHELD BACK")
	for _, b := range out.Backends {
		budget, share := "-", "-"
		if b.Budget > 0 {
			budget, share = fmt.Sprintf("%.0f", b.Budget), fmt.Sprintf("%.1f", b.Share)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%s\t%d\t%v\n", b.Backend, budget, b.MeshUsage, b.NodeUsage, share, b.Nodes, b.Constrained)
	}
	return tw.Flush()
}

func throttlesJSON(ts []*mqnode.ThrottleState) []throttleJSON {
	out := make([]throttleJSON, 0, len(ts))
	for _, t := range ts {
		j := throttleJSON{Kind: t.Kind, Backend: t.Backend, Active: t.Active, Limit: t.Limit, Reason: t.Reason, Deferred: t.DeferredTotal}
		if t.SinceUnixMs != 0 {
			since := unixMsTime(t.SinceUnixMs)
			j.Since = &since
		}
		out = append(out, j)
	}
	return out
}

func newStatsJSON(rep *mqnode.StatsReply) statsJSON {
	info, queues := rep.Node, rep.Queues
	out := statsJSON{
		Throttles: throttlesJSON(rep.NodeThrottles),
		Backends:  make([]backendJSON, 0, len(rep.Backends)),
		Node: nodeJSON{
			Name: info.GetName(), IDC: info.GetIdc(), Version: info.GetVersion(), Durability: info.GetDurability(),
			StartedAt: unixMsTime(info.GetStartedUnixMs()), ServerID: info.GetServerId(), MaxPayload: info.GetMaxPayload(),
		},
		Queues:      make([]queueStatsJSON, 0, len(queues)),
		Replication: newReplJSON(rep.Replication),
	}
	for _, q := range queues {
		out.Queues = append(out.Queues, queueStatsJSON{
			Queue: q.Queue, Ready: q.Ready, Leased: q.Leased, Delayed: q.Delayed, Dead: q.Dead,
			OldestReadyAgeMs: q.OldestReadyAgeMs, EnqueueRate: q.EnqueueRate, AckRate: q.AckRate,
			EnqueuedTotal: q.EnqueuedTotal, AckedTotal: q.AckedTotal, NackedTotal: q.NackedTotal,
			ExpiredLeasesTotal: q.ExpiredLeasesTotal, DeadTotal: q.DeadTotal,
			RetriesDeferredTotal: q.RetriesDeferredTotal, Throttles: throttlesJSON(q.Throttles),
			LostTotal: q.LostTotal, CorruptTotal: q.CorruptTotal,
			KeepSettled: (time.Duration(q.KeepSettledMs) * time.Millisecond).String(), SettledKept: q.SettledKept, SettledBytes: q.SettledBytes,
		})
	}
	for _, b := range rep.Backends {
		out.Backends = append(out.Backends, backendJSON{Backend: b.Backend, Budget: b.Budget, NodeUsage: b.NodeUsage,
			MeshUsage: b.MeshUsage, Share: b.Share, Nodes: b.Nodes, Constrained: b.Constrained, Deferred: b.DeferredTotal})
	}
	return out
}
