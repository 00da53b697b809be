package mapreduce

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"
)

// ErrUnknownPool is returned by Pools.Get for a name the config does not
// define.
var ErrUnknownPool = errors.New("mapreduce: unknown pool")

// Pool is a named, sized set of slots. A stage runs each batch while it
// holds one slot of its own pool, and waits on that pool only: stages on
// different pools never wait for each other. A Pool is safe for concurrent
// use by any number of stages.
type Pool struct {
	name string
	sem  chan struct{}

	busy      atomic.Int64
	waiting   atomic.Int64
	completed atomic.Uint64
	waitNanos atomic.Int64
}

// NewPool returns a pool of size slots; size must be at least 1.
func NewPool(name string, size int) (*Pool, error) {
	if name == "" {
		return nil, errors.New("mapreduce: pool name is empty")
	}
	if size < 1 {
		return nil, fmt.Errorf("mapreduce: pool %q: size %d, want at least 1", name, size)
	}
	return &Pool{name: name, sem: make(chan struct{}, size)}, nil
}

// Name is the pool's name.
func (p *Pool) Name() string { return p.name }

// Size is the number of slots.
func (p *Pool) Size() int { return cap(p.sem) }

// PoolStats is a reading of a pool's counters.
type PoolStats struct {
	Name string
	Size int
	// Busy is the number of slots held now, Waiting the number of batches
	// waiting for a slot now.
	Busy, Waiting int
	// Completed counts the batches that held a slot and gave it back.
	Completed uint64
	// WaitTime is the total time batches spent waiting for a slot
	// (including waits that ended in cancellation).
	WaitTime time.Duration
}

// Stats reads the pool's counters. The fields are read one by one, so a
// reading taken while the pool is in use is not one instant.
func (p *Pool) Stats() PoolStats {
	return PoolStats{
		Name:      p.name,
		Size:      cap(p.sem),
		Busy:      int(p.busy.Load()),
		Waiting:   int(p.waiting.Load()),
		Completed: p.completed.Load(),
		WaitTime:  time.Duration(p.waitNanos.Load()),
	}
}

// acquire takes a slot, waiting until one is free or ctx is done.
func (p *Pool) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case p.sem <- struct{}{}:
		p.busy.Add(1)
		return nil
	default:
	}
	p.waiting.Add(1)
	start := time.Now()
	defer func() {
		p.waitNanos.Add(int64(time.Since(start)))
		p.waiting.Add(-1)
	}()
	select {
	case p.sem <- struct{}{}:
		if err := ctx.Err(); err != nil { // both were ready: cancellation wins
			<-p.sem
			return err
		}
		p.busy.Add(1)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Pool) release() {
	p.busy.Add(-1)
	p.completed.Add(1)
	<-p.sem
}

// PoolsConfig sizes the pools by name, as read from a config file
// (for example `pools: {rpc: 32, db: 8}`).
type PoolsConfig map[string]int

// Validate checks every entry and names the first bad one (in name order).
func (c PoolsConfig) Validate() error {
	if len(c) == 0 {
		return errors.New("mapreduce: pools: no pool configured")
	}
	for _, name := range slices.Sorted(maps.Keys(c)) {
		if name == "" {
			return errors.New("mapreduce: pools: empty pool name")
		}
		if n := c[name]; n < 1 {
			return fmt.Errorf("mapreduce: pools.%s: size %d, want at least 1", name, n)
		}
	}
	return nil
}

// Pools is the registry of a process's pools, built once from config.
type Pools struct {
	byName map[string]*Pool
}

// NewPools validates cfg and builds one pool per entry.
func NewPools(cfg PoolsConfig) (*Pools, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ps := &Pools{byName: make(map[string]*Pool, len(cfg))}
	for name, size := range cfg {
		p, err := NewPool(name, size)
		if err != nil {
			return nil, err
		}
		ps.byName[name] = p
	}
	return ps, nil
}

// Get returns the pool of that name, or an error wrapping ErrUnknownPool.
func (ps *Pools) Get(name string) (*Pool, error) {
	p, ok := ps.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownPool, name)
	}
	return p, nil
}

// Stats reads every pool, in name order.
func (ps *Pools) Stats() []PoolStats {
	out := make([]PoolStats, 0, len(ps.byName))
	for _, name := range slices.Sorted(maps.Keys(ps.byName)) {
		out = append(out, ps.byName[name].Stats())
	}
	return out
}
