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
}

// statsJSON is the stable --json output of `mqmesh stats`.
type statsJSON struct {
	Node   nodeJSON         `json:"node"`
	Queues []queueStatsJSON `json:"queues"` // sorted by name; [] when none
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
}

func newStatsCommand() *cobra.Command {
	o := &statsOptions{}
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show the queues of a node",
		Long: `Show per-queue statistics of one node: tasks ready, leased, delayed and
dead, the age of the oldest ready task, and enqueue and ack rates (tasks/s,
10 s moving averages).`,
		Example: `  mqmesh stats
  mqmesh stats --server nats://10.0.0.5:4222 --queue orders --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.run(cmd.Context(), cmd.OutOrStdout())
		},
	}
	o.bind(cmd.Flags())
	cmd.Flags().StringVarP(&o.Queue, "queue", "q", "", "only this queue (default: all)")
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

func (o *statsOptions) run(ctx context.Context, stdout io.Writer) error {
	c, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	rctx, cancel := o.request(ctx)
	defer cancel()
	info, queues, err := c.Stats(rctx, o.Queue)
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	out := newStatsJSON(info, queues)
	if o.JSON {
		return writeJSON(stdout, out)
	}
	tw := newTable(stdout)
	fmt.Fprintln(tw, "QUEUE\tREADY\tLEASED\tDELAYED\tDEAD\tOLDEST\tENQ/S\tACK/S")
	for _, q := range out.Queues {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%.1f\t%.1f\n", q.Queue, q.Ready, q.Leased, q.Delayed, q.Dead,
			formatAge(q.OldestReadyAgeMs), q.EnqueueRate, q.AckRate)
	}
	return tw.Flush()
}

func newStatsJSON(info *mqnode.NodeInfo, queues []*mqnode.QueueStats) statsJSON {
	out := statsJSON{
		Node: nodeJSON{
			Name: info.GetName(), IDC: info.GetIdc(), Version: info.GetVersion(), Durability: info.GetDurability(),
			StartedAt: unixMsTime(info.GetStartedUnixMs()), ServerID: info.GetServerId(), MaxPayload: info.GetMaxPayload(),
		},
		Queues: make([]queueStatsJSON, 0, len(queues)),
	}
	for _, q := range queues {
		out.Queues = append(out.Queues, queueStatsJSON{
			Queue: q.Queue, Ready: q.Ready, Leased: q.Leased, Delayed: q.Delayed, Dead: q.Dead,
			OldestReadyAgeMs: q.OldestReadyAgeMs, EnqueueRate: q.EnqueueRate, AckRate: q.AckRate,
			EnqueuedTotal: q.EnqueuedTotal, AckedTotal: q.AckedTotal, NackedTotal: q.NackedTotal,
			ExpiredLeasesTotal: q.ExpiredLeasesTotal, DeadTotal: q.DeadTotal,
		})
	}
	return out
}
