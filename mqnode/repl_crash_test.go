package mqnode

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/internal/testlog"
)

// replChildEnv makes the test binary run a replicated primary "a" routed
// to the parent's buddy "b" (replChild).
const replChildEnv = "MQNODE_REPL_CHILD"

func replChild() int {
	cfg := Config{
		Name: "a", Host: "a", Replicas: 1, DataDir: os.Getenv("MQNODE_REPL_DIR"), Listen: "127.0.0.1:0",
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Throttle: testlog.NoCPUThrottle,
	}
	route, err := url.Parse(os.Getenv("MQNODE_REPL_ROUTE"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "repl child:", err)
		return 1
	}
	n, err := StartGroupMember(context.Background(), cfg, route)
	if err != nil {
		fmt.Fprintln(os.Stderr, "repl child:", err)
		return 1
	}
	n.SetPeers([]Peer{{IDC: DefaultIDC, Name: "a", Host: "a", Alive: true}, {IDC: DefaultIDC, Name: "b", Host: "b", Alive: true}})
	fmt.Println(n.ClientURL())
	select {} // until SIGKILL
}

// TestReplKill9PrimaryAndLoseItsDisk is the drill in one machine:
// a sync-replicated primary in a child process takes enqueues from 8
// producers, is killed with SIGKILL mid-stream, and its data dir is
// deleted; its buddy (in this process) takes over and every acknowledged
// task is delivered by the buddy. Unacknowledged tasks that reached the
// buddy may be delivered too (counted, not failures).
func TestReplKill9PrimaryAndLoseItsDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	cfgB := replCfg(t, "b", nil)
	cfgB.Durability = DurabilityFsync
	b, err := StartGroupMember(ctxT(t), cfgB, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop(context.Background()) })
	dir := t.TempDir()
	child := startTestChild(t, replChildEnv+"=1", "MQNODE_REPL_DIR="+dir, "MQNODE_REPL_ROUTE="+b.RouteURL().String())
	cmd, clientURL := child.cmd, child.url
	alive := []Peer{{IDC: DefaultIDC, Name: "a", Host: "a", Alive: true}, {IDC: DefaultIDC, Name: "b", Host: "b", Alive: true}}
	b.SetPeers(alive)
	c, err := Dial(ctxT(t), clientURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eventually(t, 20*time.Second, "child replicated", func() bool {
		rep, err := c.StatsReply(ctxT(t), "")
		return err == nil && rep.Replication.GetState() == ReplReplicated
	})

	var mu sync.Mutex
	acked := map[string]bool{}
	var n atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				items := []*EnqueueItem{{Payload: fmt.Appendf(nil, "%d-%d", g, i)}, {Payload: fmt.Appendf(nil, "%d-%d'", g, i)}}
				res, err := c.Enqueue(ctx, "jobs", items...)
				cancel()
				if err != nil {
					return // the node died
				}
				mu.Lock()
				for _, r := range res {
					acked[r.Id] = true
				}
				mu.Unlock()
				n.Add(int64(len(res)))
			}
		}()
	}
	eventually(t, 60*time.Second, "2000 acknowledged", func() bool { return n.Load() >= 2000 })
	if err := cmd.Process.Kill(); err != nil { // SIGKILL, mid-stream
		t.Fatal(err)
	}
	_ = cmd.Wait()
	close(stop)
	wg.Wait()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	b.SetPeers([]Peer{{IDC: DefaultIDC, Name: "a", Host: "a", Alive: false}, alive[1]})
	eventually(t, 30*time.Second, "takeover", func() bool { return b.Replication().Takeovers == 1 })
	seen := drainCount(t, client(t, b), "jobs")
	lost, dups, extra := 0, 0, 0
	for id := range acked {
		if seen[id] == 0 {
			lost++
		}
	}
	for id, k := range seen {
		if k > 1 {
			dups++
		}
		if !acked[id] {
			extra++
		}
	}
	t.Logf("acknowledged %d; the buddy delivered %d: lost %d, delivered twice %d, unacknowledged but kept %d", len(acked), len(seen), lost, dups, extra)
	if lost != 0 {
		t.Fatalf("%d acknowledged tasks lost", lost)
	}
}
