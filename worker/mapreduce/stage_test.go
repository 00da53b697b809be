package mapreduce_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/worker/mapreduce"
)

func newPool(t testing.TB, name string, size int) *mapreduce.Pool {
	t.Helper()
	p, err := mapreduce.NewPool(name, size)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ints(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func TestBatchesExact(t *testing.T) {
	mod := func(m int) func(int) int { return func(i int) int { return i % m } }
	for _, tc := range []struct {
		name  string
		items []int
		key   func(int) int
		size  int
		want  [][]int // items per batch, in batch order
		keys  []int
	}{
		{name: "empty", items: nil, key: mod(3), size: 2},
		{name: "no key one batch", items: ints(5), size: 0, want: [][]int{{0, 1, 2, 3, 4}}, keys: []int{0}},
		{name: "no key size 2", items: ints(5), size: 2, want: [][]int{{0, 1}, {2, 3}, {4}}, keys: []int{0, 0, 0}},
		{name: "exact multiple", items: ints(6), key: mod(2), size: 3, want: [][]int{{0, 2, 4}, {1, 3, 5}}, keys: []int{0, 1}},
		{name: "split per key", items: ints(10), key: mod(2), size: 2,
			want: [][]int{{0, 2}, {4, 6}, {8}, {1, 3}, {5, 7}, {9}}, keys: []int{0, 0, 0, 1, 1, 1}},
		{name: "size 1", items: []int{5, 4, 5}, key: mod(10), size: 1, want: [][]int{{5}, {5}, {4}}, keys: []int{5, 5, 4}},
		{name: "first-seen key order", items: []int{7, 3, 8, 13}, key: mod(5), size: 0,
			want: [][]int{{7}, {3, 8, 13}}, keys: []int{2, 3}},
		{name: "unlimited", items: ints(7), key: mod(3), size: 0, want: [][]int{{0, 3, 6}, {1, 4}, {2, 5}}, keys: []int{0, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs := mapreduce.Batches(tc.items, tc.key, tc.size)
			if len(bs) != len(tc.want) {
				t.Fatalf("%d batches, want %d: %v", len(bs), len(tc.want), bs)
			}
			for i, b := range bs {
				if b.Index != i || b.Key != tc.keys[i] || !slices.Equal(b.Items, tc.want[i]) {
					t.Errorf("batch %d = %+v, want index %d key %d items %v", i, b, i, tc.keys[i], tc.want[i])
				}
				if tc.size > 0 && len(b.Items) > tc.size {
					t.Errorf("batch %d has %d items, limit %d", i, len(b.Items), tc.size)
				}
			}
			// The stage sees exactly these batches.
			var mu sync.Mutex
			var seen [][]int
			_, err := mapreduce.Map(context.Background(), mapreduce.Stage[int, int, int]{
				Name: "t", Pool: newPool(t, "p", 3), Key: tc.key, BatchSize: tc.size,
				Map: func(_ context.Context, b mapreduce.Batch[int, int]) (int, error) {
					mu.Lock()
					defer mu.Unlock()
					seen = append(seen, slices.Clone(b.Items))
					return 0, nil
				},
			}, tc.items)
			if err != nil {
				t.Fatal(err)
			}
			if len(seen) != len(tc.want) {
				t.Fatalf("stage ran %d batches, want %d", len(seen), len(tc.want))
			}
		})
	}
}

func TestReduceSeesEveryResultOnce(t *testing.T) {
	const n = 1000
	pool := newPool(t, "p", 4)
	seen := map[int]int{}
	type acc struct{ sum, count int }
	got, err := mapreduce.MapReduce(context.Background(), mapreduce.Stage[int, int, int]{
		Name: "sum", Pool: pool, Key: func(i int) int { return i % 7 }, BatchSize: 9,
		Map: func(_ context.Context, b mapreduce.Batch[int, int]) (int, error) {
			s := 0
			for _, v := range b.Items {
				s += v
			}
			return s, nil
		},
	}, ints(n), acc{}, func(a acc, b mapreduce.Batch[int, int], r int) acc {
		seen[b.Index]++ // no lock: reduce runs in the caller's goroutine
		for _, v := range b.Items {
			a.count++
			_ = v
		}
		a.sum += r
		return a
	})
	if err != nil {
		t.Fatal(err)
	}
	wantBatches := len(mapreduce.Batches(ints(n), func(i int) int { return i % 7 }, 9))
	if len(seen) != wantBatches {
		t.Fatalf("reduce saw %d batches, want %d", len(seen), wantBatches)
	}
	for i, c := range seen {
		if c != 1 {
			t.Errorf("batch %d reduced %d times", i, c)
		}
	}
	if got.sum != n*(n-1)/2 || got.count != n {
		t.Fatalf("sum %d count %d, want %d %d", got.sum, got.count, n*(n-1)/2, n)
	}
	st := pool.Stats()
	if st.Completed != uint64(wantBatches) || st.Busy != 0 || st.Waiting != 0 {
		t.Fatalf("stats %+v, want %d completed, none busy or waiting", st, wantBatches)
	}
}

// nested runs 4 outer batches, each running an inner stage of 4 batches.
func nested(ctx context.Context, outer, inner *mapreduce.Pool) (int, error) {
	innerStage := mapreduce.Stage[int, int, int]{
		Name: "inner", Pool: inner, Key: func(i int) int { return i },
		Map: func(ctx context.Context, b mapreduce.Batch[int, int]) (int, error) {
			time.Sleep(time.Millisecond) // simulated work
			return len(b.Items), nil
		},
	}
	sum := func(a int, _ mapreduce.Batch[int, int], r int) int { return a + r }
	return mapreduce.MapReduce(ctx, mapreduce.Stage[int, int, int]{
		Name: "outer", Pool: outer, Key: func(i int) int { return i % 4 },
		Map: func(ctx context.Context, b mapreduce.Batch[int, int]) (int, error) {
			return mapreduce.MapReduce(ctx, innerStage, ints(4), 0, sum)
		},
	}, ints(8), 0, sum)
}

func TestNestedSharedPoolStalls(t *testing.T) {
	shared := newPool(t, "shared", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := nested(ctx, shared, shared)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("nested stages on one pool of 2: err %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stalled job took %s to return after its deadline", d)
	}
	t.Logf("stalled as expected after %s: %v", time.Since(start).Round(time.Millisecond), err)
	if st := shared.Stats(); st.Busy != 0 || st.Waiting != 0 {
		t.Fatalf("after the stall the pool is not idle: %+v", st)
	}
}

func TestNestedIsolatedPoolsComplete(t *testing.T) {
	outer, inner := newPool(t, "outer", 2), newPool(t, "inner", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := nested(ctx, outer, inner)
	if err != nil {
		t.Fatal(err)
	}
	if got != 16 {
		t.Fatalf("got %d, want 16 (4 outer batches × 4 inner items)", got)
	}
	if st := inner.Stats(); st.Completed != 16 {
		t.Fatalf("inner pool completed %d batches, want 16", st.Completed)
	}
}

func TestFailFastCancelsTheRest(t *testing.T) {
	boom := errors.New("boom")
	var started, cancelled, finished atomic.Int32
	const batches = 20
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	res, err := mapreduce.Map(ctx, mapreduce.Stage[int, int, int]{
		Name: "ff", Pool: newPool(t, "p", 3), Key: func(i int) int { return i },
		Map: func(ctx context.Context, b mapreduce.Batch[int, int]) (int, error) {
			started.Add(1)
			if b.Index == 0 {
				return 0, boom
			}
			select {
			case <-ctx.Done():
				cancelled.Add(1)
				return 0, ctx.Err()
			case <-time.After(5 * time.Second): // a batch the failure did not stop
				finished.Add(1)
				return 1, nil
			}
		},
	}, ints(batches))
	if !errors.Is(err, boom) || res != nil {
		t.Fatalf("res %v err %v, want no results and boom", res, err)
	}
	var be *mapreduce.BatchError[int]
	if !errors.As(err, &be) || be.Index != 0 || be.Stage != "ff" {
		t.Fatalf("err %v, want a BatchError of batch 0", err)
	}
	if finished.Load() != 0 {
		t.Fatalf("%d batches ran to the end after the failure", finished.Load())
	}
	notStarted := batches - started.Load()
	if cancelled.Load()+notStarted != batches-1 {
		t.Fatalf("cancelled %d + never started %d, want %d", cancelled.Load(), notStarted, batches-1)
	}
	if time.Since(start) > 4*time.Second {
		t.Fatalf("fail-fast took %s", time.Since(start))
	}
	t.Logf("after the failure: %d batches saw a cancelled context, %d never started", cancelled.Load(), notStarted)
}

func TestCollectReturnsPartialResults(t *testing.T) {
	res, err := mapreduce.Map(context.Background(), mapreduce.Stage[int, string, int]{
		Name: "c", Pool: newPool(t, "p", 3), Policy: mapreduce.Collect,
		Key:       func(i int) string { return fmt.Sprint("k", i%5) },
		BatchSize: 2,
		Map: func(_ context.Context, b mapreduce.Batch[string, int]) (int, error) {
			if b.Index%2 == 1 {
				return 0, fmt.Errorf("batch %d failed", b.Index)
			}
			return len(b.Items), nil
		},
	}, ints(20)) // 5 keys × 4 items = 10 batches
	if len(res) != 5 {
		t.Fatalf("%d results, want 5", len(res))
	}
	for _, r := range res {
		if r.Batch.Index%2 != 0 || r.Value != 2 {
			t.Errorf("unexpected result %+v", r)
		}
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("err %T %v, want a joined error", err, err)
	}
	var idx []int
	for _, e := range joined.Unwrap() {
		var be *mapreduce.BatchError[string]
		if !errors.As(e, &be) {
			t.Fatalf("%v is no BatchError", e)
		}
		idx = append(idx, be.Index)
	}
	if !slices.Equal(idx, []int{1, 3, 5, 7, 9}) {
		t.Fatalf("failed batches %v, want 1 3 5 7 9", idx)
	}
	if !strings.Contains(err.Error(), "batch 7 failed") {
		t.Fatalf("error does not list batch 7: %v", err)
	}
}

func TestCollectReportsBatchesNeverStarted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res, err := mapreduce.Map(ctx, mapreduce.Stage[int, int, int]{
		Name: "c", Pool: newPool(t, "p", 1), Policy: mapreduce.Collect, Key: func(i int) int { return i },
		Map: func(_ context.Context, b mapreduce.Batch[int, int]) (int, error) {
			if b.Index == 1 {
				cancel()
			}
			return b.Index, nil
		},
	}, ints(5))
	if len(res) != 2 || !errors.Is(err, context.Canceled) {
		t.Fatalf("res %v err %v, want batches 0 and 1 and Canceled for the rest", res, err)
	}
	if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 3 {
		t.Fatalf("%d errors, want 3 (batches never started): %v", n, err)
	}
}

func TestPanicsBecomeErrors(t *testing.T) {
	pool := newPool(t, "p", 2)
	_, err := mapreduce.Map(context.Background(), mapreduce.Stage[int, int, int]{
		Name: "p", Pool: pool, Key: func(i int) int { return i },
		Map: func(_ context.Context, b mapreduce.Batch[int, int]) (int, error) {
			if b.Index == 2 {
				panic("map exploded")
			}
			return 0, nil
		},
	}, ints(4))
	var pe *mapreduce.PanicError
	if !errors.As(err, &pe) || pe.Value != "map exploded" || !strings.Contains(string(pe.Stack), "TestPanicsBecomeErrors") {
		t.Fatalf("err %v, want a PanicError with the stack", err)
	}
	if st := pool.Stats(); st.Busy != 0 {
		t.Fatalf("a panicking batch kept its slot: %+v", st)
	}

	_, err = mapreduce.MapReduce(context.Background(), mapreduce.Stage[int, int, int]{
		Name: "r", Pool: pool,
		Map: func(context.Context, mapreduce.Batch[int, int]) (int, error) { return 1, nil },
	}, ints(3), 0, func(int, mapreduce.Batch[int, int], int) int { panic(errors.ErrUnsupported) })
	if !errors.As(err, &pe) || !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("reduce panic: err %v", err)
	}

	err = mapreduce.Parallel(context.Background(),
		func(context.Context) error { return nil },
		func(context.Context) error { panic("parallel exploded") })
	if !errors.As(err, &pe) || pe.Value != "parallel exploded" {
		t.Fatalf("parallel panic: err %v", err)
	}
}

func TestCancelWhileWaitingForSlot(t *testing.T) {
	pool := newPool(t, "one", 1)
	hold := make(chan struct{})
	holding := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := mapreduce.Map(context.Background(), mapreduce.Stage[int, int, int]{
			Name: "holder", Pool: pool,
			Map: func(context.Context, mapreduce.Batch[int, int]) (int, error) {
				close(holding)
				<-hold
				return 0, nil
			},
		}, ints(1))
		done <- err
	}()
	<-holding
	defer func() {
		close(hold)
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	waited := make(chan error, 1)
	go func() {
		_, err := mapreduce.Map(ctx, mapreduce.Stage[int, int, int]{
			Name: "waiter", Pool: pool,
			Map: func(context.Context, mapreduce.Batch[int, int]) (int, error) {
				return 0, errors.New("must not run")
			},
		}, ints(1))
		waited <- err
	}()
	testlog.Eventually(t, 5*time.Second, "a batch waiting for the slot", func() bool { return pool.Stats().Waiting == 1 })
	cancel()
	select {
	case err := <-waited:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("cancelled wait did not return")
	}
	st := pool.Stats()
	if st.Waiting != 0 || st.Busy != 1 || st.WaitTime <= 0 {
		t.Fatalf("stats %+v, want none waiting, the holder busy, some wait time", st)
	}
}

func TestStageValidation(t *testing.T) {
	m := func(context.Context, mapreduce.Batch[int, int]) (int, error) { return 0, nil }
	p := newPool(t, "p", 1)
	for name, s := range map[string]mapreduce.Stage[int, int, int]{
		"no pool":        {Name: "s", Map: m},
		"no map":         {Name: "s", Pool: p},
		"negative batch": {Name: "s", Pool: p, Map: m, BatchSize: -1},
		"bad policy":     {Name: "s", Pool: p, Map: m, Policy: 7},
	} {
		if _, err := mapreduce.Map(context.Background(), s, ints(1)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
