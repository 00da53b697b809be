package mapreduce_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mqmesh/mqmesh/worker/mapreduce"
)

// The same trivial work (add the item to a counter) for items items, with
// concurrency limit 8: plain errgroup fan-out, one goroutine per item, vs a
// stage with batch size 1 (one goroutine and slot per item) and a stage
// with batch size 64.

const benchItems = 10_000

func BenchmarkOverheadErrgroup(b *testing.B) {
	items := ints(benchItems)
	for b.Loop() {
		var sum atomic.Int64
		g, _ := errgroup.WithContext(context.Background())
		g.SetLimit(8)
		for _, it := range items {
			g.Go(func() error { sum.Add(int64(it)); return nil })
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchItems), "ns/item")
}

func benchStage(b *testing.B, batch int) {
	items := ints(benchItems)
	pool := newPool(b, "bench", 8)
	s := mapreduce.Stage[int, int, int64]{
		Name: "bench", Pool: pool, BatchSize: batch,
		Map: func(_ context.Context, bt mapreduce.Batch[int, int]) (int64, error) {
			var s int64
			for _, v := range bt.Items {
				s += int64(v)
			}
			return s, nil
		},
	}
	sum := func(a int64, _ mapreduce.Batch[int, int], r int64) int64 { return a + r }
	for b.Loop() {
		if _, err := mapreduce.MapReduce(context.Background(), s, items, 0, sum); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchItems), "ns/item")
}

func BenchmarkOverheadStageBatch1(b *testing.B)  { benchStage(b, 1) }
func BenchmarkOverheadStageBatch64(b *testing.B) { benchStage(b, 64) }

// BenchmarkGroupMessage10k delivers to 10,000 members over 10 access
// servers (pools rpc 32, push 64), with no simulated latency (framework
// cost) and with 1 ms per push batch.
func BenchmarkGroupMessage10k(b *testing.B) {
	members := simulatedMembers(10_000, 10)
	for _, bc := range []struct {
		name string
		work int // milliseconds per push batch
	}{{"nowork", 0}, {"1ms-per-push", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			pools, err := mapreduce.NewPools(mapreduce.PoolsConfig{"rpc": 32, "push": 64})
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				c, err := deliverGroupMessage(context.Background(), pools, members, msDur(bc.work))
				if err != nil || c.Delivered+c.Failed != len(members) {
					b.Fatalf("%+v %v", c, err)
				}
			}
			b.ReportMetric(float64(b.N*len(members))/b.Elapsed().Seconds(), "members/s")
		})
	}
}

func msDur(ms int) time.Duration { return time.Duration(ms) * time.Millisecond }
