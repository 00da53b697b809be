package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/tracepb"
)

// defaultTraceWait is how long `mqmesh trace` waits for the owner to answer.
const defaultTraceWait = 2 * time.Second

// traceOptions are the flags of `mqmesh trace`.
type traceOptions struct {
	clientOptions
	Wait time.Duration
}

// traceJSON is the stable --json output of `mqmesh trace`.
type traceJSON struct {
	TaskID string           `json:"task_id"`
	IDC    string           `json:"idc"`  // the node that owns the task
	Node   string           `json:"node"` //
	Events []traceEventJSON `json:"events"`
	// Buddy replication of the task's queue on its node: the buddy the
	// task is copied to (idc.name), the mode and the replication state;
	// empty when the queue is not replicated.
	ReplicatedTo string `json:"replicated_to,omitempty"`
	ReplMode     string `json:"repl_mode,omitempty"`
	ReplState    string `json:"repl_state,omitempty"`
}

// traceEventJSON is one step (see mqnode/tracepb.Event for each field).
type traceEventJSON struct {
	Time        time.Time `json:"time"`
	Kind        string    `json:"kind"`
	Queue       string    `json:"queue"`
	Attempt     uint32    `json:"attempt,omitempty"`
	Producer    string    `json:"producer,omitempty"`
	Worker      string    `json:"worker,omitempty"`
	Host        string    `json:"host,omitempty"`
	WorkerIDC   string    `json:"worker_idc,omitempty"`
	Tier        string    `json:"tier,omitempty"`
	Error       string    `json:"error,omitempty"`
	DurationMs  int64     `json:"duration_ms,omitempty"`
	DelayMs     int64     `json:"delay_ms,omitempty"`
	Parent      string    `json:"parent,omitempty"`
	Child       string    `json:"child,omitempty"`
	TraceParent string    `json:"traceparent,omitempty"`
}

func newTraceCommand() *cobra.Command {
	o := &traceOptions{}
	cmd := &cobra.Command{
		Use:   "trace TASK_ID",
		Short: "Show the life of one task across the mesh",
		Long: `Show every step of one task: its enqueue (node, producer), each lease
(worker id, host, IDC and tier: local, idc or other), each outcome with its
error and how long the lease lasted, retries and deferrals, the subtasks it
spawned, and its ack or dead letter.

The request goes to every node the server reaches (routes and gateways
carry it through the mesh); the node that owns the task answers from its
trace store, which keeps events for the node's trace retention (default
1h; node config trace.retention). The task's W3C traceparent, if it had one, is shown with its enqueue.`,
		Example: `  mqmesh trace 0193a4c2-7d1e-7b3a-9f00-5e1d2c3b4a59
  mqmesh trace --server nats://10.0.0.5:4222 --json 0193a4c2-7d1e-7b3a-9f00-5e1d2c3b4a59`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			if o.Wait <= 0 {
				return fmt.Errorf("--wait %s: must be positive", o.Wait)
			}
			return o.run(cmd.Context(), cmd.OutOrStdout(), args[0])
		},
	}
	o.bind(cmd.Flags())
	cmd.Flags().DurationVar(&o.Wait, "wait", defaultTraceWait, "how long to wait for the node that owns the task")
	return cmd
}

func (o *traceOptions) run(ctx context.Context, w io.Writer, id string) error {
	c, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	reps, err := mqnode.FindTrace(ctx, c.Conn(), id, o.Wait)
	if err != nil {
		return err
	}
	if len(reps) == 0 {
		return fmt.Errorf("task %s: no node answered with its trace within %s (unknown id, older than the trace retention, or a task outside trace.sample that has not failed: pending or done)", id, o.Wait)
	}
	out := toTraceJSON(id, reps[0])
	if o.JSON {
		return writeJSON(w, out)
	}
	return printTrace(w, out)
}

func toTraceJSON(id string, rep *tracepb.TraceReply) traceJSON {
	out := traceJSON{TaskID: id, IDC: rep.Idc, Node: rep.Node, Events: make([]traceEventJSON, 0, len(rep.Events)),
		ReplicatedTo: rep.ReplicatedTo, ReplMode: rep.ReplMode, ReplState: rep.ReplState}
	for _, e := range rep.Events {
		out.Events = append(out.Events, traceEventJSON{
			Time: time.UnixMilli(e.TimeUnixMs).UTC(), Kind: e.Kind, Queue: e.Queue, Attempt: e.Attempt,
			Producer: e.Producer, Worker: e.Worker, Host: e.Host, WorkerIDC: e.WorkerIdc, Tier: e.Tier,
			Error: e.Error, DurationMs: e.DurationMs, DelayMs: e.DelayMs, Parent: e.Parent, Child: e.Child,
			TraceParent: e.Traceparent,
		})
	}
	return out
}

func printTrace(w io.Writer, t traceJSON) error {
	queue := ""
	if len(t.Events) > 0 {
		queue = t.Events[0].Queue
	}
	fmt.Fprintf(w, "task %s on node %s/%s, queue %s: %d events\n", t.TaskID, t.IDC, t.Node, queue, len(t.Events))
	if t.ReplMode != "" {
		to := t.ReplicatedTo
		if to == "" {
			to = "no buddy"
		}
		fmt.Fprintf(w, "replicated (%s) to %s, replication %s\n", t.ReplMode, to, t.ReplState)
	}
	tw := newTable(w)
	var first time.Time
	for i, e := range t.Events {
		if i == 0 {
			first = e.Time
		}
		fmt.Fprintf(tw, "  %s\t+%s\t%s\t%s\n", e.Time.Format("15:04:05.000"), e.Time.Sub(first).Round(time.Millisecond), e.Kind, describeEvent(e))
	}
	return tw.Flush()
}

var tierWords = map[string]string{"local": "its own node's worker", "idc": "same IDC", "other": "other IDC"}

func describeEvent(e traceEventJSON) string {
	var b strings.Builder
	add := func(format string, a ...any) {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, format, a...)
	}
	if e.Attempt > 0 {
		add("attempt %d", e.Attempt)
	}
	if e.Producer != "" {
		add("producer %s", e.Producer)
	}
	switch {
	case e.Parent != "" && e.Kind == mqnode.TraceReplayOf:
		add("replay of %s", e.Parent)
	case e.Parent != "":
		add("subtask of %s", e.Parent)
	}
	if e.Worker != "" {
		where := e.Worker
		if e.Host != "" {
			where += " on " + e.Host
		}
		if e.WorkerIDC != "" {
			where += " in " + e.WorkerIDC
		}
		if tw := tierWords[e.Tier]; tw != "" {
			where += " (" + tw + ")"
		}
		add("worker %s", where)
	}
	if e.DurationMs > 0 {
		add("after %s", time.Duration(e.DurationMs)*time.Millisecond)
	}
	if e.DelayMs > 0 {
		add("ready again in %s", time.Duration(e.DelayMs)*time.Millisecond)
	}
	switch {
	case e.Child != "" && e.Kind == mqnode.TraceReplayed:
		add("replayed as %s", e.Child)
	case e.Child != "":
		add("spawned %s", e.Child)
	}
	if e.Error != "" {
		add("error: %s", e.Error)
	}
	if e.TraceParent != "" {
		add("traceparent %s", e.TraceParent)
	}
	return b.String()
}
