package demo

import (
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/worker"
)

// Kind names what a demo handler does after its latency.
type Kind string

const (
	// KindSleep succeeds (Done) after its latency.
	KindSleep Kind = "sleep"
	// KindFlaky fails with ErrorRate (Retry) and gives up with GiveUpRate
	// (GiveUp, to the dead letter queue), else succeeds.
	KindFlaky Kind = "flaky"
	// KindFanout succeeds and returns Fanout.Count subtasks to Fanout.Queue
	// (a streaming task: they are enqueued atomically with the ack).
	KindFanout Kind = "fanout"
	// KindGroup delivers each task, a group-chat message, to Group.Members
	// members with worker/mapreduce: grouped per simulated access server,
	// batch calls in parallel on pool "rpc", a nested push stage per batch
	// on pool "push", folded into delivered and failed counts.
	KindGroup Kind = "group"
)

// MaxFanout is the most subtasks one fanout task returns: they travel in
// one ack request, which must fit a NATS message.
const MaxFanout = 1000

// Spec configures the demo handler of one queue.
type Spec struct {
	// Kind is sleep, flaky, fanout or group. Required.
	Kind Kind `yaml:"kind"`
	// Latency is how long each task takes (every kind). Default: none.
	Latency Latency `yaml:"latency"`
	// ErrorRate (flaky) is the share of tasks that fail and are retried;
	// GiveUpRate (flaky) the share sent to the dead letter queue. Each is
	// in [0, 1], and together at most 1.
	ErrorRate  float64 `yaml:"error_rate"`
	GiveUpRate float64 `yaml:"give_up_rate"`
	// RetryDelay is the delay of a failed task's retry (0: the queue's
	// backoff). It applies to every injected failure.
	RetryDelay time.Duration `yaml:"retry_delay"`
	// Fanout configures the subtasks of kind fanout (required there, not
	// allowed elsewhere).
	Fanout *Fanout `yaml:"fanout"`
	// Group configures kind group (required there, not allowed
	// elsewhere).
	Group *Group `yaml:"group"`
	// Slowdown degrades the handler on pools of the named IDCs: their
	// latency is multiplied and extra failures injected, as when a whole
	// IDC's path to a backend (the push service) goes bad.
	Slowdown map[string]Slowdown `yaml:"slowdown"`
	// Backend makes every task call a named backend (any kind): the calls
	// are reported with Task.Report, so a node's backend budget
	// (throttle.backends in the node config) limits the queue.
	Backend *Backend `yaml:"backend"`
	// Timeout is the handler's deadline (0: the pool's handler timeout).
	Timeout time.Duration `yaml:"timeout"`
	// Seed fixes the handler's random source (0: see Env.Seed).
	Seed uint64 `yaml:"seed"`
}

// Fanout configures the subtasks of a fanout handler.
type Fanout struct {
	// Queue receives the subtasks. Required; a subject token.
	Queue string `yaml:"queue"`
	// Count is the number of subtasks of each task (1..MaxFanout); with
	// MaxCount > Count it is drawn uniformly from Count..MaxCount.
	Count    int `yaml:"count"`
	MaxCount int `yaml:"max_count"`
	// Delay makes the subtasks ready only after this long.
	Delay time.Duration `yaml:"delay"`
}

// Backend is a backend every task of a demo handler calls.
type Backend struct {
	// Name is the backend's name, a subject token (as in the node's
	// throttle.backends). Required.
	Name string `yaml:"name"`
	// Calls is the calls each task makes (1..10000). Default 1.
	Calls int `yaml:"calls"`
}

// MaxBackendCalls bounds Backend.Calls.
const MaxBackendCalls = 10000

// Slowdown degrades a handler in one IDC.
type Slowdown struct {
	// LatencyFactor multiplies every latency drawn. Default 1.
	LatencyFactor float64 `yaml:"latency_factor"`
	// ErrorRate is added to the handler's own error rate (any kind).
	ErrorRate float64 `yaml:"error_rate"`
}

