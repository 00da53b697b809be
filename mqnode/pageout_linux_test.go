//go:build linux

package mqnode

import (
	"bytes"
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rssFileKiB is this process's resident mapped-file memory (RssFile).
func rssFileKiB(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssFile:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	t.Skip("no RssFile in /proc/self/status")
	return 0
}

// TestPageOutMappedFiles writes a value log of about 24 MiB in 1 MiB
// files, pages the store's mapped files out (all but the newest value-log
// file), and checks RssFile fell by most of it and every task still reads
// back intact.
func TestPageOutMappedFiles(t *testing.T) {
	dir := t.TempDir()
	_, c := startNode(t, Config{DataDir: dir, PageOutInterval: -1, Durability: DurabilityAsync, ValueLogFileSize: 1 << 20})
	ctx := ctxT(t)
	const n, size = 6000, 4 << 10
	for i := 0; i < n; i += 200 {
		items := make([]*EnqueueItem, 200)
		for j := range items {
			p := bytes.Repeat([]byte{byte(i + j)}, size)
			binary.BigEndian.PutUint64(p, uint64(i+j))
			items[j] = &EnqueueItem{Payload: p}
		}
		if _, err := c.Enqueue(ctx, "po", items...); err != nil {
			t.Fatal(err)
		}
	}
	before := rssFileKiB(t)
	if err := pageOutMapped(dir); err != nil {
		t.Fatal(err)
	}
	var after int64
	eventually(t, 5*time.Second, "mapped pages reclaimed", func() bool {
		after = rssFileKiB(t)
		return before-after >= n*size/1024/2
	})
	t.Logf("RssFile %d KiB → %d KiB after page-out of %d KiB of tasks", before, after, n*size/1024)
	seen := 0
	for seen < n {
		ds, _, err := c.Pull(ctx, PullRequest{Queue: "po", MaxTasks: 200, Lease: time.Minute})
		if err != nil || len(ds) == 0 {
			t.Fatalf("pulled %d of %d: %v", seen, n, err)
		}
		for _, d := range ds {
			p := d.Task.Payload
			if len(p) != size || p[size-1] != byte(binary.BigEndian.Uint64(p)) {
				t.Fatalf("task %d read back wrong after page-out", seen)
			}
			seen++
		}
	}
}
