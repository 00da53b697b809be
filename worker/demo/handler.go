package demo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqmesh/mqmesh/worker"
)

// Env is where a handler runs.
type Env struct {
	// IDC is the pool's IDC: it selects the spec's slowdown.
	IDC string
	// Seed fixes the random source when the spec sets none (0: random).
	Seed uint64
}

// Subtask headers of a fanout handler.
const (
	HeaderParent = "demo-parent" // the parent task's id
	HeaderIndex  = "demo-index"  // the subtask's index, 0..n-1
)

// Handler is a demo handler: it draws a latency and an outcome from its
// spec, waits (honouring ctx), and returns the outcome. It is safe for
// concurrent use; its random source is seeded and shared, so a given seed
// yields the same sequence of draws (the order in which concurrent tasks
// take them is the scheduler's).
type Handler struct {
	spec Spec
	// factor, errRate and giveUp are the latency factor and the rates in
	// the handler's IDC (its slowdown applied); slowed says one applies.
	factor          float64
	errRate, giveUp float64
	slowed          bool

	mu  sync.Mutex
	rng *rand.Rand

	group *groupJob // kind group: its pools

	counts struct {
		done, retried, gaveUp, cancelled, subtasks atomic.Uint64
		delivered, undelivered                     atomic.Uint64
	}
}

// Counts are what a handler did.
type Counts struct {
	Done      uint64 `json:"done"`      // succeeded (fanout: with subtasks)
	Retried   uint64 `json:"retried"`   // injected failures (Retry)
	GaveUp    uint64 `json:"gave_up"`   // injected give-ups (GiveUp)
	Cancelled uint64 `json:"cancelled"` // ctx ended during the latency
	Subtasks  uint64 `json:"subtasks"`  // subtasks returned
	// Kind group: member deliveries that succeeded and failed.
	Delivered   uint64 `json:"delivered,omitempty"`
	Undelivered uint64 `json:"undelivered,omitempty"`
}

// New returns the handler of spec (defaulted and validated here) for a
// pool in env.IDC.
func New(spec Spec, env Env) (*Handler, error) {
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	seed := spec.Seed
	if seed == 0 {
		seed = env.Seed
	}
	if seed == 0 {
		seed = rand.Uint64()
	}
	h := &Handler{
		spec:    spec,
		factor:  1,
		errRate: spec.ErrorRate,
		giveUp:  spec.GiveUpRate,
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
	if sd, ok := spec.Slowdown[env.IDC]; ok {
		h.slowed = true
		h.factor = sd.LatencyFactor
		h.errRate = min(h.errRate+sd.ErrorRate, 1-h.giveUp)
	}
	if spec.Kind == KindGroup {
		j, err := newGroupJob(h)
		if err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		h.group = j
	}
	return h, nil
}

// Spec returns the handler's defaulted spec.
func (h *Handler) Spec() Spec { return h.spec }

// Counts returns what the handler did so far.
func (h *Handler) Counts() Counts {
	c := &h.counts
	return Counts{Done: c.done.Load(), Retried: c.retried.Load(), GaveUp: c.gaveUp.Load(), Cancelled: c.cancelled.Load(), Subtasks: c.subtasks.Load(),
		Delivered: c.delivered.Load(), Undelivered: c.undelivered.Load()}
}

type outcome int

const (
	outcomeDone outcome = iota
	outcomeRetry
	outcomeGiveUp
)

// step is what one task will do, drawn from the random source.
type step struct {
	latency  time.Duration
	outcome  outcome
	subtasks int // fanout: how many
}

// draw takes one step from the random source: latency first, then the
// outcome, then (fanout) the number of subtasks, in that fixed order.
func (h *Handler) draw() step {
	h.mu.Lock()
	defer h.mu.Unlock()
	var s step
	s.latency = h.spec.Latency.Sample(h.rng)
	if h.factor != 1 {
		s.latency = time.Duration(float64(s.latency) * h.factor)
	}
	if h.errRate > 0 || h.giveUp > 0 {
		switch u := h.rng.Float64(); {
		case u < h.giveUp:
			s.outcome = outcomeGiveUp
		case u < h.giveUp+h.errRate:
			s.outcome = outcomeRetry
		}
	}
	if f := h.spec.Fanout; f != nil && s.outcome == outcomeDone {
		s.subtasks = f.Count
		if f.MaxCount > f.Count {
			s.subtasks += h.rng.IntN(f.MaxCount - f.Count + 1)
		}
	}
	return s
}

// ErrInjected is wrapped by the error of every failure a demo handler
// injects (kept as the task's last error).
var ErrInjected = errors.New("demo: injected failure")

// Handle is the worker.Handler: wait the drawn latency, then return the
// drawn outcome. A ctx that ends first (deadline, hard stop) makes it a
// retry.
func (h *Handler) Handle(ctx context.Context, t *worker.Task) worker.Result {
	s := h.draw()
	if b := h.spec.Backend; b != nil {
		t.Report(b.Name, b.Calls) // the calls are made, whatever the outcome
	}
	if !sleep(ctx, s.latency) {
		h.counts.cancelled.Add(1)
		return worker.Retry(fmt.Errorf("demo: cut short after part of %s: %w", s.latency, context.Cause(ctx)), 0)
	}
	switch s.outcome {
	case outcomeRetry:
		h.counts.retried.Add(1)
		return worker.Retry(h.injected("error"), h.spec.RetryDelay)
	case outcomeGiveUp:
		h.counts.gaveUp.Add(1)
		return worker.GiveUp(h.injected("give-up").Error())
	}
	if h.group != nil {
		d, err := h.group.deliver(ctx, t.ID)
		if err != nil {
			h.counts.cancelled.Add(1)
			return worker.Retry(fmt.Errorf("demo: group delivery: %w", err), 0)
		}
		h.counts.delivered.Add(uint64(d.delivered))
		h.counts.undelivered.Add(uint64(d.failed))
	}
	h.counts.done.Add(1)
	if s.subtasks == 0 {
		return worker.Done()
	}
	h.counts.subtasks.Add(uint64(s.subtasks))
	return worker.Done().WithSubtasks(h.spec.Fanout.Queue, Subtasks(t, s.subtasks, h.spec.Fanout.Delay)...)
}

func (h *Handler) injected(what string) error {
	if h.slowed {
		return fmt.Errorf("%w (%s; this IDC is slowed down)", ErrInjected, what)
	}
	return fmt.Errorf("%w (%s)", ErrInjected, what)
}

// Subtasks derives n subtasks from a parent: payload "<parent payload>/i",
// headers naming the parent and the index, and a dedup key of the parent's
// id and the index, so a redelivered parent does not enqueue them twice.
func Subtasks(parent *worker.Task, n int, delay time.Duration) []worker.Subtask {
	out := make([]worker.Subtask, n)
	for i := range out {
		idx := strconv.Itoa(i)
		p := make([]byte, 0, len(parent.Payload)+1+len(idx))
		p = append(append(append(p, parent.Payload...), '/'), idx...)
		out[i] = worker.Subtask{
			Payload:  p,
			Headers:  map[string]string{HeaderParent: parent.ID, HeaderIndex: idx},
			Delay:    delay,
			DedupKey: parent.ID + "/" + idx,
		}
	}
	return out
}

// sleep waits d or until ctx ends; false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
