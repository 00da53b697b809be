package mapreduce_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/worker/mapreduce"
)

func TestThenAndBoth(t *testing.T) {
	pool := newPool(t, "p", 2)
	double := mapreduce.Stage[int, int, []int]{
		Name: "double", Pool: pool, BatchSize: 3,
		Map: func(_ context.Context, b mapreduce.Batch[int, int]) ([]int, error) {
			out := make([]int, len(b.Items))
			for i, v := range b.Items {
				out[i] = 2 * v
			}
			return out, nil
		},
	}
	flatten := mapreduce.Step[[]mapreduce.Result[int, int, []int], []int](
		func(_ context.Context, rs []mapreduce.Result[int, int, []int]) ([]int, error) {
			var out []int
			for _, r := range rs {
				out = append(out, r.Value...)
			}
			return out, nil
		})
	count := mapreduce.Step[[]int, string](func(_ context.Context, xs []int) (string, error) {
		return strconv.Itoa(len(xs)), nil
	})
	job := mapreduce.Both(mapreduce.Then(double.Step(), flatten), count)
	got, err := job(context.Background(), ints(10))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.First) != 10 || got.First[9] != 18 || got.Second != "10" {
		t.Fatalf("got %+v", got)
	}

	boom := errors.New("boom")
	var ranSecond atomic.Bool
	fail := mapreduce.Then(mapreduce.Step[int, int](func(context.Context, int) (int, error) { return 0, boom }),
		mapreduce.Step[int, int](func(context.Context, int) (int, error) { ranSecond.Store(true); return 0, nil }))
	if _, err := fail(context.Background(), 1); !errors.Is(err, boom) || ranSecond.Load() {
		t.Fatalf("Then after a failure: err %v, second ran %v", err, ranSecond.Load())
	}
}

func TestParallelFailFastAndSerial(t *testing.T) {
	boom := errors.New("boom")
	start := time.Now()
	err := mapreduce.Parallel(context.Background(),
		func(context.Context) error { return boom },
		func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Second):
				return errors.New("not cancelled")
			}
		})
	if !errors.Is(err, boom) || time.Since(start) > 4*time.Second {
		t.Fatalf("Parallel: err %v after %s", err, time.Since(start))
	}

	var ran []int
	err = mapreduce.Serial(context.Background(),
		func(context.Context) error { ran = append(ran, 1); return nil },
		func(context.Context) error { ran = append(ran, 2); return boom },
		func(context.Context) error { ran = append(ran, 3); return nil })
	if !errors.Is(err, boom) || len(ran) != 2 {
		t.Fatalf("Serial: err %v ran %v", err, ran)
	}
}
