package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/mqnode/throttle"
)

// cpuOptions are the flags of `bench cpu`.
type cpuOptions struct {
	rate                       float64
	size                       int
	durability                 string
	modes                      []string
	warmup, before, hog, after time.Duration
	burn                       time.Duration
	load                       float64
	slots, hogs                int
	burst                      int
	hogSession                 string
	sample, callTimeout        time.Duration
	timeout                    time.Duration
	dir                        string
	json                       bool
	runner
}

func newCPUCommand(launch Launcher) *cobra.Command {
	o := &cpuOptions{runner: runner{launch: launch}}
	cmd := reportCommand(&cobra.Command{
		Use:   "cpu",
		Short: "Measure enqueue latency under a CPU hog on the node's host, CPU throttle on vs off",
		Long: "Runs a node and its host's worker pool (CPU-heavy handlers) in child processes, a steady producer,\n" +
			"and after a warm-up a CPU hog on the host, once with the node's CPU throttle on and once off, and\n" +
			"reports enqueue latency, dispatch rate, CPU and the throttle's state per phase, with on/off ratios.\n" +
			"See the package documentation of internal/bench.",
	}, &o.runner, &o.json, o.validate, func(ctx context.Context) (*CPUReport, error) { return runCPU(ctx, o) }, writeCPUTable)
	f := cmd.Flags()
	f.Float64Var(&o.rate, "rate", 500, "tasks/s the producer enqueues, one per call, the whole run")
	f.IntVar(&o.size, "size", 256, "payload bytes per task")
	f.StringVar(&o.durability, "durability", durFsync, "node durability: fsync or async")
	f.StringSliceVar(&o.modes, "modes", []string{throttleOn, throttleOff}, "CPU throttle modes to run, in order: on (defaults: the node's own starvation), off (throttle.Config{Disabled: true}), host (the whole host's CPU usage, the former signal)")
	f.DurationVar(&o.warmup, "warmup", 5*time.Second, "load before the first measured phase")
	f.DurationVar(&o.before, "before", 15*time.Second, "measured phase before the hog")
	f.DurationVar(&o.hog, "hog", 20*time.Second, "how long the hog runs (measured)")
	f.DurationVar(&o.after, "after", 10*time.Second, "measured phase after the hog (recovery); 0 skips it")
	f.DurationVar(&o.burn, "burn", 0, "CPU time a handler burns per task on an idle core (default: from --handler-load)")
	f.Float64Var(&o.load, "handler-load", 0.5, "without --burn: the share of the host's CPU the handlers need at --rate")
	f.IntVar(&o.slots, "slots", 0, "worker pool slots (default: 2 per CPU)")
	f.IntVar(&o.burst, "burst", 0, "instead of the steady phases: with the hog running (after --warmup), enqueue this many tasks at once and time their drain, per mode")
	f.IntVar(&o.hogs, "hogs", 0, "busy child processes of the hog (default: one per CPU)")
	f.StringVar(&o.hogSession, "hog-session", hogOwn, "the hog's session: own (setsid: its own scheduling group under autogroup, like another service or container) or shared (the node's and the pool's: one group, the hog competes with them thread by thread)")
	f.DurationVar(&o.sample, "sample", 500*time.Millisecond, "how often the node's stats and the host's CPU are sampled")
	f.DurationVar(&o.callTimeout, "call-timeout", 10*time.Second, "deadline of one enqueue call (a call past it counts as an error)")
	f.DurationVar(&o.timeout, "timeout", 10*time.Minute, "bound on the whole run")
	f.StringVar(&o.dir, "dir", "", "root of the temporary data directories (default: the system temp dir)")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	return cmd
}

func (o *cpuOptions) validate() error {
	var errs []error
	if o.rate <= 0 || o.rate > 20_000 {
		errs = append(errs, fmt.Errorf("--rate %g: want 0 < rate <= 20000 tasks/s", o.rate))
	}
	if o.size < 1 || o.size > 1<<20 {
		errs = append(errs, fmt.Errorf("--size %d: want 1..1048576 bytes", o.size))
	}
	if o.durability != durAsync && o.durability != durFsync {
		errs = append(errs, fmt.Errorf("--durability %q: want async or fsync", o.durability))
	}
	if len(o.modes) == 0 {
		errs = append(errs, errors.New("--modes: none given"))
	}
	for _, m := range o.modes {
		if m != throttleOn && m != throttleOff && m != throttleHost {
			errs = append(errs, fmt.Errorf("--modes %q: want on, off or host", m))
		}
	}
	o.modes = slices.Compact(o.modes)
	if o.warmup < 0 || o.after < 0 || o.before < 100*time.Millisecond || o.hog < 100*time.Millisecond {
		errs = append(errs, errors.New("--before and --hog must be at least 100ms, --warmup and --after not negative"))
	}
	if o.burn < 0 || o.load <= 0 || o.load > 4 {
		errs = append(errs, errors.New("--burn not negative; --handler-load in (0, 4]"))
	}
	if o.burst < 0 || o.burst > 1_000_000 {
		errs = append(errs, fmt.Errorf("--burst %d: want 0..1000000 tasks", o.burst))
	}
	if o.slots < 0 || o.hogs < 0 || o.hogs > 256 {
		errs = append(errs, errors.New("--slots not negative; --hogs 0..256"))
	}
	if o.hogSession != hogShared && o.hogSession != hogOwn {
		errs = append(errs, fmt.Errorf("--hog-session %q: want shared or own", o.hogSession))
	}
	if o.sample < 50*time.Millisecond || o.callTimeout < 100*time.Millisecond || o.timeout < time.Second {
		errs = append(errs, errors.New("--sample at least 50ms, --call-timeout at least 100ms, --timeout at least 1s"))
	}
	return errors.Join(errs...)
}

