package mqnode

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func dirSize(t *testing.T, dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// TestDiskBoundedUnderChurn: tasks enqueued and acked over and over do not
// make the store grow without bound: value-log GC reclaims acked tasks.
// Small memtable and value-log files make flushes, compactions and GC
// happen within the test.
func TestDiskBoundedUnderChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("churn test skipped in -short mode")
	}
	dir := t.TempDir()
	_, c := startNode(t, Config{DataDir: dir, Durability: DurabilityAsync, MemTableSize: 2 << 20, NATSMaxPayload: 128 << 10,
		MaxPayload: 64 << 10, ValueLogFileSize: 1 << 20, GCInterval: 100 * time.Millisecond,
		// The trace keeps ~3 small events per task for its retention
		// (README: Operations); this test is about reclaiming task records.
		Trace: TraceConfig{Disabled: true}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // slow under -race
	defer cancel()
	payload := make([]byte, 512)
	const rounds, per = 3000, 100
	var peak int64
	for r := 0; r < rounds; r++ {
		items := make([]*EnqueueItem, per)
		for i := range items {
			items[i] = &EnqueueItem{Payload: payload}
		}
		if _, err := c.Enqueue(ctx, "churn", items...); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < per; {
			ds, _, err := c.Pull(ctx, PullRequest{Queue: "churn", MaxTasks: 100, MaxWait: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) == 0 {
				continue
			}
			acks := make([]*AckItem, len(ds))
			for i, d := range ds {
				acks[i] = &AckItem{Receipt: d.Receipt}
			}
			if _, err := c.Ack(ctx, acks...); err != nil {
				t.Fatal(err)
			}
			got += len(ds)
		}
		peak = max(peak, dirSize(t, dir))
	}
	written := int64(rounds * per * len(payload))
	final := dirSize(t, dir)
	t.Logf("churned %d MiB of payload; store peaked at %.1f MiB, ends at %.1f MiB", written>>20, float64(peak)/(1<<20), float64(final)/(1<<20))
	// Reclaiming waits for the LSM compactions that tell value-log GC what
	// is garbage, so the store holds some acked tasks; it must not hold
	// most of them.
	if peak > written/2 {
		t.Fatalf("store peaked at %d bytes while churning %d bytes of acked tasks: not reclaimed", peak, written)
	}
}
