package mqnode

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestSettledDiskPerTask measures the disk a kept settled task costs: it
// handles N tasks (256-byte payload, one 32-byte header) with and without
// keep_settled and compares the data dirs after a clean stop. Skipped
// unless MQMESH_MEASURE_SETTLED=N is set:
//
//	MQMESH_MEASURE_SETTLED=200000 go test -run TestSettledDiskPerTask -v ./mqnode/
func TestSettledDiskPerTask(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("MQMESH_MEASURE_SETTLED"))
	if n <= 0 {
		t.Skip("set MQMESH_MEASURE_SETTLED=N to measure")
	}
	measure := func(keep time.Duration) (disk int64, logical uint64, took time.Duration) {
		dir := t.TempDir()
		node, c := startNode(t, Config{DataDir: dir, Durability: DurabilityAsync, GCInterval: time.Hour,
			QueueDefaults: QueueConfig{KeepSettled: keep}})
		ctx := context.Background()
		start := time.Now()
		payload := make([]byte, 256)
		for done := 0; done < n; {
			items := make([]*EnqueueItem, min(1000, n-done))
			for i := range items {
				items[i] = &EnqueueItem{Payload: payload, Headers: map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c"}}
			}
			if _, err := c.Enqueue(ctx, "m", items...); err != nil {
				t.Fatal(err)
			}
			ds, _, err := c.Pull(ctx, PullRequest{Queue: "m", MaxTasks: len(items)})
			if err != nil {
				t.Fatal(err)
			}
			acks := make([]*AckItem, len(ds))
			for i, d := range ds {
				acks[i] = &AckItem{Receipt: d.Receipt}
			}
			if _, err := c.Ack(ctx, acks...); err != nil {
				t.Fatal(err)
			}
			done += len(ds)
		}
		took = time.Since(start)
		_, qs, err := c.Stats(ctx, "m")
		if err != nil {
			t.Fatal(err)
		}
		logical = qs[0].SettledBytes
		if err := node.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if info, err := d.Info(); err == nil {
					disk += info.Sys().(*syscall.Stat_t).Blocks * 512
				}
			}
			return nil
		})
		return disk, logical, took
	}
	base, _, tookBase := measure(0)
	kept, logical, tookKept := measure(time.Hour)
	per := float64(kept-base) / float64(n)
	const perHour = 5000 * 3600
	t.Logf("%d tasks handled: disk %d B without keep_settled (%s), %d B with keep_settled=1h (%s)", n, base, tookBase, kept, tookKept)
	t.Logf("kept settled task: %.0f B on disk each (stats: %.0f B logical); 1 h at 5,000 tasks/s = %d tasks ≈ %.1f GiB",
		per, float64(logical)/float64(n), perHour, per*perHour/(1<<30))
}

// TestSettledDiskReclaimed checks that disk stays bounded by the window:
// 8 rounds of N/8 tasks, each round 3 s apart with keep_settled 2 s (so
// only the last round is still kept at the end), small memtables and
// value-log files so compaction and value-log GC (every second) run as they
// do under a steady load; the data dir is compared with the same run
// keeping nothing. Skipped unless MQMESH_MEASURE_SETTLED=N is set.
func TestSettledDiskReclaimed(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("MQMESH_MEASURE_SETTLED"))
	if n <= 0 {
		t.Skip("set MQMESH_MEASURE_SETTLED=N to measure")
	}
	const rounds = 8
	const keptBytes = 417 // disk per kept task, measured by TestSettledDiskPerTask
	run := func(keep time.Duration) int64 {
		dir := t.TempDir()
		node, c := startNode(t, Config{DataDir: dir, Durability: DurabilityAsync, GCInterval: time.Second,
			MaxPayload: 64 << 10, NATSMaxPayload: 80 << 10, MemTableSize: 2 << 20, ValueLogFileSize: 2 << 20,
			QueueDefaults: QueueConfig{KeepSettled: keep}})
		ctx := context.Background()
		payload := make([]byte, 256)
		for r := 0; r < rounds; r++ {
			for done := 0; done < n/rounds; {
				items := make([]*EnqueueItem, min(200, n/rounds-done))
				for i := range items {
					items[i] = &EnqueueItem{Payload: payload}
				}
				if _, err := c.Enqueue(ctx, "m", items...); err != nil {
					t.Fatal(err)
				}
				ds, _, err := c.Pull(ctx, PullRequest{Queue: "m", MaxTasks: len(items)})
				if err != nil {
					t.Fatal(err)
				}
				acks := make([]*AckItem, len(ds))
				for i, d := range ds {
					acks[i] = &AckItem{Receipt: d.Receipt}
				}
				if _, err := c.Ack(ctx, acks...); err != nil {
					t.Fatal(err)
				}
				done += len(ds)
			}
			if r < rounds-1 {
				time.Sleep(3 * time.Second)
			}
		}
		c.Close()
		if err := node.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		return dirBlocks(dir)
	}
	none := run(0)
	kept := run(2 * time.Second)
	t.Logf("%d tasks in %d rounds 3 s apart, keep_settled 2 s: %d B on disk, %d B keeping nothing: %+d B, %.1f rounds' worth of kept tasks at %d B each (the window holds 1 round; none expiring would be %d)",
		n, rounds, kept, none, kept-none, float64(kept-none)/float64(n/rounds*keptBytes), keptBytes, rounds)
}

func dirBlocks(dir string) (disk int64) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				disk += info.Sys().(*syscall.Stat_t).Blocks * 512
			}
		}
		return nil
	})
	return disk
}
