package mqnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// childSmallEnv makes the child node use a store sized for a 64 MiB disk.
const childSmallEnv = "MQNODE_CHILD_SMALL"

// smallStore sizes a store for a small filesystem: 16 KiB tasks, 2 MiB
// memtables and value-log files, a 16 MiB reserve.
func smallStore(cfg *Config) {
	cfg.MaxPayload = 16 << 10
	cfg.NATSMaxPayload = 128 << 10
	cfg.MemTableSize = 2 << 20
	cfg.ValueLogFileSize = 2 << 20
	cfg.BlockCacheSize = 4 << 20
	cfg.IndexCacheSize = 2 << 20
	cfg.DiskReserve = 16 << 20
}

// mountTmpfs mounts a tmpfs of size at a new dir, or skips loudly.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "store-tmpfs-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		os.Remove(dir)
		t.Skipf("SKIPPED: cannot mount a %s tmpfs (needs root / CAP_SYS_ADMIN): %v: %s", size, err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
		os.Remove(dir)
	})
	return dir
}

// On a 64 MiB tmpfs: enqueue until DISK_FULL; the node stays up and serves
// pulls and acks; it restarts on the full disk read-mostly; once space is
// freed enqueues work again and every acknowledged task is there.
func TestDiskFullIsAnAnswer(t *testing.T) {
	if testing.Short() {
		t.Skip("disk-full test skipped in -short mode")
	}
	mnt := mountTmpfs(t, "64m")
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 16<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, "data")
	t.Setenv(childSmallEnv, "1")
	child := startChild(t, dir, DurabilityFsync)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := Dial(ctx, child.url, nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{} // acknowledged enqueues, not yet acked by us
	var mu sync.Mutex
	payload := bytes.Repeat([]byte("x"), 8<<10)
	// Under load: four producers fill the disk while a consumer acks.
	enqueueUntilFull := func() {
		t.Helper()
		var wg sync.WaitGroup
		done := make(chan struct{})
		var settledMu sync.Mutex
		settled := map[string]bool{}
		consumerDone := make(chan struct{})
		go func() {
			defer close(consumerDone)
			for {
				select {
				case <-done:
					return
				default:
				}
				ds, _, err := c.Pull(ctx, PullRequest{Queue: "fill", MaxTasks: 10})
				if err != nil {
					t.Errorf("pull while filling: %v", err)
					return
				}
				if len(ds) == 0 {
					continue
				}
				items := make([]*AckItem, len(ds))
				settledMu.Lock()
				for i, d := range ds {
					items[i] = &AckItem{Receipt: d.Receipt}
					settled[d.Task.Id] = true // acked or being acked: not owed
				}
				settledMu.Unlock()
				if _, err := c.Ack(ctx, items...); err != nil {
					t.Errorf("ack while filling: %v", err)
					return
				}
			}
		}()
		var fullErr error
		for p := 0; p < 4; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 5000; i++ {
					items := make([]*EnqueueItem, 8)
					for j := range items {
						items[j] = &EnqueueItem{Payload: payload}
					}
					res, err := c.Enqueue(ctx, "fill", items...)
					if errors.Is(err, ErrDiskFull) {
						mu.Lock()
						fullErr = err
						mu.Unlock()
						return
					}
					if err != nil {
						t.Errorf("enqueue: %v (want DISK_FULL or success)", err)
						return
					}
					mu.Lock()
					for _, r := range res {
						want[r.Id] = true
					}
					mu.Unlock()
				}
				t.Errorf("no DISK_FULL after 5000 enqueues")
			}()
		}
		wg.Wait()
		close(done)
		<-consumerDone
		for id := range settled {
			delete(want, id)
		}
		if t.Failed() {
			t.FailNow()
		}
		t.Logf("DISK_FULL with %d tasks owed (%d acked meanwhile): %v", len(want), len(settled), fullErr)
	}
	enqueueUntilFull()
	// Alive, and settling work goes on.
	if _, err := c.Info(ctx); err != nil {
		t.Fatalf("node not answering after DISK_FULL: %v", err)
	}
	ackSome := func(n int) {
		t.Helper()
		ds, _, err := c.Pull(ctx, PullRequest{Queue: "fill", MaxTasks: n})
		if err != nil || len(ds) == 0 {
			t.Fatalf("pull on a full disk: %d tasks, %v", len(ds), err)
		}
		var items []*AckItem
		for _, d := range ds {
			items = append(items, &AckItem{Receipt: d.Receipt})
		}
		res, err := c.Ack(ctx, items...)
		if err != nil {
			t.Fatalf("ack on a full disk: %v", err)
		}
		for i, r := range res {
			if err := ItemErr(r); err != nil {
				t.Fatalf("ack item on a full disk: %v", err)
			}
			delete(want, ds[i].Task.Id)
		}
	}
	ackSome(50)
	if _, err := c.DLQPurge(ctx, "fill"); err != nil {
		t.Fatalf("dlq purge on a full disk: %v", err)
	}
	c.Close()

	// Restart on the full disk: it starts read-mostly.
	if err := child.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.cmd.Wait()
	child = startChild(t, dir, DurabilityFsync)
	if c, err = Dial(ctx, child.url, nats.NoReconnect()); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Restarting may free a little (the write-ahead log is flushed), so
	// enqueue until the reserve is reached again.
	for i := 0; ; i++ {
		res, err := c.Enqueue(ctx, "fill", &EnqueueItem{Payload: payload})
		if errors.Is(err, ErrDiskFull) {
			t.Logf("after a restart on the full disk: DISK_FULL after %d more tasks", i)
			break
		}
		if err != nil || i == 2000 {
			t.Fatalf("enqueue %d after a restart on a full disk: %v, want DISK_FULL soon", i, err)
		}
		want[res[0].Id] = true
	}
	ackSome(50)

	// Free space: writes resume by themselves.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "enqueues to work again", func() bool {
		res, err := c.Enqueue(ctx, "fill", &EnqueueItem{Payload: payload})
		if err == nil {
			want[res[0].Id] = true
		}
		return err == nil
	})
	got := drain(t, ctx, c, "fill")
	lost := 0
	for id := range want {
		if !got[id] {
			lost++
		}
	}
	t.Logf("%d tasks acknowledged and not acked by the test, %d delivered after the disk was freed, %d lost", len(want), len(got), lost)
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged tasks lost", lost, len(want))
	}
}

// drain pulls and acks everything in queue, returning the ids seen.
func drain(t *testing.T, ctx context.Context, c *Client, queue string) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	for {
		ds, _, err := c.Pull(ctx, PullRequest{Queue: queue, MaxTasks: 500})
		if err != nil {
			t.Fatal(fmt.Errorf("drain %s: %w", queue, err))
		}
		if len(ds) == 0 {
			return got
		}
		items := make([]*AckItem, len(ds))
		for i, d := range ds {
			got[d.Task.Id] = true
			items[i] = &AckItem{Receipt: d.Receipt}
		}
		if _, err := c.Ack(ctx, items...); err != nil {
			t.Fatal(err)
		}
	}
}
