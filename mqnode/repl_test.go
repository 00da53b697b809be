package mqnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mqmesh/mqmesh/mqnode/tracepb"
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
// stops answering) and checks each sync partition policy, then heals the
// link: a new epoch copies everything the primary holds.
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
			b.rp.muted.Store(true)
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
			// Heal: a new epoch copies everything the primary holds,
			// including what was stored during the partition.
			oldEpoch := a.Replication().Epoch
			b.rp.muted.Store(false)
			if err := a.WaitReplicated(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			_, qs, err := ca.Stats(ctxT(t), "jobs")
			if err != nil {
				t.Fatal(err)
			}
			if st := a.Replication(); st.Epoch <= oldEpoch || st.CopyDone != int64(qs[0].Ready) {
				t.Fatalf("after heal: epoch %d (was %d), copied %d, primary holds %d", st.Epoch, oldEpoch, st.CopyDone, qs[0].Ready)
			}
			// Every task stored locally runs, acknowledged or not.
			if seen := drainCount(t, ca, "jobs"); len(seen) < 2 {
				t.Fatalf("primary serves %d tasks, want at least 2", len(seen))
			}
		})
	}
}

// replEnqueueN enqueues n tasks one request at a time and returns their ids.
func replEnqueueN(t *testing.T, c *Client, queue string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		res, err := c.Enqueue(ctxT(t), queue, &EnqueueItem{Payload: fmt.Appendf(nil, "t%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res[0].Id)
	}
	return ids
}

// TestReplPrimaryReturnsAndReconciles: the primary stops (disk kept), its
// buddy takes over and completes part of the tasks; the primary returns,
// holds its pulls until it has reconciled, and then serves none of the
// tasks the buddy took (they stay with the buddy); each task runs once.
func TestReplPrimaryReturnsAndReconciles(t *testing.T) {
	a, b := startPair(t, nil, nil)
	cfgA := a.Config()
	ids := replEnqueueN(t, client(t, a), "jobs", 100)
	if err := a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	SetGroupPeers([]*Node{b}, []*Node{a})
	eventually(t, 20*time.Second, "takeover", func() bool { return b.Replication().Takeovers == 1 })
	cb := client(t, b)
	ds, _, err := cb.Pull(ctxT(t), PullRequest{Queue: "jobs", MaxTasks: 40})
	if err != nil || len(ds) != 40 {
		t.Fatalf("pull on the buddy: %d %v", len(ds), err)
	}
	seen := map[string]int{}
	for _, d := range ds {
		seen[d.Task.Id]++
		if _, err := cb.AckOne(ctxT(t), &AckItem{Receipt: d.Receipt}); err != nil {
			t.Fatal(err)
		}
	}
	// The primary returns with its disk.
	cfgA.Logger = testLogger(t)
	a2, err := StartGroupMember(ctxT(t), cfgA, b.RouteURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a2.Stop(context.Background()) })
	ca := client(t, a2)
	SetGroupPeers([]*Node{a2, b}, nil)
	if err := a2.WaitReplicated(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for id, n := range drainCount(t, ca, "jobs") {
		seen[id] += n
	}
	for id, n := range drainCount(t, cb, "jobs") {
		seen[id] += n
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("task %s ran %d times", id, seen[id])
		}
	}
	if h := b.Replication().Held; len(h) != 1 || h[0].State != "standby" || h[0].Epoch < 3 {
		t.Fatalf("buddy after reconcile: %+v", h)
	}
}

// TestReplFencesStalePrimary: a primary cut off from gossip but reaching
// its buddy is not taken over; once it cannot reach its buddy either, the
// buddy takes over a primary that is in fact alive; its next replicated write is
// refused (FENCED: not acknowledged), it serves nothing until it has
// reconciled, and then it works again under a newer epoch.
func TestReplFencesStalePrimary(t *testing.T) {
	a, b := startPair(t, nil, nil)
	ca := client(t, a)
	ids := replEnqueueN(t, ca, "jobs", 50)
	oldEpoch := a.Replication().Epoch
	SetGroupPeers([]*Node{b}, []*Node{a}) // b alone hears that a failed
	// a still reaches b (heartbeats): not taken over, however long.
	time.Sleep(4 * a.Config().Buddy.TakeoverAfter)
	if n := b.Replication().Takeovers; n != 0 {
		t.Fatalf("a primary that reaches its buddy was taken over (%d)", n)
	}
	// Now a cannot reach b either: b takes over; then the link heals.
	b.rp.muted.Store(true)
	eventually(t, 20*time.Second, "takeover", func() bool { return b.Replication().Takeovers == 1 })
	b.rp.muted.Store(false)
	if _, err := ca.Enqueue(ctxT(t), "jobs", &EnqueueItem{Payload: []byte("zombie")}); !errors.Is(err, ErrFenced) {
		t.Fatalf("enqueue on a fenced primary: %v, want ErrFenced", err)
	}
	// Gossip heals: the primary reconciles and replicates again.
	SetGroupPeers([]*Node{a, b}, nil)
	eventually(t, 20*time.Second, "replicated again", func() bool {
		st := a.Replication()
		return st.State == ReplReplicated && st.Epoch > oldEpoch+1
	})
	// The 50 tasks run on the buddy, not on the primary; the refused
	// enqueue was stored on the primary and runs there.
	onA, onB := drainCount(t, ca, "jobs"), drainCount(t, client(t, b), "jobs")
	for _, id := range ids {
		if onA[id] != 0 || onB[id] != 1 {
			t.Errorf("task %s: %d on the primary, %d on the buddy", id, onA[id], onB[id])
		}
	}
	if len(onA) != 1 {
		t.Fatalf("primary delivered %d tasks, want the 1 refused enqueue", len(onA))
	}
}

// TestReplReReplicatesAfterBuddyLoss: with three nodes, the primary's buddy
// stops; the primary picks the other node and copies its current tasks to
// it at the configured rate before it counts as replicated again.
func TestReplReReplicatesAfterBuddyLoss(t *testing.T) {
	cfgs := []Config{
		replCfg(t, "a", func(c *Config) { c.Buddy.CopyRate = 2000 }),
		replCfg(t, "b", func(c *Config) { c.Buddy.TakeoverAfter = time.Hour }),
		replCfg(t, "c", func(c *Config) { c.Buddy.TakeoverAfter = time.Hour }),
	}
	nodes, err := StartGroup(ctxT(t), cfgs...)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		t.Cleanup(func() { _ = n.Stop(context.Background()) })
	}
	a := nodes[0]
	if err := a.WaitReplicated(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	enqueueConcurrently(t, client(t, a), "jobs", 1000)
	first := a.Replication().Buddy
	var lost, other *Node
	for _, n := range nodes[1:] {
		if n.peer(true).ID() == first {
			lost = n
		} else {
			other = n
		}
	}
	if err := lost.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	SetGroupPeers([]*Node{a, other}, []*Node{lost})
	sawCopy := false
	eventually(t, 30*time.Second, "re-replicated", func() bool {
		st := a.Replication()
		sawCopy = sawCopy || (st.State == ReplCopying && st.CopyTotal == 1000)
		return st.State == ReplReplicated && st.Buddy == other.peer(true).ID()
	})
	took := time.Since(t0)
	st := a.Replication()
	if st.CopyDone != 1000 || st.CopyTotal != 1000 {
		t.Fatalf("copy progress %d/%d, want 1000/1000", st.CopyDone, st.CopyTotal)
	}
	// 1000 tasks + 0 dedup keys at 2000/s: at least ~0.5 s.
	if took < 400*time.Millisecond {
		t.Fatalf("copy of 1000 records at copy_rate 2000 took %s: rate not bounded", took)
	}
	held := other.Replication().Held
	found := false
	for _, h := range held {
		if h.Primary == "local.a" {
			found = h.Records == 1000 && h.CopyDone && h.State == "standby"
		}
	}
	if !found || !sawCopy {
		t.Fatalf("new buddy holds %+v (saw copying: %v)", held, sawCopy)
	}
}

// TestReplAsyncLagBounded: async enqueues are acknowledged locally; with a
// buddy slower than the primary (fsync there, async here) the lag stays
// within max_lag (plus one group of concurrent writes) under lag_policy
// block, and it is reported.
func TestReplAsyncLagBounded(t *testing.T) {
	const maxLag = 40
	a, _ := startPair(t, func(c *Config) {
		c.Replication = ReplicationAsync
		c.Buddy.MaxLag = maxLag
	}, func(c *Config) { c.Durability = DurabilityFsync })
	ca := client(t, a)
	stop := make(chan struct{})
	var peak int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			peak = max(peak, a.Replication().LagRecords)
		}
	}()
	acked, failed := enqueueConcurrently(t, ca, "jobs", 3000)
	close(stop)
	<-done
	if failed != 0 || len(acked) != 3000 {
		t.Fatalf("acked %d failed %d", len(acked), failed)
	}
	t.Logf("peak lag %d records (max_lag %d)", peak, maxLag)
	if peak > maxLag+64 {
		t.Fatalf("lag peaked at %d, max_lag %d", peak, maxLag)
	}
	eventually(t, 10*time.Second, "lag drains", func() bool { return a.Replication().LagRecords == 0 })
	if st := a.Replication(); st.AckedRecords < 3000 {
		t.Fatalf("buddy confirmed %d records", st.AckedRecords)
	}
}

