package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

// Task is what a handler gets: one delivery of a task.
type Task struct {
	ID      string
	Queue   string
	Payload []byte
	Headers map[string]string
	// Attempt is 1 on the first delivery; handlers should be idempotent
	// (delivery is at least once) and may use ID and Attempt to be so.
	Attempt uint32
	// Created is when the task was enqueued.
	Created time.Time
	// Origin is the node the task came from, and Tier how far that is.
	Origin Origin
	Tier   backlog.Tier
	// LastError is the error of the previous attempt, if any.
	LastError string
	// Producer names who enqueued the task (the producer's connection
	// name @ host, or its own mqmesh-producer header), if known.
	Producer string

	usage usage // backend calls reported by the handler (Report)
}

// Origin names a node of the mesh.
type Origin struct{ IDC, Node string }

func (o Origin) String() string { return o.IDC + "/" + o.Node }

// Subtask is a new task a handler returns with its result (a streaming
// task): it is enqueued on the task's own node in the same Badger
// transaction as the ack, so either the ack and every subtask happen or
// none does.
type Subtask struct {
	Payload []byte
	Headers map[string]string
	Delay   time.Duration
	// DedupKey makes a subtask idempotent across a redelivered parent.
	DedupKey string
}

type outcome int

const (
	outcomeDone outcome = iota
	outcomeRetry
	outcomeGiveUp
)

// Result is what a handler returns: done, retry later, or give up, and
// optionally subtasks (with done).
type Result struct {
	outcome      outcome
	delay        time.Duration
	err          string
	subtasks     []Subtask
	subtaskQueue string
}

// Done acknowledges the task.
func Done() Result { return Result{outcome: outcomeDone} }

// Succeeded reports whether r acks the task (Done, with or without
// subtasks).
func (r Result) Succeeded() bool { return r.outcome == outcomeDone }

// Retry nacks the task: it is delivered again after the queue's backoff
// (or after delay, when delay > 0). err is kept as the task's last error.
func Retry(err error, delay time.Duration) Result {
	r := Result{outcome: outcomeRetry, delay: delay}
	if err != nil {
		r.err = err.Error()
	}
	return r
}

// GiveUp sends the task to the dead letter queue with a reason.
func GiveUp(reason string) Result { return Result{outcome: outcomeGiveUp, err: reason} }

// Fail turns an error into a result: nil is Done, an error wrapping
// ErrGiveUp is GiveUp, anything else is Retry with backoff.
func Fail(err error) Result {
	switch {
	case err == nil:
		return Done()
	case errors.Is(err, ErrGiveUp):
		return GiveUp(err.Error())
	}
	return Retry(err, 0)
}

// ErrGiveUp, wrapped in an error passed to Fail, means "do not retry".
var ErrGiveUp = errors.New("give up")

// WithSubtasks returns a Done result that also enqueues subtasks on queue
// ("" = the task's own queue), atomically with the ack.
func (r Result) WithSubtasks(queue string, subtasks ...Subtask) Result {
	r.outcome = outcomeDone
	r.subtaskQueue = queue
	r.subtasks = append(r.subtasks, subtasks...)
	return r
}

// ackItem renders a result as the node's ack request item, with the
// backend calls the handler reported.
func (r Result) ackItem(receipt []byte, calls []*mqnode.BackendCalls) *mqnode.AckItem {
	switch r.outcome {
	case outcomeRetry:
		return &mqnode.AckItem{Receipt: receipt, Kind: mqnode.AckNack, DelayMs: r.delay.Milliseconds(), Error: r.err, Calls: calls}
	case outcomeGiveUp:
		return &mqnode.AckItem{Receipt: receipt, Kind: mqnode.AckDead, Error: r.err, Calls: calls}
	}
	it := &mqnode.AckItem{Receipt: receipt, SubtaskQueue: r.subtaskQueue, Calls: calls}
	for _, s := range r.subtasks {
		it.Subtasks = append(it.Subtasks, &mqnode.EnqueueItem{Payload: s.Payload, Headers: s.Headers, DelayMs: s.Delay.Milliseconds(), DedupKey: s.DedupKey})
	}
	return it
}

// Handler processes one task. It must honour ctx: the pool cancels it at
// the handler's deadline and on a hard stop. A panic is caught and counts
// as a failure (retry).
type Handler func(ctx context.Context, t *Task) Result

func panicResult(v any) Result {
	return Retry(fmt.Errorf("handler panic: %v", v), 0)
}
