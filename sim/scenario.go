package sim

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mqmesh/mqmesh/internal/subject"
)

// Scenario is a simulation: a topology, a load, handler behaviour, the
// backlog filter in use, the nodes' overload protection and a fault
// timeline. Load one with LoadScenario or ParseScenario; Default is the
// embedded default scenario.
type Scenario struct {
	Name string `yaml:"name"`
	// Seed makes a run repeatable (handler latencies, errors, scheduling).
	Seed     uint64   `yaml:"seed"`
	Topology Topology `yaml:"topology"`
	Load     Load     `yaml:"load"`
	Handler  Handler  `yaml:"handler"`
	// Filter is the backlog filter of the mesh mode: local-only, local-idc,
	// everything or noisy-neighbour. The baseline mode always pulls only
	// its own node.
	Filter string `yaml:"filter"`
	// Durability of the nodes: async (default: the simulator measures
	// scheduling, not disks) or fsync.
	Durability string `yaml:"durability"`
	// Throttle is every node's overload protection (see Throttle): the
	// retry gate is on, the CPU throttle off, no backend budgets, unless
	// set here. The unthrottled mode switches all of it off.
	Throttle Throttle `yaml:"throttle"`
	// Timeline of faults; each event starts a phase that lasts until the
	// next one (or the end of the load).
	Timeline []Event `yaml:"timeline"`
	// Drain bounds the wait, after the load ends and faults are restored,
	// for the backlog to reach zero. Default 30s.
	Drain Duration `yaml:"drain"`
	// Modes to run, one after the other, reported side by side: mesh (the
	// mesh as configured), baseline (every pool pulls only its own node),
	// unthrottled (the mesh with throttle.disabled) and replicated (the
	// mesh with every node's tasks copied to a buddy in sync mode). Default: mesh,
	// baseline.
	Modes []string `yaml:"modes"`
	// Sample is the period of the time series. Default 250ms.
	Sample Duration `yaml:"sample"`
}

// Topology lists the IDCs.
type Topology struct {
	IDCs []IDC `yaml:"idcs"`
}

// IDC is one data centre: hosts with a node and a pool each, and optional
// worker-only hosts (a pool, no node).
type IDC struct {
	Name        string `yaml:"name"`
	Hosts       int    `yaml:"hosts"`
	WorkerHosts int    `yaml:"worker_hosts"`
	// Slots per pool. Default 8.
	Slots int `yaml:"slots"`
}

// Load is what producers do: Rate tasks/s enqueued on every host's node
// for Duration, plus bursts.
type Load struct {
	Rate        int      `yaml:"rate"`
	PayloadSize int      `yaml:"payload_size"`
	Duration    Duration `yaml:"duration"`
	Bursts      []Burst  `yaml:"bursts"`
}

// Burst enqueues Count tasks at once on one host (or every host of an IDC).
type Burst struct {
	At    Duration `yaml:"at"`
	IDC   string   `yaml:"idc"`
	Host  string   `yaml:"host"`
	Count int      `yaml:"count"`
}

// Handler is the simulated business handler: a latency distribution and
// an error rate, optionally per IDC (the IDC's path to its backend), the
// backend calls each task makes and the CPU it burns. A handler runs in
// its pool's IDC and uses that IDC's backend, whatever node the task came
// from.
type Handler struct {
	Median    Duration           `yaml:"median"`
	P99       Duration           `yaml:"p99"`
	ErrorRate float64            `yaml:"error_rate"`
	PerIDC    map[string]Backend `yaml:"per_idc"`
	// Backend, when set, names the backend each task calls and how many
	// times (a fan-out): every execution reports its calls with
	// worker.Task.Report, which is what throttle.backends budgets count.
	Backend *HandlerBackend `yaml:"backend"`
	// CPU is the processor time each execution burns in a busy loop (a
	// fixed amount of work, calibrated once: it takes longer when the CPU
	// is contended), on top of its latency. Default 0.
	CPU Duration `yaml:"cpu"`
}

// HandlerBackend is the fan-out of one task: Calls calls to backend Name
// (a subject token, e.g. user-db). A task that succeeds or fails normally
// makes all its calls; while the backend is down (backend-fail) the first
// call fails at once, so the execution counts one call and fails fast.
type HandlerBackend struct {
	Name  string `yaml:"name"`
	Calls int    `yaml:"calls"` // default 1
}

