// Package lifecycle is the one lifecycle contract of mqmesh's long-lived
// parts: mqnode.Node, mesh.Mesh, mesh.NodeAgent, backlog.Publisher,
// backlog.Watcher, worker.Pool, the CLI's standalone node and the
// simulator's hosts all keep it, and all run the same conformance test
// (package lifecycletest).
//
// A part is built by its package's constructor (New, NewNodeAgent, ...),
// then:
//
//   - Start(ctx) error starts it. It runs once: a second call returns an
//     error wrapping ErrAlreadyStarted, a call after Stop or Kill one
//     wrapping ErrStopped (a stopped part is not restarted: build a new
//     one). A Start that fails, or whose ctx is already done, undoes what
//     it began and leaves the part as it was before the call: not started,
//     and a new Start may succeed (e.g. once the port in use is free).
//   - Stop(ctx) error stops it gracefully: a mesh member announces its
//     leave (others see "left", not "failed"), a worker pool lets running
//     handlers finish and sends their acks, a node answers the requests in
//     flight. ctx bounds the graceful part; when it ends the part stops
//     abruptly and Stop returns. Stop is idempotent (later calls return
//     nil at once) and safe before Start (the part is then stopped without
//     ever running).
//   - Kill() stops it at once, as if its process had died. That means the
//     same for every part:
//     no graceful leave (mesh peers detect a failure through gossip, as
//     for a crash); no drain (running handlers are cancelled and not
//     acked, requests in flight are cut; their tasks come back when the
//     node releases the dead member's leases or the leases expire);
//     nothing is written beyond what the durability mode already made
//     durable. It still releases everything the part holds in this
//     process (goroutines, sockets, ports, files, store locks) before it
//     returns, so a new part can take its place at once. Kill is safe
//     before Start, twice, and after Stop.
//
// Start, Stop and Kill may be called from any goroutine; they are
// serialised, so a Stop or Kill during a Start waits for that Start to
// end (Start honours its ctx), and a Kill during a Stop waits for the Stop
// (cancel the Stop's ctx to make it quick).
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Part is the contract (see the package doc).
type Part interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	Kill()
}

// Sentinels a Start returns (wrapped with the part's name); branch on them
// with errors.Is.
var (
	ErrAlreadyStarted = errors.New("already started")
	ErrStopped        = errors.New("stopped (a stopped part does not start again: build a new one)")
)

// State is where a part is in its lifecycle.
type State int32

const (
	Idle    State = iota // built, or after a failed Start: Start may run
	Running              // started
	Stopped              // stopped or killed: final
)

func (s State) String() string {
	switch s {
	case Idle:
		return "idle"
	case Running:
		return "running"
	case Stopped:
		return "stopped"
	}
	return "unknown"
}

// Guard is the state machine a part embeds to keep the contract: it runs
// the part's own start, stop and kill functions at most when the contract
// allows, one at a time. The zero value is ready (Idle); Name prefixes its
// errors.
type Guard struct {
	Name string

	mu    sync.Mutex
	state atomic.Int32
}

// State is the current state (without waiting for a Start or Stop in
// progress).
func (g *Guard) State() State { return State(g.state.Load()) }

// Start runs start if the part is Idle and ctx is not done. start must
// undo what it began when it fails: the part stays Idle. On success the
// part is Running.
func (g *Guard) Start(ctx context.Context, start func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch g.State() {
	case Running:
		return g.err(ErrAlreadyStarted)
	case Stopped:
		return g.err(ErrStopped)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: start: %w", g.Name, err)
	}
	if err := start(); err != nil {
		return err
	}
	g.state.Store(int32(Running))
	return nil
}

// Stop marks the part Stopped and runs stop if it was Running; otherwise
// it returns nil at once.
func (g *Guard) Stop(stop func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	prev := g.State()
	g.state.Store(int32(Stopped))
	if prev != Running {
		return nil
	}
	return stop()
}

// Kill is Stop for a kill function.
func (g *Guard) Kill(kill func()) {
	_ = g.Stop(func() error { kill(); return nil })
}

func (g *Guard) err(sentinel error) error {
	if g.Name == "" {
		return sentinel
	}
	return fmt.Errorf("%s: %w", g.Name, sentinel)
}
