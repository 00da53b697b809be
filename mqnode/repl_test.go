package mqnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// replCfg is a test node config of a replicated group member.
func replCfg(t *testing.T, name string, mut func(*Config)) Config {
	t.Helper()
	cfg := withTestDefaults(t, Config{Name: name, Replicas: 1, Durability: DurabilityAsync})
	cfg.Buddy.TakeoverAfter = 300 * time.Millisecond
	cfg.Buddy.SyncTimeout = 2 * time.Second
	if mut != nil {
		mut(&cfg)
	}
	return cfg
}

// startPair starts primary a and buddy b and waits until a is replicated
// (with two nodes, each is the other's buddy).
func startPair(t *testing.T, mutA, mutB func(*Config)) (a, b *Node) {
	t.Helper()
	nodes, err := StartGroup(ctxT(t), replCfg(t, "a", mutA), replCfg(t, "b", mutB))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		t.Cleanup(func() { _ = n.Stop(context.Background()) })
	}
	if err := nodes[0].WaitReplicated(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return nodes[0], nodes[1]
}

func client(t *testing.T, n *Node) *Client {
	t.Helper()
	c, err := n.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// enqueueConcurrently enqueues n tasks from 16 goroutines and returns the
// ids acknowledged.
func enqueueConcurrently(t *testing.T, c *Client, queue string, n int) (acked map[string]bool, failed int) {
	t.Helper()
	var mu sync.Mutex
	acked = map[string]bool{}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 16 {
				res, err := c.Enqueue(ctxT(t), queue, &EnqueueItem{Payload: fmt.Appendf(nil, "task-%d", i)})
				mu.Lock()
				if err != nil {
					failed++
				} else {
					acked[res[0].Id] = true
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return acked, failed
}

// drainCount pulls and acks every task of queue on c until none is ready for a
// while, returning how often each id was delivered.
func drainCount(t *testing.T, c *Client, queue string) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for empty := 0; empty < 3; {
		ds, _, err := c.Pull(ctxT(t), PullRequest{Queue: queue, MaxTasks: 500, MaxWait: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			empty++
			continue
		}
		empty = 0
		items := make([]*AckItem, len(ds))
		for i, d := range ds {
			seen[d.Task.Id]++
			items[i] = &AckItem{Receipt: d.Receipt}
		}
		if _, err := c.Ack(ctxT(t), items...); err != nil {
			t.Fatal(err)
		}
	}
	return seen
}

// TestReplSyncSurvivesLostPrimary: every enqueue acknowledged in sync mode
// is on the buddy; the primary stops and its data dir is deleted; after
// takeover_after the buddy serves every acknowledged task (none lost;
// duplicates counted), and the primary is fenced meanwhile.
func TestReplSyncSurvivesLostPrimary(t *testing.T) {
	a, b := startPair(t, nil, nil)
	ca := client(t, a)
	acked, failed := enqueueConcurrently(t, ca, "jobs", 2000)
	if failed != 0 || len(acked) != 2000 {
		t.Fatalf("acked %d, failed %d", len(acked), failed)
	}
	// Consume some on the primary first: their acks (deletes) replicate too.
	ds, _, err := ca.Pull(ctxT(t), PullRequest{Queue: "jobs", MaxTasks: 300})
	if err != nil || len(ds) != 300 {
		t.Fatalf("pull: %d %v", len(ds), err)
	}
	for _, d := range ds {
		if _, err := ca.AckOne(ctxT(t), &AckItem{Receipt: d.Receipt}); err != nil {
			t.Fatal(err)
		}
		delete(acked, d.Task.Id)
	}
	st := a.Replication()
	if st.State != ReplReplicated || st.Buddy != "local.b" || st.Batches == 0 {
		t.Fatalf("primary status %+v", st)
	}
	// Acks are shipped in the background (a lost ack only redelivers).
	eventually(t, 5*time.Second, "acks shipped", func() bool { return a.Replication().LagRecords == 0 })
	held := b.Replication().Held
	if len(held) != 1 || held[0].Primary != "local.a" || held[0].Records != 1700 {
		t.Fatalf("buddy holds %+v, want 1700 records of local.a", held)
	}
	dir := a.Config().DataDir
	ca.Close()
	if err := a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	SetGroupPeers([]*Node{b}, []*Node{a})
	eventually(t, 20*time.Second, "takeover", func() bool { return b.Replication().Takeovers == 1 })
	seen := drainCount(t, client(t, b), "jobs")
	lost, dups := 0, 0
	for id := range acked {
		if seen[id] == 0 {
			lost++
		}
	}
	for id, c := range seen {
		if c > 1 || !acked[id] {
			dups++
		}
	}
	t.Logf("acknowledged %d, delivered by the buddy %d, lost %d, duplicates %d", len(acked), len(seen), lost, dups)
	if lost != 0 {
		t.Fatalf("%d acknowledged tasks lost", lost)
	}
	if got := b.Replication().Held; len(got) != 1 || got[0].State != "taken-over" || got[0].TakenOver != 1700 {
		t.Fatalf("buddy after takeover: %+v", got)
	}
}

// TestReplPartitionPolicies cuts the primary from its buddy (the buddy
// stops answering) and checks each sync partition policy.
func TestReplPartitionPolicies(t *testing.T) {
	for _, pol := range []PartitionPolicy{PartitionBlock, PartitionFail, PartitionLocal} {
		t.Run(string(pol), func(t *testing.T) {
			a, b := startPair(t, func(c *Config) {
				c.Buddy.PartitionPolicy = pol
				c.Buddy.SyncTimeout = 500 * time.Millisecond
				c.Buddy.TakeoverAfter = time.Hour
			}, func(c *Config) { c.Buddy.TakeoverAfter = time.Hour })
			ca := client(t, a)
			if _, err := ca.Enqueue(ctxT(t), "jobs", &EnqueueItem{Payload: []byte("before")}); err != nil {
				t.Fatal(err)
			}
			// Partition: the buddy's replication subject stops answering.
			b.rp.closeServe()
			t0 := time.Now()
			_, err := ca.Enqueue(ctxT(t), "jobs", &EnqueueItem{Payload: []byte("during")})
			took := time.Since(t0)
			st := a.Replication()
			switch pol {
			case PartitionBlock:
				if !errors.Is(err, ErrUnavailable) || took < 400*time.Millisecond {
					t.Fatalf("block: err %v after %s", err, took)
				}
			case PartitionFail:
				if !errors.Is(err, ErrUnavailable) {
					t.Fatalf("fail: err %v", err)
				}
				// Once the session is known down, enqueues fail at once.
				eventually(t, 5*time.Second, "session down", func() bool { return a.Replication().State != ReplReplicated })
				t1 := time.Now()
				if _, err := ca.Enqueue(ctxT(t), "jobs", &EnqueueItem{}); !errors.Is(err, ErrUnavailable) || time.Since(t1) > 200*time.Millisecond {
					t.Fatalf("fail while down: %v after %s", err, time.Since(t1))
				}
			case PartitionLocal:
				if err != nil {
					t.Fatalf("local: %v", err)
				}
				eventually(t, 5*time.Second, "alarm", func() bool { st = a.Replication(); return st.UnreplicatedAcks > 0 && st.Alarm != "" })
			}
			if pol != PartitionLocal && a.Replication().FailedEnqueues == 0 {
				t.Fatalf("failed enqueues not counted: %+v", st)
			}
			// Every task stored locally runs, acknowledged or not.
			if seen := drainCount(t, ca, "jobs"); len(seen) < 2 {
				t.Fatalf("primary serves %d tasks, want at least 2", len(seen))
			}
		})
	}
}