// Backend modifies the handler in one IDC: latency × Slowdown, extra
// ErrorRate.
type Backend struct {
	Slowdown  float64 `yaml:"slowdown"`
	ErrorRate float64 `yaml:"error_rate"`
}

// Event is one step of the fault timeline.
type Event struct {
	At Duration `yaml:"at"`
	// Phase names the phase this event starts (default: the action).
	Phase string `yaml:"phase"`
	// Action: normal (no change), degrade (IDC's handlers Slowdown× slower
	// with ErrorRate failures), restore (undo degrade), kill-pools (an
	// IDC's worker pools die without a word), restore-pools, kill-node (a
	// host's node and pool stop abruptly), restart-node, lose-host (the
	// host dies for good with its disk: killed, its data directory
	// deleted, never restarted), remove-host (a host leaves gracefully), partition (an IDC's gateway links black-
	// holed: nothing reaches it from other IDCs), slow-link (Latency added
	// each way on an IDC's gateway links), heal (undo partition/slow-link),
	// restore-all; backend-fail (the IDC's backend, or every IDC's when
	// idc is empty, refuses every call: executions fail at once, without
	// their latency), backend-recover (undo backend-fail); cpu-hog (Procs
	// goroutines burn CPU in busy loops in this process, i.e. on every
	// simulated host, which all share this machine), cpu-calm (stop them);
	// bad-deploy (the IDC's handlers, or every IDC's when idc is empty, ack
	// tasks without doing the work), replay (the fix is deployed and every
	// node replays the tasks settled since the bad deploy began; see
	// replay.go).
	// The end of the load runs restore-all: every fault ends, the hog
	// included.
	Action    string  `yaml:"action"`
	IDC       string  `yaml:"idc"`
	Host      string  `yaml:"host"`
	Slowdown  float64 `yaml:"slowdown"`
	ErrorRate float64 `yaml:"error_rate"`
	// Latency of slow-link, each way.
	Latency Duration `yaml:"latency"`
	// Share of the IDC's nodes the scale model's kill-nodes crashes (its
	// first ones by name: the IDC's summarizer among them).
	Share float64 `yaml:"share"`
	// Procs is the number of CPU burners of cpu-hog (default GOMAXPROCS:
	// every core of this machine).
	Procs int `yaml:"procs"`
}

// Actions the runner knows.
var Actions = []string{"normal", "degrade", "restore", "kill-pools", "restore-pools", "kill-node", "restart-node", "lose-host", "remove-host", "partition", "slow-link", "heal", "restore-all",
	"backend-fail", "backend-recover", "cpu-hog", "cpu-calm", "bad-deploy", "replay"}

// Duration is a time.Duration that YAML writes as "1.5s".
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML reads "500ms", "2s", "1m".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: want a duration like 500ms or 2s", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (want e.g. 500ms, 2s, 1m)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

//go:embed default.yaml
var defaultScenario []byte

// Default returns the embedded default scenario: 3 IDCs × 3 hosts; a normal
// phase, one IDC's handlers degraded, two IDCs' pools lost, recovery.
func Default() Scenario {
	s, err := ParseScenario(defaultScenario)
	if err != nil {
		panic("sim: embedded default scenario: " + err.Error())
	}
	return s
}

// DefaultYAML is the embedded default scenario file.
func DefaultYAML() []byte { return slices.Clone(defaultScenario) }

// LoadScenario reads and validates a scenario file.
func LoadScenario(path string) (Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Scenario{}, fmt.Errorf("scenario: %w", err)
	}
	s, err := ParseScenario(b)
	if err != nil {
		return Scenario{}, fmt.Errorf("scenario %s: %w", path, err)
	}
	return s, nil
}

// ParseScenario decodes (strictly: unknown keys are errors) and validates
// a scenario, applying defaults.
func ParseScenario(b []byte) (Scenario, error) {
	var s Scenario
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil && !errors.Is(err, io.EOF) {
		return Scenario{}, err
	}
	s = s.withDefaults()
	if err := s.Validate(); err != nil {
		return Scenario{}, err
	}
	return s, nil
}

