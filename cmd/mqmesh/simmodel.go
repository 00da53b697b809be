package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/sim"
)

// modelFlags are the flags of `mqmesh sim --model`.
var modelFlags = []string{"sizes", "idcs", "model-duration", "model-rate", "model-fault", "model-filter", "seed",
	"model-error-rate", "model-worker-only", "model-crash", "model-slow-link"}

func addModelFlags(f *pflag.FlagSet, o *simOptions) {
	f.BoolVar(&o.model, "model", false, "run the discrete-event scale model (the real policy code in virtual time) at each of --sizes instead")
	f.IntSliceVar(&o.sizes, "sizes", []int{100, 1000, 3000}, "--model: mesh sizes (hosts) to run")
	f.IntVar(&o.idcs, "idcs", 3, "--model: number of IDCs")
	f.DurationVar(&o.modelDuration, "model-duration", time.Minute, "--model: virtual duration of the load (the fault is its middle third)")
	f.Float64Var(&o.modelRate, "model-rate", 20, "--model: tasks/s enqueued per host (Poisson)")
	f.StringVar(&o.modelFault, "model-fault", sim.FaultPoolsLost, "--model: fault of the first IDC: pools-lost, degrade or none")
	f.StringVar(&o.modelFilter, "model-filter", "", "--model: a filter file (configs/filters/) for every pool instead of the scenario's filter")
	f.Uint64Var(&o.seed, "seed", 0, "--model: seed (default: the scenario's)")
	d := sim.DefaultModelExtras
	f.Float64Var(&o.modelExtras.ErrorRate, "model-error-rate", d.ErrorRate, "--model: handler error rate (failed tasks are retried after the backoff), unless the scenario sets one")
	f.Float64Var(&o.modelExtras.WorkerOnly, "model-worker-only", d.WorkerOnly, "--model: share of hosts that run a pool and no node")
	f.Float64Var(&o.modelExtras.CrashShare, "model-crash", d.CrashShare, "--model: share of the second IDC's nodes (its summarizer first) that crash at 3/4 of the load and restart at 9/10 (0: none)")
	f.DurationVar(&o.modelExtras.SlowLink, "model-slow-link", d.SlowLink, "--model: latency added each way on the last IDC's links during the fault (0: none)")
}

func modelFlagsSet(cmd *cobra.Command) bool {
	for _, name := range modelFlags {
		if cmd.Flags().Changed(name) {
			return true
		}
	}
	return false
}

// runSimModel runs the scale model: the scenario's handler, slots, filter
// and seed at each size; a table (or --json) on stdout that depends only on
// the flags and the seed, progress and wall times on stderr.
func runSimModel(cmd *cobra.Command, o *simOptions) error {
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	if !o.model {
		for _, name := range modelFlags {
			if cmd.Flags().Changed(name) {
				return fmt.Errorf("--%s: only with --model", name)
			}
		}
	}
	if o.printScenario {
		return fmt.Errorf("--print-scenario: not with --model")
	}
	s := sim.Default()
	if o.scenario != "" {
		var err error
		if s, err = sim.LoadScenario(o.scenario); err != nil {
			return err
		}
	}
	if o.seed != 0 {
		s.Seed = o.seed
	}
	if len(o.sizes) == 0 {
		return fmt.Errorf("--sizes: at least one size")
	}
	for _, n := range o.sizes {
		if n < o.idcs || n > 100000 {
			return fmt.Errorf("--sizes: %d hosts: want %d (one per IDC) to 100000", n, max(o.idcs, 1))
		}
	}
	base, err := sim.ModelFromScenarioWith(s, 0, o.idcs, o.modelDuration, o.modelRate, o.modelFault, o.modelExtras)
	if err != nil {
		return fmt.Errorf("--model: %w", err)
	}
	if o.modelFilter != "" {
		flt, err := backlog.LoadFilters(o.modelFilter)
		if err != nil {
			return fmt.Errorf("--model-filter: %w", err)
		}
		base.Filters, base.Filter = &flt, o.modelFilter
	}
	base.Hosts = o.sizes[0]
	if err := base.Validate(); err != nil {
		return fmt.Errorf("--model: %w", err)
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer debug.SetGCPercent(debug.SetGCPercent(400)) // the model allocates briskly; memory is plenty
	var progress func(sim.ModelProgress)
	t0 := time.Now()
	if !o.quiet {
		start, last, hosts := t0, time.Time{}, 0
		progress = func(p sim.ModelProgress) {
			if p.Hosts != hosts {
				hosts, start = p.Hosts, time.Now()
			}
			if p.Finished {
				fmt.Fprintf(stderr, "[model %d hosts] done: %.1fs virtual, %d events, %.1fs wall\n", p.Hosts, p.VirtualS, p.Events, time.Since(start).Seconds())
				return
			}
			if time.Since(last) < 2*time.Second {
				return
			}
			last = time.Now()
			fmt.Fprintf(stderr, "[model %d hosts] %5.1fs virtual  %-16s backlog %d  done %d  (%.0fs wall)\n",
				p.Hosts, p.VirtualS, p.Phase, p.Backlog, p.Done, time.Since(start).Seconds())
		}
		fmt.Fprintf(stderr, "mqmesh sim --model: sizes %v, %d IDCs, %s of load, %g tasks/s per host, fault %s, seed %d\n",
			o.sizes, o.idcs, o.modelDuration, o.modelRate, o.modelFault, s.Seed)
	}
	rep, err := sim.RunModels(ctx, base, o.sizes, progress)
	if err != nil {
		return err
	}
	if !o.quiet {
		fmt.Fprintf(stderr, "mqmesh sim --model: %d sizes in %.1fs wall\n", len(rep.Runs), time.Since(t0).Seconds())
	}
	if o.json {
		err = writeJSON(stdout, rep)
	} else {
		err = rep.WriteTable(stdout)
	}
	if err != nil {
		return err
	}
	for _, r := range rep.Runs {
		if r.Lost > 0 || r.ViewMismatches > 0 {
			return fmt.Errorf("%d hosts: %d tasks lost, %d view mismatches: the model is wrong", r.Hosts, r.Lost, r.ViewMismatches)
		}
	}
	return nil
}
