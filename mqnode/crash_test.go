package mqnode

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
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
	if v := os.Getenv("MQNODE_CHILD_READY_BUDGET"); v != "" {
		cfg.ReadyBudget, _ = strconv.ParseInt(v, 10, 64)
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
	return startTestChild(t, crashChildEnv+"=1", "MQNODE_CRASH_DIR="+dir, "MQNODE_CRASH_DURABILITY="+string(durability))
}

// startTestChild runs this test binary as a child node with env added to
// the environment, and returns once it printed its client URL (its first
// line on stdout; the rest is drained). The child is killed at cleanup.
func startTestChild(t *testing.T, env ...string) *childNode {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
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
	// The kill comes at a seeded random point; MQNODE_CRASH_SEED repeats a
	// run, MQNODE_CRASH_ROUNDS=N kills N times per mode (the long mode).
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("MQNODE_CRASH_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	rounds := 1
	if v := os.Getenv("MQNODE_CRASH_ROUNDS"); v != "" {
		rounds, _ = strconv.Atoi(v)
	}
	t.Logf("MQNODE_CRASH_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	for _, dur := range []Durability{DurabilityFsync, DurabilityAsync} {
		for r := 0; r < rounds; r++ {
			target := 1000 + rng.IntN(4000)
			t.Run(fmt.Sprintf("%s/%d", dur, target), func(t *testing.T) { crashOnce(t, dur, target) })
		}
	}
}

func crashOnce(t *testing.T, dur Durability, target int) {
	dir := t.TempDir()
	child := startChild(t, dir, dur)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var mu sync.Mutex
	acked := map[string]bool{}
	const producers, batch = 4, 10
	var wg sync.WaitGroup
	// A consumer settles tasks meanwhile, so the kill also lands among acks
	// (deletes in the write-ahead log and the ledger's ranges).
	var settled, enqueued int
	// Tasks the consumer acked or was acking (kept apart from acked: the
	// consumer may see a task before its producer's reply arrives).
	settledIDs := map[string]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := Dial(ctx, child.url, nats.NoReconnect())
		if err != nil {
			return
		}
		defer c.Close()
		for ctx.Err() == nil {
			ds, _, err := c.Pull(ctx, PullRequest{Queue: "crash", MaxTasks: 20, MaxWait: 10 * time.Millisecond})
			if err != nil {
				return
			}
			items := make([]*AckItem, len(ds))
			for i, d := range ds {
				items[i] = &AckItem{Receipt: d.Receipt}
			}
			if len(items) == 0 {
				continue
			}
			// An ack in flight at the kill may have committed without its
			// reply: those tasks are not owed either way.
			mu.Lock()
			for _, d := range ds {
				settledIDs[d.Task.Id] = true
			}
			mu.Unlock()
			res, err := c.Ack(ctx, items...)
			if err != nil {
				return
			}
			mu.Lock()
			for _, r := range res {
				if ItemErr(r) == nil {
					settled++
				}
			}
			mu.Unlock()
		}
	}()
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
				enqueued += len(res)
				mu.Unlock()
			}
		}(p)
	}
	// Kill the node mid-stream, once a good number of enqueues are in.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := enqueued
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
	for id := range settledIDs {
		delete(acked, id)
	}
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
	t.Logf("%s: %d enqueues acknowledged and %d acks confirmed before SIGKILL; %d owed, %d found after restart, %d lost",
		dur, enqueued, settled, want, len(got), lost)
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged tasks lost after SIGKILL (%s)", lost, want, dur)
	}
	// No damage, so the ledger must not report any loss.
	if _, qs, err := c.Stats(ctx, "crash"); err != nil || len(qs) != 1 || qs[0].LostTotal != 0 {
		t.Fatalf("after a plain kill -9 the node reports loss: %v %v", qs, err)
	}
}
