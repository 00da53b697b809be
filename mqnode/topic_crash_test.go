package mqnode

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestTopicCrashNoPartialFanOut enqueues to a topic with three
// subscriptions (one filtered by tag) in a child node, SIGKILLs it
// mid-stream, restarts it and checks that every task is in either every
// queue it matches or in none, and that every acknowledged one is in all.
func TestTopicCrashNoPartialFanOut(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	dir := t.TempDir()
	child := startChild(t, dir, DurabilityAsync)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := Dial(ctx, child.url)
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.TopicCreate(ctx, "orders", Subscription{Queue: "billing"}, Subscription{Queue: "audit"},
		Subscription{Queue: "vip", Header: "tier", Value: "gold"})
	admin.Close()
	if err != nil {
		t.Fatal(err)
	}
	gold := func(p string) bool { return len(p)%3 == 0 } // a stable tag per payload

	var mu sync.Mutex
	acked := map[string]bool{} // payloads
	const producers, batch, target = 4, 10, 1500
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			c, err := Dial(ctx, child.url, nats.NoReconnect())
			if err != nil {
				t.Errorf("producer %d: %v", p, err)
				return
			}
			defer c.Close()
			for i := 0; ctx.Err() == nil; i++ {
				items := make([]*EnqueueItem, batch)
				for j := range items {
					pl := fmt.Sprintf("p%d-%d-%d", p, i, j)
					h := map[string]string{}
					if gold(pl) {
						h["tier"] = "gold"
					}
					items[j] = &EnqueueItem{Payload: []byte(pl), Headers: h}
				}
				if _, err := c.Enqueue(ctx, TopicPrefix+"orders", items...); err != nil {
					return // the node died
				}
				mu.Lock()
				for _, it := range items {
					acked[string(it.Payload)] = true
				}
				mu.Unlock()
			}
		}(p)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= target {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d topic enqueues acknowledged in 30s", n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := child.cmd.Process.Kill(); err != nil { // SIGKILL, mid-stream
		t.Fatal(err)
	}
	_ = child.cmd.Wait()
	wg.Wait()

	child = startChild(t, dir, DurabilityAsync)
	c, err := Dial(ctx, child.url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	in := map[string]map[string]int{} // payload → queue → copies
	for _, q := range []string{"billing", "audit", "vip"} {
		for _, tk := range drainAck(t, c, q) {
			pl := string(tk.Payload)
			if in[pl] == nil {
				in[pl] = map[string]int{}
			}
			in[pl][q]++
		}
	}
	partial := 0
	for pl, qs := range in {
		want := map[string]int{"billing": 1, "audit": 1}
		if gold(pl) {
			want["vip"] = 1
		}
		if fmt.Sprint(qs) != fmt.Sprint(want) {
			partial++
			if partial < 5 {
				t.Errorf("task %s after the crash: copies %v, want %v", pl, qs, want)
			}
		}
	}
	lost := 0
	for pl := range acked {
		if in[pl] == nil {
			lost++
		}
	}
	t.Logf("%d topic enqueues acknowledged before SIGKILL, %d tasks found after restart, %d partial fan-outs, %d lost",
		len(acked), len(in), partial, lost)
	if partial > 0 || lost > 0 {
		t.Fatalf("%d partial fan-outs, %d acknowledged tasks lost", partial, lost)
	}
}
