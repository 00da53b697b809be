package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/sim"
)

type simOptions struct {
	scenario      string
	out           string
	json          bool
	modes         []string
	printScenario bool
	logLevel      string
	quiet         bool
	// --model: the discrete-event scale model (simmodel.go).
	model         bool
	sizes         []int
	idcs          int
	modelDuration time.Duration
	modelRate     float64
	modelFault    string
	modelFilter   string
	modelExtras   sim.ModelExtras
	seed          uint64
}

func (o *simOptions) Validate() error {
	for _, m := range o.modes {
		if !slices.Contains(sim.Modes, m) {
			return fmt.Errorf("--modes: %q: want some of %s", m, strings.Join(sim.Modes, ", "))
		}
	}
	if _, err := simLogLevel(o.logLevel); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	return nil
}

// simLogLevel reads a log level; "off" silences the simulated components
// (the faults make them log plenty of expected errors).
func simLogLevel(s string) (slog.Level, error) {
	if s == "off" {
		return slog.LevelError + 100, nil
	}
	var lvl slog.Level
	err := lvl.UnmarshalText([]byte(s))
	return lvl, err
}

func newSimCommand() *cobra.Command {
	o := &simOptions{}
	cmd := &cobra.Command{
		Use:   "sim [SCENARIO.yaml]",
		Short: "Simulate an IDC failure or an overload on the real components and report what it does to backlog and latency",
		Long: `sim builds a whole mesh in this process on loopback from the real packages
(embedded NATS servers with routes and gateways, Badger stores, memberlist,
backlog publishers and views, worker pools), plays a scenario's load and
fault timeline, then plays it again in the scenario's other modes: baseline
(cross-machine help switched off: every pool pulls only its own node),
unthrottled (the mesh with every node's overload protection off) and/or
replicated (every node's tasks copied to a buddy, replicas: 1 sync).

Without a file it runs the embedded default scenario (configs/sim/default.yaml):
3 IDCs x 3 hosts; normal, one IDC's handlers degraded, two IDCs' pools lost,
recovery. configs/sim/ also holds the overload scenarios: retry-storm.yaml
(a backend fails 100% then recovers), backend-budget.yaml (3 nodes share a
backend's budget), cpu-hog.yaml (a CPU hog with the CPU throttle on), and
bad-deploy.yaml (handlers ack without working, then a replay repairs it), and
lose-host.yaml (a host lost with its disk, unreplicated and replicated). It
prints the phase table and the work table (attempts, retries, backend calls,
enqueue latency, node progress) on stdout (or --json) and writes
report.html, backlog.svg, backlog.png and series.csv to --out. It fails
when a task was lost, except those on a disk lose-host wiped in a mode
without replication (the fault's expected outcome).

With --model it runs the scale model instead: a discrete-event run in
virtual time of 100 to 10,000+ hosts (--sizes) driving the same scheduling
cores as the real components (worker.Scheduler, backlog.Planner) and real
backlog views, and prints one row per size (notices per worker, locality, time to
first help, helper balance, backlog, latency).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.scenario = args[0]
			}
			if err := o.Validate(); err != nil {
				return err
			}
			if o.model || modelFlagsSet(cmd) {
				return runSimModel(cmd, o)
			}
			return runSim(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.out, "out", "o", "sim-report", "directory for report.html, backlog.svg/png and series.csv")
	f.BoolVar(&o.json, "json", false, "print the summary as JSON")
	f.StringSliceVar(&o.modes, "modes", nil, "modes to run (mesh, baseline, unthrottled; default: the scenario's)")
	f.BoolVar(&o.printScenario, "print-scenario", false, "print the scenario (the default one without a file) and exit")
	f.StringVar(&o.logLevel, "log-level", "off", "log level of the simulated components (off, debug, info, warn, error)")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "no progress on stderr")
	addModelFlags(f, o)
	return cmd
}

func runSim(ctx context.Context, o *simOptions, stdout, stderr io.Writer) error {
	var s sim.Scenario
	var err error
	if o.scenario == "" {
		if o.printScenario {
			_, err := stdout.Write(sim.DefaultYAML())
			return err
		}
		s = sim.Default()
	} else if s, err = sim.LoadScenario(o.scenario); err != nil {
		return err
	}
	if o.printScenario {
		b, err := os.ReadFile(o.scenario)
		if err == nil {
			_, err = stdout.Write(b)
		}
		return err
	}
	if len(o.modes) > 0 {
		s.Modes = o.modes
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	lvl, _ := simLogLevel(o.logLevel)
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	opt := sim.Options{Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))}
	if !o.quiet {
		fmt.Fprintf(stderr, "mqmesh sim: scenario %s, %d IDCs, %s of load, modes %s\n", s.Name, len(s.Topology.IDCs), s.Load.Duration.D(), strings.Join(s.Modes, ", "))
		var last time.Time
		opt.Progress = func(mode string, x sim.Sample) {
			if time.Since(last) < time.Second {
				return
			}
			last = time.Now()
			idcs := make([]string, 0, len(x.Backlog))
			for idc := range x.Backlog {
				idcs = append(idcs, idc)
			}
			sort.Strings(idcs)
			var b strings.Builder
			for _, idc := range idcs {
				fmt.Fprintf(&b, " %s=%d", idc, x.Backlog[idc])
			}
			fmt.Fprintf(stderr, "[%s] %5.1fs  %-18s backlog%s  done %d  retries %d  p99 %.0fms\n", mode, x.T, x.Phase, b.String(), x.Done, x.Retries, x.P99Ms)
		}
	}
	rep, err := sim.Run(ctx, s, opt)
	if err != nil {
		return err
	}
	if err := writeSimFiles(rep, s, o.out); err != nil {
		return err
	}
	if o.json {
		err = writeJSON(stdout, rep)
	} else {
		err = rep.WriteTable(stdout)
		fmt.Fprintf(stdout, "report: %s\n", filepath.Join(o.out, "report.html"))
	}
	if err != nil {
		return err
	}
	var lost int
	for _, m := range rep.Modes {
		lost += m.Lost
		if m.Mode != sim.ModeReplicated {
			// A disk lose-host wiped held the only copy: losing those is
			// the fault's outcome without replication, not a failure.
			lost -= m.LostOnLostDisk
		}
	}
	if lost > 0 {
		return fmt.Errorf("%d tasks lost", lost)
	}
	return nil
}

func writeSimFiles(rep *sim.Report, s sim.Scenario, dir string) error {
	write := func(name string, f func(io.Writer) error) error {
		fh, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		return errors.Join(f(fh), fh.Close())
	}
	bytesOf := func(b []byte, err error) func(io.Writer) error {
		return func(w io.Writer) error {
			if err != nil {
				return err
			}
			_, err := w.Write(b)
			return err
		}
	}
	return errors.Join(
		write("report.html", func(w io.Writer) error { return rep.WriteHTML(w, s.IDCNames()) }),
		write("series.csv", func(w io.Writer) error { return rep.WriteCSV(w, s.IDCNames()) }),
		write("backlog.svg", bytesOf(rep.BacklogChart("svg"))),
		write("backlog.png", bytesOf(rep.BacklogChart("png"))),
	)
}