// WithDefaults fills zero fields.
func (s Spec) WithDefaults() Spec {
	s.Latency = s.Latency.WithDefaults()
	if s.Fanout != nil {
		f := *s.Fanout
		if f.MaxCount == 0 {
			f.MaxCount = f.Count
		}
		s.Fanout = &f
	}
	if s.Group != nil {
		g := s.Group.withDefaults()
		s.Group = &g
	}
	if s.Backend != nil {
		b := *s.Backend
		if b.Calls == 0 {
			b.Calls = 1
		}
		s.Backend = &b
	}
	if len(s.Slowdown) > 0 {
		m := make(map[string]Slowdown, len(s.Slowdown))
		for idc, sd := range s.Slowdown {
			if sd.LatencyFactor == 0 {
				sd.LatencyFactor = 1
			}
			m[idc] = sd
		}
		s.Slowdown = m
	}
	return s
}

// Validate checks a defaulted spec. Errors name the field as in YAML
// (error_rate, fanout.count, slowdown.east.latency_factor).
func (s Spec) Validate() error {
	var errs []error
	switch s.Kind {
	case KindSleep, KindFlaky, KindFanout, KindGroup:
	case "":
		errs = append(errs, errors.New("kind: required: sleep, flaky or fanout, or group"))
	default:
		errs = append(errs, fmt.Errorf("kind %q: want sleep, flaky or fanout, or group", s.Kind))
	}
	errs = append(errs, s.Latency.Validate())
	errs = append(errs, checkRate("error_rate", s.ErrorRate), checkRate("give_up_rate", s.GiveUpRate))
	if s.Kind != KindFlaky {
		if s.ErrorRate != 0 {
			errs = append(errs, fmt.Errorf("error_rate: only for kind flaky (a slowdown's error_rate applies to every kind)"))
		}
		if s.GiveUpRate != 0 {
			errs = append(errs, fmt.Errorf("give_up_rate: only for kind flaky"))
		}
	} else if s.ErrorRate+s.GiveUpRate > 1 {
		errs = append(errs, fmt.Errorf("error_rate %g + give_up_rate %g: more than 1", s.ErrorRate, s.GiveUpRate))
	}
	if s.RetryDelay < 0 {
		errs = append(errs, fmt.Errorf("retry_delay %s: must not be negative", s.RetryDelay))
	}
	if s.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %s: must not be negative (0: the pool's handler_timeout)", s.Timeout))
	}
	switch {
	case s.Kind == KindFanout && s.Fanout == nil:
		errs = append(errs, errors.New("fanout: required for kind fanout (queue, count)"))
	case s.Kind != KindFanout && s.Fanout != nil:
		errs = append(errs, errors.New("fanout: only for kind fanout"))
	case s.Fanout != nil:
		errs = append(errs, s.Fanout.validate())
	}
	switch {
	case s.Kind == KindGroup && s.Group == nil:
		errs = append(errs, errors.New("group: required for kind group (members, servers)"))
	case s.Kind != KindGroup && s.Group != nil:
		errs = append(errs, errors.New("group: only for kind group"))
	case s.Group != nil:
		errs = append(errs, s.Group.validate())
	}
	if b := s.Backend; b != nil {
		if err := subject.Validate("backend.name", b.Name); err != nil {
			errs = append(errs, err)
		}
		if b.Calls < 1 || b.Calls > MaxBackendCalls {
			errs = append(errs, fmt.Errorf("backend.calls %d: want 1..%d", b.Calls, MaxBackendCalls))
		}
	}
	for _, idc := range slices.Sorted(maps.Keys(s.Slowdown)) {
		sd := s.Slowdown[idc]
		if err := subject.Validate("idc", idc); err != nil {
			errs = append(errs, fmt.Errorf("slowdown.%s: %w", idc, err))
		}
		if sd.LatencyFactor <= 0 || math.IsInf(sd.LatencyFactor, 0) || math.IsNaN(sd.LatencyFactor) {
			errs = append(errs, fmt.Errorf("slowdown.%s.latency_factor %g: must be positive", idc, sd.LatencyFactor))
		}
		errs = append(errs, checkRate("slowdown."+idc+".error_rate", sd.ErrorRate))
	}
	return errors.Join(errs...)
}

