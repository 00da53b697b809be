package mqnode

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/nats-io/nats.go"
)

// The crash test runs a node in a child process (this test binary, re-run
// with crashChildEnv set), enqueues into it over TCP from several producers,
// SIGKILLs it mid-stream, restarts it on the same data dir and checks that
// every enqueue that was acknowledged is still there and is delivered.
const crashChildEnv = "MQNODE_CRASH_CHILD"

// crashChild runs in the child: start a node, print its URL, wait to die.
func crashChild() int {
	cfg := Config{
		Name:       "crash",
		DataDir:    os.Getenv("MQNODE_CRASH_DIR"),
		Listen:     "127.0.0.1:0",
		Durability: Durability(os.Getenv("MQNODE_CRASH_DURABILITY")),
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Throttle:   testlog.NoCPUThrottle,
	}
	if os.Getenv(childSmallEnv) != "" {
		smallStore(&cfg)
	}
	n, err := New(cfg)
	if err == nil {
		err = n.Start(context.Background())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 1
	}
	fmt.Println(n.ClientURL())
	// Until SIGKILL, or SIGTERM for a clean stop (Badger flushes its
	// memtable into a table).
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	if err := n.Stop(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "crash child: stop:", err)
		return 1
	}
	return 0
}

type childNode struct {
	cmd *exec.Cmd
	url string
}

func startChild(t *testing.T, dir string, durability Durability) *childNode {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1", "MQNODE_CRASH_DIR="+dir, "MQNODE_CRASH_DURABILITY="+string(durability))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
		for s.Scan() {
		}
	}()
	select {
	case url, ok := <-line:
		if !ok || !strings.HasPrefix(url, "nats://") {
			t.Fatalf("child did not report its URL (got %q)", url)
		}
		return &childNode{cmd: cmd, url: url}
	case <-time.After(30 * time.Second):
		t.Fatal("child node did not start within 30s")
	}
	return nil
}

func TestCrashLosesNoAcknowledgedTask(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	for _, dur := range []Durability{DurabilityFsync, DurabilityAsync} {
		t.Run(string(dur), func(t *testing.T) { crashOnce(t, dur) })
	}
}

func crashOnce(t *testing.T, dur Durability) {
	dir := t.TempDir()
	child := startChild(t, dir, dur)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var mu sync.Mutex
	acked := map[string]bool{}
	const producers, batch, target = 4, 10, 3000
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			// No reconnect: a request in flight when the node dies must fail,
			// not wait for a node that is gone.
			c, err := Dial(ctx, child.url, nats.NoReconnect())
			if err != nil {
				t.Errorf("producer %d: %v", p, err)
				return
			}
			defer c.Close()
			for i := 0; ctx.Err() == nil; i++ {
				items := make([]*EnqueueItem, batch)
				for j := range items {
					items[j] = &EnqueueItem{Payload: []byte(fmt.Sprintf("p%d-%d-%d", p, i, j))}
				}
				res, err := c.Enqueue(ctx, "crash", items...)
				if err != nil {
					return // the node died
				}
				mu.Lock()
				for _, r := range res {
					acked[r.Id] = true
				}
				mu.Unlock()
			}
		}(p)
	}
	// Kill the node mid-stream, once a good number of enqueues are in.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= target {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d enqueues acknowledged in 30s", n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := child.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = child.cmd.Wait()
	wg.Wait()
	mu.Lock()
	want := len(acked)
	mu.Unlock()

	child = startChild(t, dir, dur)
	c, err := Dial(ctx, child.url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := map[string]int{}
	for {
		ds, _, err := c.Pull(ctx, PullRequest{Queue: "crash", MaxTasks: 500})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			break
		}
		items := make([]*AckItem, len(ds))
		for i, d := range ds {
			got[d.Task.Id]++
			items[i] = &AckItem{Receipt: d.Receipt}
		}
		if _, err := c.Ack(ctx, items...); err != nil {
			t.Fatal(err)
		}
	}
	lost := 0
	for id := range acked {
		if got[id] == 0 {
			lost++
		}
	}
	t.Logf("%s: %d enqueues acknowledged before SIGKILL, %d tasks found after restart (%d written but not yet acknowledged), %d lost",
		dur, want, len(got), len(got)-want+lost, lost)
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged tasks lost after SIGKILL (%s)", lost, want, dur)
	}
}
