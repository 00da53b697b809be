package mqnode

import (
	"context"
	"testing"
)

// BenchmarkReplEnqueue compares enqueue throughput, one task per request
// from 64 concurrent producers over in-process connections, of one fsync
// node against a sync and an async replicated pair (fsync on both sides):
//
//	go test -run '^$' -bench ReplEnqueue -benchtime 20000x ./mqnode
func BenchmarkReplEnqueue(b *testing.B) {
	for _, bc := range []struct {
		name     string
		replicas int
		mode     ReplicationMode
	}{{"fsync-unreplicated", 0, ""}, {"fsync-sync-replica", 1, ReplicationSync}, {"fsync-async-replica", 1, ReplicationAsync}} {
		b.Run(bc.name, func(b *testing.B) {
			mk := func(name string) Config {
				return Config{Name: name, DataDir: b.TempDir(), Replicas: bc.replicas, Replication: bc.mode,
					Logger: testLogger(b), Throttle: Config{}.Throttle}
			}
			cfgA, cfgB := mk("a"), mk("b")
			cfgA.Throttle.Disabled, cfgB.Throttle.Disabled = true, true
			nodes, err := StartGroup(context.Background(), cfgA, cfgB)
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				for _, n := range nodes {
					_ = n.Stop(context.Background())
				}
			}()
			if bc.replicas > 0 {
				if err := nodes[0].WaitReplicated(ctxT(b)); err != nil {
					b.Fatal(err)
				}
			}
			c, err := nodes[0].Client()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			item := &EnqueueItem{Payload: make([]byte, 256)}
			b.SetParallelism(32) // x GOMAXPROCS producers
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Enqueue(context.Background(), "bench", item); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
			if bc.replicas > 0 {
				st := nodes[0].Replication()
				b.ReportMetric(float64(st.AckedRecords)/float64(max(st.Batches, 1)), "records/batch")
			}
		})
	}
}
