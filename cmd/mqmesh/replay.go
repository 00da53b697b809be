package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mesh/meshpb"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// replayOptions are the flags of `mqmesh replay`.
type replayOptions struct {
	clientOptions
	Queue    string
	Since    string
	Until    string
	Filters  []string
	DryRun   bool
	ReplayID string
	Mesh     bool
	Batch    int

	since, until time.Time
	filters      []*wirepb.HeaderMatch
	now          func() time.Time
}

// replayJSON is the stable --json output of `mqmesh replay`.
type replayJSON struct {
	ReplayID string    `json:"replay_id"` // give it again to resume or repeat without duplicates
	Queue    string    `json:"queue"`
	Since    time.Time `json:"since"`
	Until    time.Time `json:"until"`
	DryRun   bool      `json:"dry_run"`
	// Totals over the nodes: settled tasks matching the span and filters,
	// tasks enqueued (dry run: that would be), and tasks skipped because
	// this replay id already replayed them.
	Matched  uint64 `json:"matched"`
	Enqueued uint64 `json:"enqueued"`
	Already  uint64 `json:"already"`
	// Nodes has one entry per node replayed on.
	Nodes []replayNodeJSON `json:"nodes"`
}

// replayNodeJSON is the outcome on one node.
type replayNodeJSON struct {
	IDC      string `json:"idc"`
	Node     string `json:"node"`
	Matched  uint64 `json:"matched"`
	Enqueued uint64 `json:"enqueued"`
	Already  uint64 `json:"already"`
	// WindowFrom is how far back the node's kept window reaches.
	WindowFrom time.Time `json:"window_from"`
	// Error is "" on success; "unknown queue" for a node without the queue
	// (with --mesh, not a failure).
	Error string `json:"error"`
}

