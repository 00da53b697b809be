package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/internal/subject"
)

// backlogWatchOptions are the flags of `mqmesh backlog watch`.
type backlogWatchOptions struct {
	clientOptions
	// Filter is the filter file ("" for backlog.DefaultFilters()).
	Filter string
	// IDC and Node are the worker's own, substituted for {idc} and {node}
	// in the filter. Default: the IDC and name of the node at --server.
	IDC, Node string
	// idcSet and nodeSet record that the flags were given (an empty --node
	// means a worker-only host).
	idcSet, nodeSet bool
	// Interval is the refresh period of the table.
	Interval time.Duration
	// Once prints one table after one interval and exits.
	Once bool
}

// backlogWatchJSON is one --json line of `mqmesh backlog watch`: what a
// worker with the filter sees at Time. Counters are cumulative since the
// command started.
type backlogWatchJSON struct {
	Time time.Time `json:"time"`
	// IDC and Node are the worker's (what {idc} and {node} stood for).
	IDC  string `json:"idc"`
	Node string `json:"node"`
	// Entries are the node backlogs in the view, sorted by idc, node,
	// queue; [] when none.
	Entries []backlogEntryJSON `json:"entries"`
	// Notices counts notices accepted per tier (heartbeats included).
	Notices backlogTierCountsJSON `json:"notices"`
	// Dropped counts notices dropped per tier by the filter's max_rate.
	Dropped backlogTierCountsJSON `json:"dropped"`
	// Malformed counts notices that did not decode or match their subject.
	Malformed uint64 `json:"malformed"`
}

// backlogTierCountsJSON is a counter per tier.
type backlogTierCountsJSON struct {
	Local  uint64 `json:"local"`
	IDC    uint64 `json:"idc"`
	Global uint64 `json:"global"`
}

// backlogEntryJSON is one queue on one node as the worker sees it.
type backlogEntryJSON struct {
	IDC   string `json:"idc"`
	Node  string `json:"node"`
	Queue string `json:"queue"`
	// Tier the freshest notice came on: local, idc or global.
	Tier string `json:"tier"`
	// Ready is the node's ready count as last announced.
	Ready uint64 `json:"ready"`
	// Level is 1 + log2(ready/threshold) of the tier.
	Level uint32 `json:"level"`
	// OldestReadyMs is how long the oldest ready task had waited.
	OldestReadyMs int64 `json:"oldest_ready_ms"`
	// EnqueueRate and DrainRate are tasks per second on the node.
	EnqueueRate float64 `json:"enqueue_rate"`
	DrainRate   float64 `json:"drain_rate"`
	// AgeMs is how long ago the worker learned this entry.
	AgeMs int64 `json:"age_ms"`
	// NATSClient is where the node takes clients.
	NATSClient string `json:"nats_client"`
}

func newBacklogCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backlog",
		Short: "Look at the backlog broadcast",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newBacklogWatchCommand())
	return cmd
}

