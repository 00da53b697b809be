package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/mqnode"
)

// Limits of `mqmesh dlq list`.
const (
	defaultDLQListLimit = 100
	dlqPageSize         = 1000 // the most the node returns per page
)

// dlqListOptions are the flags of `mqmesh dlq list`.
type dlqListOptions struct {
	clientOptions
	Queue string
	// Limit is the most records listed (0: all).
	Limit int
	// After lists the records after this dead_id (a cursor).
	After string
}

// dlqChangeOptions are the flags of `mqmesh dlq requeue` and `dlq purge`.
type dlqChangeOptions struct {
	clientOptions
	Queue string
	IDs   []string
	All   bool
}

// dlqListJSON is the stable --json output of `mqmesh dlq list`.
type dlqListJSON struct {
	Queue   string         `json:"queue"`
	Records []deadTaskJSON `json:"records"` // [] when none
	// Next is the cursor for --after when more records remain, else "".
	Next string `json:"next"`
}

// deadTaskJSON is one dead-letter record.
type deadTaskJSON struct {
	DeadID    string    `json:"dead_id"` // for requeue/purge --id
	TaskID    string    `json:"task_id"` // "" when the record is unreadable
	Attempts  uint32    `json:"attempts"`
	Reason    string    `json:"reason"`
	LastError string    `json:"last_error"`
	DeadAt    time.Time `json:"dead_at"`
	CreatedAt time.Time `json:"created_at"`
	// PayloadBytes is the size of the task's payload.
	PayloadBytes int `json:"payload_bytes"`
}

// dlqChangeJSON is the stable --json output of requeue and purge.
type dlqChangeJSON struct {
	Queue    string `json:"queue"`
	Op       string `json:"op"` // "requeue" or "purge"
	Affected uint64 `json:"affected"`
}

func newDLQCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect and settle a queue's dead letter queue",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(
		newDLQListCommand(),
		newDLQChangeCommand(dlqOp{"requeue", "requeued", "Make dead-letter records ready tasks again (attempts reset)"}),
		newDLQChangeCommand(dlqOp{"purge", "purged", "Delete dead-letter records"}),
	)
	return cmd
}

func newDLQListCommand() *cobra.Command {
	o := &dlqListOptions{}
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List dead-letter records of a queue, oldest first",
		Example: `  mqmesh dlq list --queue orders --limit 20`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	o.bind(fs)
	fs.StringVarP(&o.Queue, "queue", "q", "", "queue (required)")
	fs.IntVar(&o.Limit, "limit", defaultDLQListLimit, "most records to list (0: all)")
	fs.StringVar(&o.After, "after", "", "list the records after this dead_id")
	return cmd
}

// Validate checks the flags.
func (o *dlqListOptions) Validate() error {
	if err := o.clientOptions.Validate(); err != nil {
		return err
	}
	if o.Limit < 0 {
		return fmt.Errorf("--limit %d: must not be negative", o.Limit)
	}
	return validateQueue(o.Queue)
}

func (o *dlqListOptions) run(ctx context.Context, stdout, stderr io.Writer) error {
	c, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	out := dlqListJSON{Queue: o.Queue, Records: []deadTaskJSON{}, Next: o.After}
	for {
		page := dlqPageSize
		if o.Limit > 0 {
			page = min(page, o.Limit-len(out.Records))
		}
		rctx, cancel := o.request(ctx)
		recs, next, err := c.DLQList(rctx, o.Queue, out.Next, page)
		cancel()
		if err != nil {
			return fmt.Errorf("dlq list: %w", err)
		}
		for _, d := range recs {
			out.Records = append(out.Records, newDeadTaskJSON(d))
		}
		out.Next = next
		if next == "" || len(out.Records) == o.Limit {
			break
		}
	}
	if o.JSON {
		return writeJSON(stdout, out)
	}
	tw := newTable(stdout)
	fmt.Fprintln(tw, "DEAD_ID\tTASK_ID\tATTEMPTS\tDEAD_AT\tREASON")
	for _, d := range out.Records {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", d.DeadID, orDash(d.TaskID), d.Attempts, formatTime(d.DeadAt), oneLine(d.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if out.Next != "" {
		fmt.Fprintf(stderr, "more records follow: add --after %s\n", out.Next)
	}
	return nil
}

func newDeadTaskJSON(d *mqnode.DeadTask) deadTaskJSON {
	t := d.GetTask()
	return deadTaskJSON{
		DeadID: d.GetDeadId(), TaskID: t.GetId(), Attempts: t.GetAttempt(), Reason: d.GetReason(),
		LastError: t.GetLastError(), DeadAt: unixMsTime(d.GetDeadUnixMs()),
		CreatedAt: unixMsTime(t.GetCreatedUnixMs()), PayloadBytes: len(t.GetPayload()),
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// dlqOp describes `dlq requeue` or `dlq purge`.
type dlqOp struct {
	name  string // the command
	done  string // past tense, for the result line
	short string
}

// newDLQChangeCommand builds `dlq requeue` or `dlq purge`.
func newDLQChangeCommand(op dlqOp) *cobra.Command {
	o := &dlqChangeOptions{}
	cmd := &cobra.Command{
		Use:     op.name,
		Short:   op.short,
		Example: fmt.Sprintf("  mqmesh dlq %[1]s --queue orders --id 000000000000002a\n  mqmesh dlq %[1]s --queue orders --all", op.name),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.run(cmd.Context(), op, cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	o.bind(fs)
	fs.StringVarP(&o.Queue, "queue", "q", "", "queue (required)")
	fs.StringArrayVar(&o.IDs, "id", nil, "dead_id of a record (repeatable)")
	fs.BoolVar(&o.All, "all", false, "every record of the queue")
	return cmd
}

// Validate checks the flags: exactly one of --id and --all, so that no
// record is touched by accident.
func (o *dlqChangeOptions) Validate() error {
	if err := o.clientOptions.Validate(); err != nil {
		return err
	}
	if err := validateQueue(o.Queue); err != nil {
		return err
	}
	switch {
	case o.All && len(o.IDs) > 0:
		return errors.New("--id and --all: give one")
	case !o.All && len(o.IDs) == 0:
		return errors.New("give --id DEAD_ID (repeatable) or --all")
	}
	for _, id := range o.IDs {
		if id == "" {
			return errors.New("--id: empty dead_id")
		}
	}
	return nil
}

func (o *dlqChangeOptions) run(ctx context.Context, op dlqOp, stdout io.Writer) error {
	c, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	change := c.DLQPurge
	if op.name == "requeue" {
		change = c.DLQRequeue
	}
	rctx, cancel := o.request(ctx)
	defer cancel()
	n, err := change(rctx, o.Queue, o.IDs...)
	if err != nil {
		return fmt.Errorf("dlq %s: %w", op.name, err)
	}
	if o.JSON {
		return writeJSON(stdout, dlqChangeJSON{Queue: o.Queue, Op: op.name, Affected: n})
	}
	_, err = fmt.Fprintf(stdout, "%s %d dead-letter records of queue %s\n", op.done, n, o.Queue)
	return err
}
