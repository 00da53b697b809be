package mapreduce

import (
	"context"
	"sync"
)

// Step is one step of a job: a stage, a fold, or any function. Steps
// compose serially with Then and in parallel with Both and Parallel.
type Step[I, O any] func(ctx context.Context, in I) (O, error)

// Step returns the stage as a step from items to the results of Map.
func (s Stage[T, K, R]) Step() Step[[]T, []Result[K, T, R]] {
	return func(ctx context.Context, items []T) ([]Result[K, T, R], error) {
		return Map(ctx, s, items)
	}
}

// Then runs a, then b on a's output (serial composition). b does not run
// if a fails.
func Then[I, M, O any](a Step[I, M], b Step[M, O]) Step[I, O] {
	return func(ctx context.Context, in I) (O, error) {
		m, err := protect(func() (M, error) { return a(ctx, in) })
		if err != nil {
			var zero O
			return zero, err
		}
		if err := ctx.Err(); err != nil {
			var zero O
			return zero, err
		}
		return protect(func() (O, error) { return b(ctx, m) })
	}
}

// Pair holds the outputs of Both.
type Pair[A, B any] struct {
	First  A
	Second B
}

// Both runs a and b on the same input at once (parallel composition,
// fail-fast: the first error cancels the other step's context). The two
// steps run in their own goroutines and hold no pool slot; the stages
// inside them wait on their own pools.
func Both[I, A, B any](a Step[I, A], b Step[I, B]) Step[I, Pair[A, B]] {
	return func(ctx context.Context, in I) (Pair[A, B], error) {
		var p Pair[A, B]
		err := Parallel(ctx,
			func(ctx context.Context) (err error) { p.First, err = a(ctx, in); return err },
			func(ctx context.Context) (err error) { p.Second, err = b(ctx, in); return err },
		)
		if err != nil {
			return Pair[A, B]{}, err
		}
		return p, nil
	}
}

// Parallel runs every function at once and waits for all of them. The
// first error (a panic becomes a *PanicError) cancels the others' context
// and is returned. Like Both, it holds no pool slot.
func Parallel(ctx context.Context, fns ...func(ctx context.Context) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, f := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := protect(func() (struct{}, error) { return struct{}{}, f(ctx) })
			if err != nil {
				once.Do(func() { first = err; cancel(err) })
			}
		}()
	}
	wg.Wait()
	return first
}

// Serial runs the functions one after another and stops at the first
// error (or when ctx is done).
func Serial(ctx context.Context, fns ...func(ctx context.Context) error) error {
	for _, f := range fns {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := protect(func() (struct{}, error) { return struct{}{}, f(ctx) }); err != nil {
			return err
		}
	}
	return nil
}