// TestReplVisible: the replication of a task shows in its trace (to whom),
// in the stats reply and in the metrics.
func TestReplVisible(t *testing.T) {
	a, b := startPair(t, func(c *Config) { c.Trace.Sample = 1 }, nil)
	ca := client(t, a)
	id := replEnqueueN(t, ca, "jobs", 1)[0]
	// Trace events ride a later group commit: wait for them.
	var reps []*tracepb.TraceReply
	eventually(t, 20*time.Second, "trace of the task", func() bool {
		var err error
		reps, err = FindTrace(ctxT(t), ca.Conn(), id, 2*time.Second)
		return err == nil && len(reps) == 1
	})
	if r := reps[0]; r.ReplicatedTo != "local.b" || r.ReplMode != "sync" || r.ReplState != ReplReplicated {
		t.Fatalf("trace replication: to %q mode %q state %q", r.ReplicatedTo, r.ReplMode, r.ReplState)
	}
	rep, err := ca.StatsReply(ctxT(t), "")
	if err != nil || rep.Replication.GetBuddy() != "local.b" || !rep.Replication.GetEnabled() {
		t.Fatalf("stats replication: %+v %v", rep.GetReplication(), err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			key := mf.GetName()
			for _, l := range m.Label {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			got[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	if got["mqmesh_repl_state,state=replicated"] != 1 || got["mqmesh_repl_shipped_records_total"] < 1 {
		t.Fatalf("metrics: state %v shipped %v", got["mqmesh_repl_state,state=replicated"], got["mqmesh_repl_shipped_records_total"])
	}
	// b holds a's copy and says so.
	if got := b.Replication().Held; len(got) != 1 || got[0].Records != 1 {
		t.Fatalf("buddy held %+v", got)
	}
}

// TestReplPrimaryRestartsWithEmptyDisk: the primary loses its disk and is
// back before takeover_after; it starts with no replication state while
// its buddy holds its copy, so the buddy takes the copy over at once
// instead of dropping it for the new epoch: no task lost.
func TestReplPrimaryRestartsWithEmptyDisk(t *testing.T) {
	a, b := startPair(t, nil, func(c *Config) { c.Buddy.TakeoverAfter = time.Hour })
	cfgA := a.Config()
	ids := replEnqueueN(t, client(t, a), "jobs", 200)
	if err := a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(cfgA.DataDir); err != nil {
		t.Fatal(err)
	}
	a2, err := StartGroupMember(ctxT(t), cfgA, b.RouteURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a2.Stop(context.Background()) })
	SetGroupPeers([]*Node{a2, b}, nil)
	if err := a2.WaitReplicated(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := b.Replication().Takeovers; n != 1 {
		t.Fatalf("buddy takeovers %d, want 1", n)
	}
	seen := drainCount(t, client(t, b), "jobs")
	for _, id := range ids {
		if seen[id] != 1 {
			t.Fatalf("task %s delivered %d times by the buddy", id, seen[id])
		}
	}
}

// TestReplBuddyChoice: rendezvous choice among alive nodes of the buddy
// IDC on other hosts, sticky while alive, falling back to another IDC
// unless only_idc.
func TestReplBuddyChoice(t *testing.T) {
	mk := func(only bool) *replicator {
		n, err := New(Config{Name: "a", IDC: "x", Host: "h1", Replicas: 1, Buddy: BuddyConfig{OnlyIDC: only}})
		if err != nil {
			t.Fatal(err)
		}
		return n.rp
	}
	peers := []Peer{{IDC: "x", Name: "a", Host: "h1", Alive: true}, {IDC: "x", Name: "same-host", Host: "h1", Alive: true},
		{IDC: "x", Name: "b", Host: "h2", Alive: true}, {IDC: "x", Name: "c", Host: "h3", Alive: true},
		{IDC: "x", Name: "dead", Host: "h4"}, {IDC: "y", Name: "far", Host: "h5", Alive: true}}
	r := mk(false)
	r.setPeers(peers)
	first, ok := r.chooseLocked()
	if !ok || (first.Name != "b" && first.Name != "c") {
		t.Fatalf("chose %+v, want b or c", first)
	}
	for range 5 { // deterministic
		if p, _ := r.chooseLocked(); p != first {
			t.Fatalf("choice changed: %v then %v", first, p)
		}
	}
	r.buddy = first
	r.setPeers(append(peers, Peer{IDC: "x", Name: "newcomer", Host: "h9", Alive: true}))
	if p, _ := r.chooseLocked(); p.Name != first.Name {
		t.Fatalf("not sticky: %v", p)
	}
	onlyFar := []Peer{{IDC: "x", Name: "same-host", Host: "h1", Alive: true}, {IDC: "y", Name: "far", Host: "h5", Alive: true}}
	r = mk(false)
	r.setPeers(onlyFar)
	if p, ok := r.chooseLocked(); !ok || p.Name != "far" {
		t.Fatalf("fallback to another IDC: %v %v", p, ok)
	}
	r = mk(true)
	r.setPeers(onlyFar)
	if p, ok := r.chooseLocked(); ok {
		t.Fatalf("only_idc chose %v", p)
	}
}

// TestReplSyncAckMeansBuddyHasIt: when a sync enqueue is acknowledged the
// buddy already holds the task (its count is updated before it confirms).
func TestReplSyncAckMeansBuddyHasIt(t *testing.T) {
	a, b := startPair(t, nil, nil)
	ca := client(t, a)
	for i := range 200 {
		if _, err := ca.Enqueue(ctxT(t), "jobs", &EnqueueItem{Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
		if h := b.Replication().Held; len(h) != 1 || h[0].Records != int64(i+1) {
			t.Fatalf("enqueue %d acknowledged while the buddy holds %+v", i+1, h)
		}
	}
}