func newReplayCommand() *cobra.Command {
	o := &replayOptions{now: time.Now}
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Re-enqueue the tasks a queue settled in a span of time",
		Long: `Re-enqueue, as new tasks, the tasks a queue acked or dead-lettered between
--since and --until (default: now). The queue must keep settled tasks
(keep_settled in the node config); a span before the kept window is refused
with how far back the window reaches.

Each new task has a new id, the payload and headers of its original, and
the headers mqmesh-replay-of (the original's id), mqmesh-replay-root and
mqmesh-replay-id. A replay is idempotent per --replay-id: running it again
(say after an interruption) adds only what is missing. Without --replay-id
one is made up and printed; give it to repeat the run safely.

--since and --until take an RFC 3339 time (2024-05-01T10:00:00Z) or a
duration meaning that long ago (10m, 2h). --filter header=value keeps only
tasks with that header value (repeatable: all must match). --mesh replays on
every node of the mesh (the members the node at --server knows), else on
that node only. Progress goes to stderr, the summary to stdout.

Replay is an admin operation (op "replay" on the node).`,
		Example: `  mqmesh replay --queue orders --since 10m --dry-run
  mqmesh replay --queue orders --since 2024-05-01T10:00:00Z --until 2024-05-01T11:00:00Z --replay-id fix-1234
  mqmesh replay --queue orders --since 1h --filter tenant=acme --mesh --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	o.bind(fs)
	fs.StringVarP(&o.Queue, "queue", "q", "", "queue to replay (required)")
	fs.StringVar(&o.Since, "since", "", "start of the span: RFC 3339 time or a duration ago, e.g. 10m (required)")
	fs.StringVar(&o.Until, "until", "", "end of the span (default: now)")
	fs.StringArrayVar(&o.Filters, "filter", nil, "replay only tasks with header=value (repeatable)")
	fs.BoolVar(&o.DryRun, "dry-run", false, "count what would be replayed, enqueue nothing")
	fs.StringVar(&o.ReplayID, "replay-id", "", "name of this replay; the same id never replays a task twice (default: a new one)")
	fs.BoolVar(&o.Mesh, "mesh", false, "replay on every node of the mesh")
	fs.IntVar(&o.Batch, "batch", mqnode.DefaultReplayChunk, "most tasks re-enqueued per request")
	return cmd
}

// parseWhen reads an RFC 3339 time or a duration meaning that long ago.
func parseWhen(flag, s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(strings.TrimPrefix(s, "-"))
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%s %q: want an RFC 3339 time (2024-05-01T10:00:00Z) or a duration ago (10m, 2h)", flag, s)
	}
	return now.Add(-d), nil
}

// Validate checks the flags and parses times and filters.
func (o *replayOptions) Validate() error {
	if err := o.clientOptions.Validate(); err != nil {
		return err
	}
	if err := validateQueue(o.Queue); err != nil {
		return err
	}
	if o.Since == "" {
		return errors.New("--since is required")
	}
	now := o.now()
	var err error
	if o.since, err = parseWhen("--since", o.Since, now); err != nil {
		return err
	}
	o.until = now
	if o.Until != "" {
		if o.until, err = parseWhen("--until", o.Until, now); err != nil {
			return err
		}
	}
	if o.until.Before(o.since) {
		return fmt.Errorf("--until %s is before --since %s", o.until.Format(time.RFC3339), o.since.Format(time.RFC3339))
	}
	o.filters = nil
	for _, f := range o.Filters {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return fmt.Errorf("--filter %q: want header=value", f)
		}
		o.filters = append(o.filters, &wirepb.HeaderMatch{Header: k, Value: v})
	}
	if o.Batch < 1 {
		return fmt.Errorf("--batch %d: must be at least 1", o.Batch)
	}
	if o.ReplayID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		o.ReplayID = "r-" + now.UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
	}
	return nil
}

func (o *replayOptions) run(ctx context.Context, stdout, stderr io.Writer) error {
	c, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	targets := []*mqnode.Client{c}
	if o.Mesh {
		if targets, err = o.meshNodes(ctx, c); err != nil {
			return err
		}
	}
	out := replayJSON{ReplayID: o.ReplayID, Queue: o.Queue, Since: o.since.UTC(), Until: o.until.UTC(), DryRun: o.DryRun,
		Nodes: []replayNodeJSON{}}
	var failed []string
	for _, t := range targets {
		n := o.replayNode(ctx, t, stderr)
		out.Matched += n.Matched
		out.Enqueued += n.Enqueued
		out.Already += n.Already
		out.Nodes = append(out.Nodes, n)
		if n.Error != "" && !(o.Mesh && n.Error == "unknown queue") {
			failed = append(failed, fmt.Sprintf("%s/%s: %s", n.IDC, n.Node, n.Error))
		}
	}
	if o.JSON {
		if err := writeJSON(stdout, out); err != nil {
			return err
		}
	} else {
		verb := "replayed"
		if o.DryRun {
			verb = "would replay"
		}
		fmt.Fprintf(stdout, "%s %d tasks of queue %s settled %s..%s on %d node(s): %d matched, %d already replayed (replay id %s)\n",
			verb, out.Enqueued, o.Queue, formatTime(out.Since), formatTime(out.Until), len(out.Nodes), out.Matched, out.Already, o.ReplayID)
	}
	if len(failed) > 0 {
		return fmt.Errorf("replay failed on %d node(s): %s (run again with --replay-id %s to finish)", len(failed), strings.Join(failed, "; "), o.ReplayID)
	}
	return nil
}

// replayNode runs the replay on one node, chunk by chunk.
func (o *replayOptions) replayNode(ctx context.Context, c *mqnode.Client, stderr io.Writer) replayNodeJSON {
	idc, name := c.Node()
	res := replayNodeJSON{IDC: idc, Node: name}
	req := &wirepb.ReplayRequest{Queue: o.Queue, SinceUnixMs: o.since.UnixMilli(), UntilUnixMs: o.until.UnixMilli(),
		Filters: o.filters, DryRun: o.DryRun, ReplayId: o.ReplayID, Limit: uint32(o.Batch)}
	tty := isTerminal(stderr)
	for {
		rctx, cancel := o.request(ctx)
		rep, err := c.Replay(rctx, req)
		cancel()
		if err != nil {
			res.Error = err.Error()
			if errors.Is(err, mqnode.ErrUnknownQueue) {
				res.Error = "unknown queue"
			}
			fmt.Fprintf(stderr, "replay on %s/%s: %s\n", idc, name, res.Error)
			return res
		}
		if res.WindowFrom.IsZero() {
			res.WindowFrom = unixMsTime(rep.WindowFromUnixMs)
			if o.since.Before(res.WindowFrom) {
				fmt.Fprintf(stderr, "note: %s/%s keeps settled tasks of %s for %s: the window reaches back to %s only\n",
					idc, name, o.Queue, time.Duration(rep.KeepMs)*time.Millisecond, formatTime(res.WindowFrom))
			}
		}
		res.Matched += rep.Matched
		res.Enqueued += rep.Enqueued
		res.Already += rep.Already
		if tty {
			fmt.Fprintf(stderr, "\rreplay on %s/%s: %d enqueued, %d already replayed, %d matched", idc, name, res.Enqueued, res.Already, res.Matched)
		}
		if len(rep.Next) == 0 {
			break
		}
		req.After = rep.Next
	}
	if tty {
		fmt.Fprintln(stderr)
	} else {
		fmt.Fprintf(stderr, "replay on %s/%s: %d enqueued, %d already replayed, %d matched\n", idc, name, res.Enqueued, res.Already, res.Matched)
	}
	return res
}

// meshNodes returns a client for every alive node member the node at c
// knows, over c's connection (NATS routes requests across the mesh).
func (o *replayOptions) meshNodes(ctx context.Context, c *mqnode.Client) ([]*mqnode.Client, error) {
	idc, name := c.Node()
	rctx, cancel := o.request(ctx)
	defer cancel()
	rep, err := mesh.FetchMembers(rctx, c.Conn(), idc, name)
	if err != nil {
		return nil, fmt.Errorf("--mesh: %w", err)
	}
	var out []*mqnode.Client
	for _, m := range rep.GetMembers() {
		meta := m.GetMeta()
		if meta.GetRole() == meshpb.Role_NODE && m.GetState() == meshpb.State_ALIVE {
			out = append(out, mqnode.NewClient(c.Conn(), meta.GetIdc(), meta.GetName()))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--mesh: the node knows no alive node member")
	}
	return out, nil
}

// writeKept prints, for `mqmesh stats`, the queues that keep settled tasks
// for replay: the window, the tasks kept and their bytes.
func writeKept(w io.Writer, out statsJSON) error {
	tw := newTable(w)
	rows := 0
	for _, q := range out.Queues {
		if q.KeepSettled == "0s" {
			continue
		}
		if rows == 0 {
			fmt.Fprintln(w)
			fmt.Fprintln(tw, "QUEUE\tKEEP_SETTLED\tKEPT\tBYTES")
		}
		rows++
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", q.Queue, q.KeepSettled, q.SettledKept, q.SettledBytes)
	}
	return tw.Flush()
}