func (s Scenario) withDefaults() Scenario {
	if s.Name == "" {
		s.Name = "scenario"
	}
	if s.Seed == 0 {
		s.Seed = 1
	}
	for i := range s.Topology.IDCs {
		if s.Topology.IDCs[i].Slots == 0 {
			s.Topology.IDCs[i].Slots = 8
		}
	}
	if s.Load.PayloadSize == 0 {
		s.Load.PayloadSize = 64
	}
	if s.Handler.Median == 0 {
		s.Handler.Median = Duration(5 * time.Millisecond)
	}
	if s.Handler.P99 == 0 {
		s.Handler.P99 = 4 * s.Handler.Median
	}
	if s.Filter == "" {
		s.Filter = "everything"
	}
	if s.Durability == "" {
		s.Durability = "async"
	}
	if s.Drain == 0 {
		s.Drain = Duration(30 * time.Second)
	}
	if len(s.Modes) == 0 {
		s.Modes = []string{ModeMesh, ModeBaseline}
	}
	if s.Sample == 0 {
		s.Sample = Duration(250 * time.Millisecond)
	}
	if b := s.Handler.Backend; b != nil && b.Calls == 0 {
		s.Handler.Backend = &HandlerBackend{Name: b.Name, Calls: 1}
	}
	return s
}

// Modes of a run.
const (
	ModeMesh     = "mesh"
	ModeBaseline = "baseline"
	// ModeUnthrottled is the mesh with every throttle switched off
	// (throttle.disabled), to compare with.
	ModeUnthrottled = "unthrottled"
	// ModeReplicated is the mesh with every node's queues replicated to a
	// buddy (replicas: 1, sync; losehost.go), to compare with the mesh's
	// single copy under lose-host.
	ModeReplicated = "replicated"
)

// Modes lists the modes a scenario may name.
var Modes = []string{ModeMesh, ModeBaseline, ModeUnthrottled, ModeReplicated}

// Filters the scenario may name.
var Filters = []string{"local-only", "local-idc", "everything", "noisy-neighbour"}