// withDefaults fills the options that depend on the host.
func (o *cpuOptions) withDefaults() {
	if o.burn == 0 {
		o.burn = time.Duration(o.load * float64(runtime.NumCPU()) / o.rate * float64(time.Second))
	}
	if o.slots == 0 {
		o.slots = 2 * runtime.NumCPU()
	}
	if o.hogs == 0 {
		o.hogs = runtime.NumCPU()
	}
}

// Values of --hog-session.
const (
	hogShared = "shared"
	hogOwn    = "own"
)

// runCPU runs every mode and returns the report (also when a mode failed)
// and an error naming what failed.
func runCPU(ctx context.Context, o *cpuOptions) (*CPUReport, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, o.timeout, fmt.Errorf("bench cpu: --timeout %s reached", o.timeout))
	defer cancel()
	o.withDefaults()
	root, err := os.MkdirTemp(o.dir, "mqmesh-bench-cpu-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(root)
	log := progressWriter(o.stderr)
	iters := calibrateBurn(o.burn)
	def := throttle.Config{}.WithDefaults().CPU
	r := &CPUReport{
		Schema: CPUReportSchema,
		Config: CPUConfig{
			RatePerS: o.rate, SizeBytes: o.size, Durability: o.durability, BurnMs: ms(o.burn), BurnIters: iters,
			Slots: o.slots, Hogs: o.hogs, Burst: o.burst, HogSession: o.hogSession, WarmupS: o.warmup.Seconds(), BeforeS: o.before.Seconds(), HogS: o.hog.Seconds(),
			AfterS: o.after.Seconds(), SampleS: o.sample.Seconds(), CallTimeoutS: o.callTimeout.Seconds(),
			HandlerLoad: ms(o.burn) / 1000 * o.rate / float64(runtime.NumCPU()),
			Signal:      def.Signal, MaxDelayMs: ms(def.MaxDelay),
			Ceiling: def.Ceiling, IntervalS: def.Interval.Seconds(), MinRate: def.MinRate, Decrease: def.Decrease, Increase: def.Increase,
			CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
		},
		Modes: []CPUMode{},
		Notes: cpuNotes(),
	}
	fmt.Fprintf(log, "bench cpu: handlers burn %d iterations per task (%.2f ms on an idle core); measuring the idle host for 1s\n", iters, ms(o.burn))
	r.HostCPUBeforeRun, err = hostUsageOver(ctx, time.Second)
	if err != nil {
		return r, err
	}
	var errs []error
	for _, mode := range o.modes {
		if o.burst > 0 {
			b := runCPUBurst(ctx, o, root, mode, iters, log)
			if b.Error != "" {
				errs = append(errs, fmt.Errorf("burst, throttle %s: %s", mode, b.Error))
			}
			r.Bursts = append(r.Bursts, b)
			continue
		}
		if ctx.Err() != nil {
			errs = append(errs, context.Cause(ctx))
			break
		}
		m := runCPUMode(ctx, o, root, mode, iters, log)
		if m.Error != "" {
			errs = append(errs, fmt.Errorf("throttle %s: %s", mode, m.Error))
		}
		r.Modes = append(r.Modes, m)
	}
	r.Ratio = newCPURatio(r.Modes)
	if !procAvailable() {
		r.Notes = append(r.Notes, "/proc is not available on this platform: per-process CPU figures are 0")
	}
	r.OK = len(errs) == 0
	return r, errors.Join(errs...)
}

// hostUsageOver returns the host's CPU usage (0..1) over the next d.
func hostUsageOver(ctx context.Context, d time.Duration) (float64, error) {
	host := throttle.HostCPU()
	if _, err := host(); err != nil {
		return 0, err
	}
	if err := sleepCtx(ctx, d); err != nil {
		return 0, err
	}
	return host()
}

func cpuNotes() []string {
	return []string{
		"one host: the node and its worker pool in child processes, the producer in this process, loopback TCP; the modes run one after the other",
		"enqueue latency: one task per Enqueue call, from the call to its reply (durable under the node's durability); calls are open loop at --rate",
		"dispatch/s: deliveries per second (acked + nacked + expired leases + leased, from the node's stats); backlog: ready + delayed at the end of the phase",
		"cpu columns are cores used on average (user + system); other = host usage minus node, worker, hogs and this process: load from outside the benchmark",
		"the node and its worker pool share one session (one scheduling group under Linux's autogroup, as under one supervisor or container); --hog-session own puts the hog in a session of its own, shared in theirs",
		"throttle: share of samples in which the node's CPU throttle limited dispatch, the range of its limit (tasks/s) and its last reason",
		"ratio = throttle on / off, during the hog: below 1 is better for enqueue latency",
	}
}
