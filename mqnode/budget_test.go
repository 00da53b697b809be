package mqnode

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// The ready windows of many queues stay within the node's budget, and every
// queue still delivers all of its tasks.
func TestReadyWindowsShareOneBudget(t *testing.T) {
	const queues, perQueue, size = 20, 100, 4 << 10
	n, c := startNode(t, Config{ReadyBudget: 1 << 20})
	ctx := ctxT(t)
	payload := bytes.Repeat([]byte("b"), size)
	for i := 0; i < queues; i++ {
		items := make([]*EnqueueItem, perQueue)
		for j := range items {
			items[j] = &EnqueueItem{Payload: payload}
		}
		if _, err := c.Enqueue(ctx, fmt.Sprintf("q%02d", i), items...); err != nil {
			t.Fatal(err)
		}
	}
	// Stats of a queue with an empty window start a refill of it in the
	// background: every window is paged in at once.
	if _, _, err := c.Stats(ctx, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "windows paged in", func() bool {
		return n.st.nRefills.Load() == 0 && n.st.bufTotal.Load() > 0
	})
	held := n.st.bufTotal.Load()
	limit := 2*n.cfg.ReadyBudget + queues*(size+512)
	t.Logf("%d queues × %d KiB of ready tasks: %d KiB in windows (budget %d KiB)", queues, perQueue*size>>10, held>>10, n.cfg.ReadyBudget>>10)
	if held > limit || held == 0 {
		t.Fatalf("windows hold %d bytes; budget %d, limit %d", held, n.cfg.ReadyBudget, limit)
	}
	for i := 0; i < queues; i++ {
		if got := drain(t, ctx, c, fmt.Sprintf("q%02d", i)); len(got) != perQueue {
			t.Fatalf("queue %d delivered %d of %d", i, len(got), perQueue)
		}
	}
	if b := n.st.bufTotal.Load(); b != 0 {
		t.Fatalf("drained, yet %d bytes counted in windows", b)
	}
}

// TestQueuesRSS measures a node's resident memory with many queues, each
// with a backlog larger than its fair share of the ready budget, once every
// window has been paged in. Run it by hand:
//
//	MQNODE_RSS_QUEUES=1,100,10000 go test -run TestQueuesRSS -v ./mqnode/
func TestQueuesRSS(t *testing.T) {
	spec := os.Getenv("MQNODE_RSS_QUEUES")
	if spec == "" {
		t.Skip("set MQNODE_RSS_QUEUES=1,100,10000 to measure")
	}
	for _, f := range strings.Split(spec, ",") {
		nq, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		child := startChild(t, dir, DurabilityAsync)
		ctx := ctxT(t)
		c, err := Dial(ctx, child.url, nats.NoReconnect())
		if err != nil {
			t.Fatal(err)
		}
		// 64 KiB of ready tasks per queue (4 × 16 KiB), and for one queue
		// 16 MiB, more than its window.
		perQueue := 4
		if nq == 1 {
			perQueue = 1024
		}
		payload := bytes.Repeat([]byte("r"), 16<<10)
		start := time.Now()
		for i := 0; i < nq; i++ {
			items := make([]*EnqueueItem, perQueue)
			for j := range items {
				items[j] = &EnqueueItem{Payload: payload}
			}
			for len(items) > 0 {
				k := min(len(items), 32)
				if _, err := c.Enqueue(ctx, fmt.Sprintf("rss-%05d", i), items[:k]...); err != nil {
					t.Fatal(err)
				}
				items = items[k:]
			}
		}
		if _, _, err := c.Stats(ctx, ""); err != nil {
			t.Fatal(err)
		}
		rss := childRSS(t, child.cmd.Process.Pid)
		t.Logf("%d queues, %d KiB ready each, every window paged in: RSS %d MiB = %d MiB anonymous (heap) + %d MiB file pages (Badger's mapped logs) (enqueue took %s)",
			nq, perQueue*16, rss["VmRSS:"]>>20, rss["RssAnon:"]>>20, rss["RssFile:"]>>20, time.Since(start).Round(time.Millisecond))
		c.Close()
		_ = child.cmd.Process.Kill()
		_ = child.cmd.Wait()
	}
}

// childRSS reads the memory lines of /proc/<pid>/status, in bytes.
func childRSS(t *testing.T, pid int) map[string]int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, ln := range strings.Split(string(b), "\n") {
		if f := strings.Fields(ln); len(f) >= 2 && strings.HasPrefix(f[0], "Rss") || strings.HasPrefix(ln, "VmRSS:") {
			kb, _ := strconv.ParseInt(strings.Fields(ln)[1], 10, 64)
			out[strings.Fields(ln)[0]] = kb << 10
		}
	}
	return out
}
