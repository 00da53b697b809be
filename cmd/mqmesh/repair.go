package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/mqnode"
)

// repairOptions are the flags of `mqmesh node repair`.
type repairOptions struct {
	Data string
	Out  string
	JSON bool
}

func newNodeRepairCommand() *cobra.Command {
	o := &repairOptions{}
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Salvage a damaged node store into a fresh one",
		Long: `Salvage what can be read from a damaged node store (--data) into a new
store (--out, default <data>.repaired). The damaged store is not changed.

Use it when a node refuses to start because its store is damaged, or
reported records lost at start. Repair reads the value logs and write-ahead
logs entry by entry and the tables block by block, checking each one's
checksum, keeps the newest readable version of every record, and writes the
live ones into the new store. A task whose record cannot be read becomes a
dead letter that says why. Tasks acked in a lost part of a log may come back
(at-least-once). Dedup keys are not carried over.

Stop the node first. Then put the new store in place of the old one:
  mv DATA DATA.damaged && mv DATA.repaired DATA`,
		Example: `  mqmesh node repair --data ./data
  mqmesh node repair --data /var/lib/mqmesh --out /var/lib/mqmesh.new --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.Data, "data", "", "data dir of the damaged store (required)")
	fs.StringVar(&o.Out, "out", "", "new store to write (must not exist; default <data>.repaired)")
	fs.BoolVar(&o.JSON, "json", false, "print the report as JSON")
	return cmd
}

func (o *repairOptions) run(stdout, stderr io.Writer) error {
	if o.Data == "" {
		return errors.New("--data is required")
	}
	if o.Out == "" {
		o.Out = filepath.Clean(o.Data) + ".repaired"
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rep, err := mqnode.Repair(o.Data, o.Out, log)
	if err != nil {
		return err
	}
	if o.JSON {
		return writeJSON(stdout, rep)
	}
	tw := newTable(stdout)
	fmt.Fprintln(tw, "FILE\tENTRIES\tPROBLEM")
	for _, f := range rep.Files {
		p := f.Problem
		if p == "" {
			p = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", f.File, f.Entries, p)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %d tasks, %d dead letters (%d of them unreadable tasks), %d queues; %d other records unreadable\n",
		rep.Out, rep.Tasks, rep.Dead, rep.NewDead, len(rep.Queues), rep.Lost)
	fmt.Fprintf(stdout, "next: stop the node, then  mv %s %s.damaged && mv %s %s\n", o.Data, filepath.Clean(o.Data), rep.Out, o.Data)
	return nil
}