func (f Fanout) validate() error {
	var errs []error
	if f.Queue == "" {
		errs = append(errs, errors.New("fanout.queue: required"))
	} else if err := subject.Validate("queue", f.Queue); err != nil {
		errs = append(errs, fmt.Errorf("fanout.queue: %w", err))
	}
	if f.Count < 1 || f.Count > MaxFanout {
		errs = append(errs, fmt.Errorf("fanout.count %d: want 1..%d", f.Count, MaxFanout))
	}
	if f.MaxCount < f.Count || f.MaxCount > MaxFanout {
		errs = append(errs, fmt.Errorf("fanout.max_count %d: want count (%d)..%d", f.MaxCount, f.Count, MaxFanout))
	}
	if f.Delay < 0 {
		errs = append(errs, fmt.Errorf("fanout.delay %s: must not be negative", f.Delay))
	}
	return errors.Join(errs...)
}

func checkRate(field string, r float64) error {
	if !(r >= 0 && r <= 1) { // also refuses NaN
		return fmt.Errorf("%s %g: must be between 0 and 1", field, r)
	}
	return nil
}

// HandlerOptions are the pool options of the spec (its timeout).
func (s Spec) HandlerOptions() []worker.HandlerOption {
	if s.Timeout > 0 {
		return []worker.HandlerOption{worker.Timeout(s.Timeout)}
	}
	return nil
}

// Queues maps queue names to their demo handlers, as in a worker config
// file's queues section.
type Queues map[string]Spec

// WithDefaults defaults every spec.
func (q Queues) WithDefaults() Queues {
	out := make(Queues, len(q))
	for name, s := range q {
		out[name] = s.WithDefaults()
	}
	return out
}

// Validate checks every defaulted spec and the queue names, and refuses a
// cycle of fanouts (a fanout whose subtasks come back to it, directly or
// through other fanout queues, would grow without end). Errors name the
// field as queues.<queue>.<field>.
func (q Queues) Validate() error {
	if len(q) == 0 {
		return errors.New("queues: none configured: name at least one queue and its handler")
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(q)) {
		if err := subject.Validate("queue", name); err != nil {
			errs = append(errs, fmt.Errorf("queues.%s: %w", name, err))
			continue
		}
		if err := q[name].Validate(); err != nil {
			errs = append(errs, prefixErrors("queues."+name+".", err))
		}
	}
	if len(errs) == 0 {
		errs = append(errs, q.checkCycles())
	}
	return errors.Join(errs...)
}

// checkCycles follows each chain of fanout queues.
func (q Queues) checkCycles() error {
	for _, start := range slices.Sorted(maps.Keys(q)) {
		path := []string{start}
		for at := start; ; {
			s := q[at]
			if s.Kind != KindFanout || s.Fanout == nil {
				break
			}
			at = s.Fanout.Queue
			path = append(path, at)
			if slices.Contains(path[:len(path)-1], at) {
				return fmt.Errorf("queues.%s.fanout.queue: fanouts form a cycle (%s): its tasks would multiply without end", start, strings.Join(path, " -> "))
			}
		}
	}
	return nil
}

// prefixErrors prefixes every error joined in err (at any depth).
func prefixErrors(prefix string, err error) error {
	return mapErrors(err, func(e error) error { return fmt.Errorf("%s%w", prefix, e) })
}

// mapErrors applies f to every error joined in err (at any depth) and
// joins the results.
func mapErrors(err error, f func(error) error) error {
	var out []error
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		if e != nil {
			out = append(out, f(e))
		}
	}
	walk(err)
	return errors.Join(out...)
}

// SeedFor derives a queue's handler seed from a base seed, so one seed
// makes a whole pool's demo handlers deterministic while queues still draw
// different sequences. 0 stays 0 (random).
func SeedFor(base uint64, queue string) uint64 {
	if base == 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(queue))
	s := base ^ h.Sum64()
	if s == 0 {
		s = base
	}
	return s
}
