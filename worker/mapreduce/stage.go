package mapreduce

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
)

// ErrorPolicy says what a stage does when a batch fails.
type ErrorPolicy int

const (
	// FailFast cancels the context of the batches still running, starts no
	// more, and returns the first error with no results.
	FailFast ErrorPolicy = iota
	// Collect runs every batch and returns the results of those that
	// succeeded with a joined error listing every failed batch.
	Collect
)

func (p ErrorPolicy) String() string {
	switch p {
	case FailFast:
		return "fail-fast"
	case Collect:
		return "collect"
	}
	return fmt.Sprintf("ErrorPolicy(%d)", int(p))
}

// Batch is the unit of work of a stage: up to Stage.BatchSize items that
// share a key. Index numbers the batches of one run from 0, in the order
// the keys first appear in the input.
type Batch[K comparable, T any] struct {
	Key   K
	Index int
	Items []T
}

// Result is one batch's result.
type Result[K comparable, T, R any] struct {
	Batch Batch[K, T]
	Value R
}

// Stage describes one batch-parallel step: group the items by Key, cut each
// group into batches of at most BatchSize, run Map on every batch while
// holding a slot of Pool.
type Stage[T any, K comparable, R any] struct {
	// Name appears in errors.
	Name string
	// Pool bounds the batches running at once; required. A nested stage
	// should use a pool of its own (see the package doc).
	Pool *Pool
	// Key groups the items; nil puts every item in one group (keyed by
	// the zero K).
	Key func(T) K
	// BatchSize is the largest number of items in a batch; 0 means no
	// limit (one batch per key).
	BatchSize int
	// Map runs one batch. It may run a stage itself (nesting). It should
	// return when ctx is done. A panic is returned as a *PanicError.
	Map func(ctx context.Context, b Batch[K, T]) (R, error)
	// Policy is what a failed batch does to the rest; FailFast by default.
	Policy ErrorPolicy
}

func (s *Stage[T, K, R]) validate() error {
	switch {
	case s.Pool == nil:
		return fmt.Errorf("mapreduce: stage %q: no pool", s.Name)
	case s.Map == nil:
		return fmt.Errorf("mapreduce: stage %q: no map function", s.Name)
	case s.BatchSize < 0:
		return fmt.Errorf("mapreduce: stage %q: batch size %d, want 0 (no limit) or more", s.Name, s.BatchSize)
	case s.Policy != FailFast && s.Policy != Collect:
		return fmt.Errorf("mapreduce: stage %q: unknown policy %v", s.Name, s.Policy)
	}
	return nil
}

// Batches groups items by key (keys in order of first appearance, items in
// input order) and cuts each group into batches of at most size items
// (size 0: no limit). A nil key puts every item in one group.
func Batches[T any, K comparable](items []T, key func(T) K, size int) []Batch[K, T] {
	var keys []K
	groups := make(map[K][]T)
	for _, it := range items {
		var k K
		if key != nil {
			k = key(it)
		}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], it)
	}
	var out []Batch[K, T]
	for _, k := range keys {
		g := groups[k]
		for len(g) > 0 {
			n := len(g)
			if size > 0 && n > size {
				n = size
			}
			out = append(out, Batch[K, T]{Key: k, Index: len(out), Items: g[:n:n]})
			g = g[n:]
		}
	}
	return out
}

// BatchError is the error of one failed batch.
type BatchError[K comparable] struct {
	Stage string
	Key   K
	Index int
	Err   error
}

func (e *BatchError[K]) Error() string {
	return fmt.Sprintf("mapreduce: stage %q batch %d (key %v): %v", e.Stage, e.Index, e.Key, e.Err)
}

func (e *BatchError[K]) Unwrap() error { return e.Err }

// PanicError is a panic in a user function, turned into an error.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("panic: %v\n%s", e.Value, e.Stack)
}

// Unwrap returns the panic value if it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// protect calls f, turning a panic into a *PanicError.
func protect[R any](f func() (R, error)) (r R, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return f()
}

// Map runs the stage over items and returns the results of the batches
// that succeeded, in batch order. With FailFast the first error is returned
// (wrapped in a *BatchError) and no results; with Collect the error joins a
// *BatchError per failed batch, and batches never started because ctx was
// done are reported with ctx's error. Map returns only when every batch it
// started has returned.
func Map[T any, K comparable, R any](ctx context.Context, s Stage[T, K, R], items []T) ([]Result[K, T, R], error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	batches := Batches(items, s.Key, s.BatchSize)
	values := make([]R, len(batches))
	errs := make([]error, len(batches))
	ran := make([]bool, len(batches))

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg       sync.WaitGroup
		firstMu  sync.Mutex
		firstErr error
	)
	var waitErr error
	for i, b := range batches {
		if err := s.Pool.acquire(ctx); err != nil {
			waitErr = context.Cause(ctx)
			if waitErr == nil {
				waitErr = err
			}
			break
		}
		ran[i] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.Pool.release()
			v, err := protect(func() (R, error) { return s.Map(ctx, b) })
			if err != nil {
				err = &BatchError[K]{Stage: s.Name, Key: b.Key, Index: b.Index, Err: err}
				errs[b.Index] = err
				if s.Policy == FailFast {
					firstMu.Lock()
					if firstErr == nil {
						firstErr = err
						cancel(err)
					}
					firstMu.Unlock()
				}
				return
			}
			values[b.Index] = v
		}()
	}
	wg.Wait()

	if s.Policy == FailFast {
		if firstErr != nil {
			return nil, firstErr
		}
		if waitErr != nil {
			return nil, fmt.Errorf("mapreduce: stage %q: waiting for pool %q: %w", s.Name, s.Pool.Name(), waitErr)
		}
	}
	results := make([]Result[K, T, R], 0, len(batches))
	var all []error
	for i, b := range batches {
		switch {
		case !ran[i]:
			all = append(all, &BatchError[K]{Stage: s.Name, Key: b.Key, Index: b.Index,
				Err: fmt.Errorf("not started: waiting for pool %q: %w", s.Pool.Name(), waitErr)})
		case errs[i] != nil:
			all = append(all, errs[i])
		default:
			results = append(results, Result[K, T, R]{Batch: b, Value: values[i]})
		}
	}
	return results, errors.Join(all...)
}

// MapReduce runs the stage like Map and folds the results into acc with
// reduce, in batch order, in the calling goroutine (so reduce needs no
// locking and sees every result exactly once). With Collect the partial
// fold is returned with the joined error; with FailFast, acc unchanged.
func MapReduce[T any, K comparable, R, A any](ctx context.Context, s Stage[T, K, R], items []T,
	acc A, reduce func(acc A, b Batch[K, T], r R) A) (A, error) {
	results, err := Map(ctx, s, items)
	for _, r := range results {
		next, rerr := protect(func() (A, error) { return reduce(acc, r.Batch, r.Value), nil })
		if rerr == nil {
			acc = next
			continue
		}
		{
			return acc, errors.Join(err, fmt.Errorf("mapreduce: stage %q reduce: %w", s.Name, rerr))
		}
	}
	return acc, err
}
