package sim

import (
	"fmt"
	"time"

	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode/throttle"
)

// Throttle is the scenario's `throttle:` section: the overload protection
// of every node (package mqnode/throttle, whose doc explains each
// mechanism). Every field left out takes the throttle package's default.
//
//	throttle:
//	  disabled: false            # true: every throttle off (as in the unthrottled mode)
//	  retry:                     # the retry gate by success rate, per queue (on)
//	    disabled: false
//	    failure_ratio: 0.7       # moving failure share that closes the gate
//	    min_samples: 20          # outcomes needed in the window
//	    window: 5s
//	    probe_rate: 1            # retries/s always admitted
//	    success_share: 1         # retries admitted per success/s
//	    max_defer: 5s            # longest a refused retry waits on disk
//	  cpu:                       # the CPU throttle (AIMD on dispatch): off unless enabled
//	    enabled: true
//	    sampler: host            # the real host sampler: all of this machine's CPU;
//	                             # process: this simulation's own CPU only
//	    ceiling: 0.85
//	    interval: 500ms
//	    min_rate: 20             # tasks/s per node, floor
//	    decrease: 0.7
//	    increase: 1.25
//	  backends:                  # mesh-wide budgets, calls/s
//	    user-db: {budget: 300}
//	  share_interval: 250ms      # budget usage exchange between nodes
//	  peer_ttl: 2s
//	  usage_window: 2s
//
// The CPU throttle is off by default in the simulator: every simulated host
// runs in this one process on this one machine, so the host CPU a node
// samples is everybody's (every node, pool and handler of the simulation,
// and whatever else runs on the machine), not its own host's. Enable it to
// study the throttle's reaction to a busy machine (cpu-hog), knowing that
// every node sees the same CPU and reacts together. On a machine shared
// with other work, sampler: process keeps the others out of the reading.
type Throttle struct {
	Disabled bool                              `yaml:"disabled"`
	Retry    throttle.RetryConfig              `yaml:"retry"`
	CPU      CPUThrottle                       `yaml:"cpu"`
	Backends map[string]throttle.BackendConfig `yaml:"backends"`
	// ShareInterval, PeerTTL and UsageWindow tune the budget exchange.
	ShareInterval time.Duration `yaml:"share_interval"`
	PeerTTL       time.Duration `yaml:"peer_ttl"`
	UsageWindow   time.Duration `yaml:"usage_window"`
}

// CPUThrottle is the CPU throttle of the simulated nodes: off unless
// Enabled, and then fed by Sampler: host (default; the real host sampler,
// throttle.HostCPU) or process (SamplerProcess). The other fields are
// throttle.CPUConfig's.
type CPUThrottle struct {
	Enabled  bool          `yaml:"enabled"`
	Sampler  string        `yaml:"sampler"`
	Ceiling  float64       `yaml:"ceiling"`
	Interval time.Duration `yaml:"interval"`
	MinRate  float64       `yaml:"min_rate"`
	Decrease float64       `yaml:"decrease"`
	Increase float64       `yaml:"increase"`
}

// Config is the throttle.Config of every node in a mode: the unthrottled
// mode switches everything off.
func (t Throttle) Config(mode string) throttle.Config {
	c := t.CPU
	return throttle.Config{
		Disabled: t.Disabled || mode == ModeUnthrottled,
		Retry:    t.Retry,
		// The simulator's hosts share one process: only the host signal
		// (its injected samplers) tells them apart.
		CPU: throttle.CPUConfig{Disabled: !c.Enabled, Signal: throttle.SignalHost, Ceiling: c.Ceiling, Interval: c.Interval,
			MinRate: c.MinRate, Decrease: c.Decrease, Increase: c.Increase},
		Backends:      t.Backends,
		ShareInterval: t.ShareInterval,
		PeerTTL:       t.PeerTTL,
		UsageWindow:   t.UsageWindow,
	}
}

// Budget returns the budget of the backend the handler calls (0: none).
func (s Scenario) Budget() (string, float64) {
	if s.Handler.Backend == nil {
		return "", 0
	}
	name := s.Handler.Backend.Name
	return name, s.Throttle.Backends[name].Budget
}

// validateOverload checks the throttle section and the handler's backend
// and CPU; each error names its field.
func (s Scenario) validateOverload() []error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	// throttle's own errors name their field from "throttle." on.
	if err := s.Throttle.Config(ModeMesh).WithDefaults().Validate(); err != nil {
		errs = append(errs, err)
	}
	if b := s.Handler.Backend; b != nil {
		if err := subject.Validate("name", b.Name); err != nil {
			bad("handler.backend.name", "%v", err)
		}
		if b.Calls < 1 || b.Calls > 1000 {
			bad("handler.backend.calls", "%d: want 1..1000 calls per task", b.Calls)
		}
	}
	if c := s.Throttle.CPU.Sampler; c != "" && c != SamplerHost && c != SamplerProcess {
		bad("throttle.cpu.sampler", "%q: want %s or %s", c, SamplerHost, SamplerProcess)
	}
	if c := s.Handler.CPU.D(); c < 0 || c > time.Second {
		bad("handler.cpu", "%s: want 0 <= cpu <= 1s per execution", c)
	}
	for name := range s.Throttle.Backends {
		if s.Handler.Backend == nil || s.Handler.Backend.Name != name {
			bad("throttle.backends."+name, "no handler calls it: set handler.backend.name: %s", name)
		}
	}
	return errs
}