// Validate checks the scenario and names the first bad field of each
// problem.
func (s Scenario) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	if len(s.Topology.IDCs) == 0 {
		bad("topology.idcs", "at least one IDC is needed")
	}
	idcs := map[string]IDC{}
	for i, idc := range s.Topology.IDCs {
		f := fmt.Sprintf("topology.idcs[%d]", i)
		if err := subject.Validate("name", idc.Name); err != nil {
			bad(f+".name", "%v", err)
		}
		if _, dup := idcs[idc.Name]; dup {
			bad(f+".name", "IDC %q listed twice", idc.Name)
		}
		idcs[idc.Name] = idc
		if idc.Hosts < 1 || idc.Hosts > 20 {
			bad(f+".hosts", "%d: want 1..20 (one process runs them all; use --model for more)", idc.Hosts)
		}
		if idc.WorkerHosts < 0 || idc.WorkerHosts > 20 {
			bad(f+".worker_hosts", "%d: want 0..20", idc.WorkerHosts)
		}
		if idc.Slots < 1 || idc.Slots > 1024 {
			bad(f+".slots", "%d: want 1..1024", idc.Slots)
		}
	}
	if s.Load.Rate < 0 || s.Load.Rate > 20000 {
		bad("load.rate", "%d tasks/s per host: want 0..20000", s.Load.Rate)
	}
	if s.Load.PayloadSize < 0 || s.Load.PayloadSize > 1<<20 {
		bad("load.payload_size", "%d: want 0..1048576", s.Load.PayloadSize)
	}
	if s.Load.Duration.D() <= 0 || s.Load.Duration.D() > time.Hour {
		bad("load.duration", "%s: want 0 < duration <= 1h", s.Load.Duration.D())
	}
	for i, b := range s.Load.Bursts {
		f := fmt.Sprintf("load.bursts[%d]", i)
		if b.Count < 1 || b.Count > 1_000_000 {
			bad(f+".count", "%d: want 1..1000000", b.Count)
		}
		if b.At.D() < 0 || b.At.D() > s.Load.Duration.D() {
			bad(f+".at", "%s: must fall within load.duration", b.At.D())
		}
		if err := s.checkTarget(idcs, b.IDC, b.Host); err != nil {
			bad(f, "%v", err)
		}
	}
	if s.Handler.Median.D() <= 0 || s.Handler.P99 < s.Handler.Median {
		bad("handler", "need 0 < median <= p99")
	}
	if s.Handler.ErrorRate < 0 || s.Handler.ErrorRate >= 1 {
		bad("handler.error_rate", "%v: want 0 <= rate < 1", s.Handler.ErrorRate)
	}
	for name, b := range s.Handler.PerIDC {
		if _, ok := idcs[name]; !ok {
			bad("handler.per_idc."+name, "no such IDC")
		}
		if b.Slowdown < 0 || b.ErrorRate < 0 || b.ErrorRate >= 1 {
			bad("handler.per_idc."+name, "want slowdown >= 0 and 0 <= error_rate < 1")
		}
	}
	if !slices.Contains(Filters, s.Filter) {
		bad("filter", "%q: want one of %v", s.Filter, Filters)
	}
	if s.Durability != "async" && s.Durability != "fsync" {
		bad("durability", "%q: want async or fsync", s.Durability)
	}
	var last time.Duration
	for i, ev := range s.Timeline {
		f := fmt.Sprintf("timeline[%d]", i)
		if ev.At.D() < last {
			bad(f+".at", "%s: events must be in time order", ev.At.D())
		}
		last = ev.At.D()
		if ev.At.D() > s.Load.Duration.D() {
			bad(f+".at", "%s: after the end of the load (%s)", ev.At.D(), s.Load.Duration.D())
		}
		switch ev.Action {
		case "normal", "restore-all":
		case "degrade", "restore", "kill-pools", "restore-pools", "partition", "heal", "slow-link":
			if _, ok := idcs[ev.IDC]; !ok {
				bad(f+".idc", "%q: no such IDC", ev.IDC)
			}
			if ev.Action == "degrade" && (ev.Slowdown < 1 || ev.ErrorRate < 0 || ev.ErrorRate >= 1) {
				bad(f, "degrade needs slowdown >= 1 and 0 <= error_rate < 1")
			}
			if ev.Action == "slow-link" && (ev.Latency.D() <= 0 || ev.Latency.D() > 10*time.Second) {
				bad(f+".latency", "%s: slow-link needs 0 < latency <= 10s", ev.Latency.D())
			}
		case "replay":
		case "backend-fail", "backend-recover", "bad-deploy":
			if _, ok := idcs[ev.IDC]; ev.IDC != "" && !ok {
				bad(f+".idc", "%q: no such IDC (leave it out for every IDC's backend)", ev.IDC)
			}
		case "cpu-hog", "cpu-calm":
			if ev.Procs < 0 || ev.Procs > 256 {
				bad(f+".procs", "%d: want 0..256 CPU burners (0: GOMAXPROCS)", ev.Procs)
			}
		case "kill-node", "restart-node", "lose-host", "remove-host":
			if err := s.checkTarget(idcs, ev.IDC, ev.Host); err != nil || ev.Host == "" {
				bad(f+".host", "%s needs an existing host (e.g. %s-h1): %v", ev.Action, s.Topology.IDCs[0].Name, err)
			}
		default:
			bad(f+".action", "%q: want one of %v", ev.Action, Actions)
		}
	}
	if s.Drain.D() <= 0 || s.Sample.D() < 10*time.Millisecond {
		bad("drain/sample", "need drain > 0 and sample >= 10ms")
	}
	for i, m := range s.Modes {
		if !slices.Contains(Modes, m) {
			bad(fmt.Sprintf("modes[%d]", i), "%q: want one of %v", m, Modes)
		}
	}
	errs = append(errs, s.validateOverload()...)
	return errors.Join(errs...)
}

// HostName is the name of host i (1-based) of an IDC: <idc>-h<i>; worker-
// only hosts are <idc>-w<i>.
func HostName(idc string, i int) string { return fmt.Sprintf("%s-h%d", idc, i) }

// WorkerHostName names worker-only host i of an IDC.
func WorkerHostName(idc string, i int) string { return fmt.Sprintf("%s-w%d", idc, i) }

func (s Scenario) checkTarget(idcs map[string]IDC, idc, host string) error {
	if host == "" {
		if _, ok := idcs[idc]; !ok {
			return fmt.Errorf("idc %q: no such IDC", idc)
		}
		return nil
	}
	for _, c := range s.Topology.IDCs {
		for i := 1; i <= c.Hosts; i++ {
			if HostName(c.Name, i) == host {
				return nil
			}
		}
	}
	return fmt.Errorf("host %q: no such host (hosts are named <idc>-h<n>)", host)
}
