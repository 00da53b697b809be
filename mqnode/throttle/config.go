package throttle

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/mqmesh/mqmesh/internal/subject"
)

// Defaults of Config, beside the settings they govern.
const (
	DefaultFailureRatio     = 0.7
	DefaultMinSamples       = 20
	DefaultWindow           = 5 * time.Second
	DefaultProbeRate        = 1.0
	DefaultSuccessShare     = 1.0
	DefaultMaxDefer         = 5 * time.Second
	DefaultCPUCeiling       = 0.85
	DefaultCPUInterval      = 500 * time.Millisecond
	DefaultCPUMinRate       = 20.0
	DefaultCPUDecrease      = 0.7
	DefaultCPUIncrease      = 1.25
	DefaultCPUSignal        = SignalStarvation
	DefaultCPUMaxDelay      = 5 * time.Millisecond
	DefaultShareInterval    = 250 * time.Millisecond
	DefaultPeerTTL          = 2 * time.Second
	DefaultUsageWindow      = 2 * time.Second
	ewmaAlpha               = 0.1
	minHold                 = time.Second
	closeWindow             = 2 * time.Second
	minDefer                = 200.0 // ms
	recentWindow            = time.Second
	defaultBucketBurstDelay = 250 * time.Millisecond
)

// Config configures a node's overload protection. The zero value of every
// field means its default (WithDefaults); Validate names the first bad field.
type Config struct {
	// Disabled switches every throttle off: dispatch is limited only by
	// what workers pull (the comparison mode of the simulator).
	Disabled bool `yaml:"disabled"`
	// Retry governs retry admission per queue by success rate.
	Retry RetryConfig `yaml:"retry"`
	// CPU governs dispatch by the host's CPU usage.
	CPU CPUConfig `yaml:"cpu"`
	// Backends maps a backend name (a subject token; what handlers pass to
	// Task.Report) to its mesh-wide budget.
	Backends map[string]BackendConfig `yaml:"backends"`
	// ShareInterval is how often a node shares its backend usage with the
	// mesh over NATS and recomputes its shares. Default 250ms.
	ShareInterval time.Duration `yaml:"share_interval"`
	// PeerTTL: a node not heard from for this long no longer holds a share.
	// Default 2s.
	PeerTTL time.Duration `yaml:"peer_ttl"`
	// UsageWindow is the sliding window over which backend calls are
	// counted into a rate. Default 2s.
	UsageWindow time.Duration `yaml:"usage_window"`
}

// RetryConfig: per queue the node counts successes (acks) and failures
// (nacks, expired leases) over Window and in a moving average (weight 0.1
// per outcome). When at least MinSamples outcomes are in the window and
// both the average and the last two seconds show FailureRatio failing, the
// queue's
// retries (deliveries after the first) are admitted only at
// ProbeRate + SuccessShare × successes/s of the last second; the others are deferred,
// rewritten on disk to become ready again later (at most MaxDefer). The
// limit lifts, after at least a second, as soon as the moving average is
// back above 1 − FailureRatio/2: after about 10 successes in a row at the default ratio.
type RetryConfig struct {
	Disabled     bool          `yaml:"disabled"`
	FailureRatio float64       `yaml:"failure_ratio"` // default 0.7
	MinSamples   int           `yaml:"min_samples"`   // default 20
	Window       time.Duration `yaml:"window"`        // default 5s
	ProbeRate    float64       `yaml:"probe_rate"`    // retries/s always admitted; default 1
	SuccessShare float64       `yaml:"success_share"` // retries admitted per success; default 1
	MaxDefer     time.Duration `yaml:"max_defer"`     // default 5s
}

// Values of CPUConfig.Signal.
const (
	SignalStarvation = "starvation"
	SignalHost       = "host"
)

// CPUConfig: every Interval the node samples its CPU signal (Signal: by
// default its own starvation, or the host's CPU usage). When starved (or
// above Ceiling) it lowers its dispatch rate (tasks/s, all queues) to Decrease ×
// the rate it dispatched in the last interval, never below MinRate; once
// it has been calm (scheduling delay under MaxDelay/2; host usage under
// Ceiling − 0.1) for two intervals it raises the limit
// by Increase per interval (Increase² while far below: MaxDelay/5,
// Ceiling − 0.3) and lifts
// it when it no longer binds. Enqueues are never
// limited: the buffer keeps accepting while it slows its output.
type CPUConfig struct {
	Disabled bool `yaml:"disabled"`
	// Signal is what says the CPU is short: starvation (default: the
	// node's own scheduling delay, see ProcessStarvation, against
	// MaxDelay) or host (the whole host's CPU usage against Ceiling).
	Signal string `yaml:"signal"`
	// MaxDelay is the scheduling delay above which a node counts as
	// starved (signal starvation). Default 5ms.
	MaxDelay time.Duration `yaml:"max_delay"`
	// Ceiling is the host CPU usage above which the host counts as short
	// of CPU (signal host).
	Ceiling  float64       `yaml:"ceiling"`  // fraction of all cores, default 0.85
	Interval time.Duration `yaml:"interval"` // default 500ms
	MinRate  float64       `yaml:"min_rate"` // tasks/s floor, default 20
	Decrease float64       `yaml:"decrease"` // default 0.7
	Increase float64       `yaml:"increase"` // default 1.25
}