func newBacklogWatchCommand() *cobra.Command {
	o := &backlogWatchOptions{clientOptions: clientOptions{sec: securityFlags{def: secrets.RoleWorker}}}
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Show, live, the backlog a worker with a filter would see",
		Long: `Connect to a node, subscribe to the backlog broadcast through a filter file
exactly as a worker on that node's host would, and print the worker's view
every --interval: per node and queue, the tier the freshest notice came on,
tasks ready, the age of the oldest, enqueue and drain rates (tasks/s) and
how long ago the worker learned it; with counts of notices accepted and
dropped (max_rate) per tier since the start.

{idc} and {node} in the filter stand for the node's IDC and name unless
--idc or --node is given (--node "" watches as a worker-only host). The
filter file is reloaded when it changes or on SIGHUP; a bad file is refused
and the filters in force stay. Without --filter the default filters are
used: the local and IDC tiers.

On a terminal the screen is redrawn; otherwise the tables follow each
other, separated by a blank line. --json prints one JSON object per
interval. --once prints once, after one interval, and exits. SIGINT stops.`,
		Example: `  mqmesh backlog watch
  mqmesh backlog watch --server nats://10.0.0.5:4222 --filter configs/filters/everything.yaml
  mqmesh backlog watch --filter configs/filters/local-idc.yaml --once --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.idcSet, o.nodeSet = cmd.Flags().Changed("idc"), cmd.Flags().Changed("node")
			if err := o.Validate(); err != nil {
				return err
			}
			return o.run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	o.bind(cmd.Flags())
	fs := cmd.Flags()
	fs.StringVarP(&o.Filter, "filter", "f", "", "backlog filter file (see configs/filters/; default: local and IDC tiers)")
	fs.StringVar(&o.IDC, "idc", "", "the worker's IDC, for {idc} (default: the node's)")
	fs.StringVar(&o.Node, "node", "", "the worker's node, for {node} (default: the node's; \"\": a worker-only host)")
	fs.DurationVar(&o.Interval, "interval", time.Second, "refresh period")
	fs.BoolVar(&o.Once, "once", false, "print once, after one interval, and exit")
	return cmd
}

// Validate checks the flags.
func (o *backlogWatchOptions) Validate() error {
	var errs []error
	errs = append(errs, o.clientOptions.Validate())
	if o.Interval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("--interval %s: at least 10ms", o.Interval))
	}
	if o.idcSet {
		errs = append(errs, subject.Validate("--idc", o.IDC))
	}
	if o.nodeSet && o.Node != "" {
		errs = append(errs, subject.Validate("--node", o.Node))
	}
	return errors.Join(errs...)
}

func (o *backlogWatchOptions) run(ctx context.Context, stdout, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	filters := backlog.DefaultFilters()
	if o.Filter != "" {
		// Read it before connecting: a bad file fails at once.
		f, err := backlog.LoadFilters(o.Filter)
		if err != nil {
			return err
		}
		filters = f
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	idc, node := c.Node()
	if o.idcSet {
		idc = o.IDC
	}
	if o.nodeSet {
		node = o.Node
	}
	view := backlog.NewView(nil)
	// With a filter file, the watcher follows it (re-reads and re-applies
	// it when it changes).
	w := backlog.NewWatcher(c.Conn(), view, backlog.WatcherConfig{IDC: idc, Node: node, Filters: filters, FilterFile: o.Filter, Logger: log})
	defer w.Kill()
	if err := w.Start(ctx); err != nil {
		if o.Filter != "" {
			return fmt.Errorf("filter file %s: %w", o.Filter, err)
		}
		return err
	}
	hup := make(chan os.Signal, 1)
	if o.Filter != "" {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	redraw := !o.JSON && isTerminal(stdout)
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	for first := true; ; first = false {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			_ = w.Reload() // a refused file is logged; the old filters stay
			continue
		case <-tick.C:
		}
		snap := backlogSnapshot(w, idc, node, time.Now())
		var perr error
		switch {
		case o.JSON:
			perr = writeBacklogJSONLine(stdout, snap)
		default:
			perr = writeBacklogTable(stdout, snap, redraw, first)
		}
		if perr != nil || o.Once {
			return perr
		}
	}
}

// backlogSnapshot renders the watcher's view at now.
func backlogSnapshot(w *backlog.Watcher, idc, node string, now time.Time) backlogWatchJSON {
	view := w.View()
	entries := view.Entries()
	st := view.Stats()
	out := backlogWatchJSON{
		Time: now.UTC(), IDC: idc, Node: node,
		Entries:   make([]backlogEntryJSON, 0, len(entries)),
		Notices:   backlogTierCounts(st.Accepted),
		Dropped:   backlogTierCounts(st.Dropped),
		Malformed: w.Malformed(),
	}
	for _, e := range entries {
		out.Entries = append(out.Entries, backlogEntryJSON{
			IDC: e.IDC, Node: e.Node, Queue: e.Queue, Tier: e.Tier.String(), Ready: e.Ready, Level: e.Level,
			OldestReadyMs: e.OldestReady.Milliseconds(), EnqueueRate: e.EnqueueRate, DrainRate: e.DrainRate,
			AgeMs: max(e.Age(now), 0).Milliseconds(), NATSClient: e.NATSClient,
		})
	}
	return out
}

func backlogTierCounts(c [backlog.NumTiers]uint64) backlogTierCountsJSON {
	return backlogTierCountsJSON{Local: c[backlog.TierHost], IDC: c[backlog.TierIDC], Global: c[backlog.TierGlobal]}
}

// writeBacklogJSONLine prints one compact JSON object and a newline.
func writeBacklogJSONLine(w io.Writer, s backlogWatchJSON) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// writeBacklogTable prints one table: on a terminal after clearing the
// screen, otherwise after a blank line (but the first).
func writeBacklogTable(w io.Writer, s backlogWatchJSON, redraw, first bool) error {
	var b strings.Builder
	switch {
	case redraw:
		b.WriteString("\x1b[H\x1b[2J")
	case !first:
		b.WriteString("\n")
	}
	node := s.Node
	if node == "" {
		node = "(worker-only host)"
	}
	fmt.Fprintf(&b, "%s  worker %s/%s  notices local %d, idc %d, global %d  dropped %d/%d/%d\n",
		s.Time.Format(time.RFC3339), s.IDC, node, s.Notices.Local, s.Notices.IDC, s.Notices.Global,
		s.Dropped.Local, s.Dropped.IDC, s.Dropped.Global)
	tw := newTable(&b)
	fmt.Fprintln(tw, "IDC\tNODE\tQUEUE\tTIER\tREADY\tOLDEST\tENQ/S\tDRAIN/S\tAGE")
	for _, e := range s.Entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%.1f\t%.1f\t%s\n", e.IDC, e.Node, e.Queue, e.Tier, e.Ready,
			formatAge(e.OldestReadyMs), e.EnqueueRate, e.DrainRate, formatAge(max(e.AgeMs, 1)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(s.Entries) == 0 {
		b.WriteString("(no backlog in view)\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