// BackendConfig is one backend's budget.
type BackendConfig struct {
	// Budget is the calls/s the whole mesh may make to the backend. Every
	// node must configure the same budget.
	Budget float64 `yaml:"budget"`
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	r := &c.Retry
	def(&r.FailureRatio, DefaultFailureRatio)
	def(&r.MinSamples, DefaultMinSamples)
	def(&r.Window, DefaultWindow)
	def(&r.ProbeRate, DefaultProbeRate)
	def(&r.SuccessShare, DefaultSuccessShare)
	def(&r.MaxDefer, DefaultMaxDefer)
	p := &c.CPU
	def(&p.Ceiling, DefaultCPUCeiling)
	def(&p.Interval, DefaultCPUInterval)
	def(&p.MinRate, DefaultCPUMinRate)
	def(&p.Decrease, DefaultCPUDecrease)
	def(&p.Increase, DefaultCPUIncrease)
	def(&p.Signal, DefaultCPUSignal)
	def(&p.MaxDelay, DefaultCPUMaxDelay)
	def(&c.ShareInterval, DefaultShareInterval)
	def(&c.PeerTTL, DefaultPeerTTL)
	def(&c.UsageWindow, DefaultUsageWindow)
	return c
}

func def[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// Validate checks a defaulted config and names the bad fields.
func (c Config) Validate() error {
	var errs []error
	r := c.Retry
	if !(r.FailureRatio > 0) || r.FailureRatio > 1 {
		errs = append(errs, fmt.Errorf("throttle.retry.failure_ratio %v: want 0 < x <= 1", r.FailureRatio))
	}
	if r.MinSamples < 1 || r.Window < 500*time.Millisecond || !positive(r.ProbeRate) || !positive(r.SuccessShare) || r.MaxDefer < 100*time.Millisecond {
		errs = append(errs, errors.New("throttle.retry: need min_samples >= 1, window >= 500ms, probe_rate > 0, success_share > 0, max_defer >= 100ms"))
	}
	p := c.CPU
	if !(p.Ceiling > 0.1) || p.Ceiling > 1 {
		errs = append(errs, fmt.Errorf("throttle.cpu.ceiling %v: want 0.1 < x <= 1", p.Ceiling))
	}
	if p.Signal != SignalStarvation && p.Signal != SignalHost {
		errs = append(errs, fmt.Errorf("throttle.cpu.signal %q: want starvation or host", p.Signal))
	}
	if p.MaxDelay < 100*time.Microsecond {
		errs = append(errs, fmt.Errorf("throttle.cpu.max_delay %s: want at least 100µs", p.MaxDelay))
	}
	if p.Interval < 50*time.Millisecond || !positive(p.MinRate) || !(p.Decrease > 0) || p.Decrease >= 1 || !(p.Increase > 1) || math.IsInf(p.Increase, 0) {
		errs = append(errs, errors.New("throttle.cpu: need interval >= 50ms, min_rate > 0, 0 < decrease < 1, increase > 1"))
	}
	if c.ShareInterval < 10*time.Millisecond || c.PeerTTL < 2*c.ShareInterval || c.UsageWindow < c.ShareInterval {
		errs = append(errs, errors.New("throttle: need share_interval >= 10ms, peer_ttl >= 2 × share_interval, usage_window >= share_interval"))
	}
	for name, b := range c.Backends {
		if err := subject.Validate("throttle.backends key", name); err != nil {
			errs = append(errs, err)
			continue
		}
		if !positive(b.Budget) {
			errs = append(errs, fmt.Errorf("throttle.backends.%s.budget %v: must be a positive, finite number of calls/s", name, b.Budget))
		}
	}
	return errors.Join(errs...)
}

// positive says x is a positive finite number (not NaN, not Inf).
func positive(x float64) bool { return x > 0 && !math.IsInf(x, 1) }
