package mesh

import (
	"context"
	"errors"
	"fmt"
	"github.com/mqmesh/mqmesh/internal/secrets/secretstest"
	"github.com/mqmesh/mqmesh/internal/testlog"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/mqmesh/mqmesh/mqnode"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testlog.LeakOptions()...)
}

func testLogger(t testing.TB) *slog.Logger { return testlog.New(t) }

// eventually waits for cond (testlog.Eventually).
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return testlog.Eventually(t, within, what, cond)
}

func startAgent(t *testing.T, idc, name string, seeds ...string) *NodeAgent {
	t.Helper()
	return startAgentOn(t, 0, idc, name, seeds...)
}

// startAgentOn starts a node whose gossip binds port (0: any).
func startAgentOn(t *testing.T, port int, idc, name string, seeds ...string) *NodeAgent {
	t.Helper()
	return startAgentIn(t, t.TempDir(), port, idc, name, seeds...)
}

// memberState is what a sees of the member named id.
func memberState(a *NodeAgent, id string) State {
	for _, m := range a.Mesh.Members() {
		if m.ID == id {
			return m.State
		}
	}
	return ""
}

// reachable reports whether from can make a request to node to over NATS.
func reachable(from, to *NodeAgent) error {
	nc, err := from.Node.Connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	c := mqnode.NewClient(nc, to.Node.Config().IDC, to.Node.Config().Name)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := c.Info(ctx)
	if err != nil {
		return err
	}
	if info.Name != to.Node.Config().Name {
		return fmt.Errorf("answered by %s", info.Name)
	}
	return nil
}

// startMesh starts 2 IDCs × 2 nodes; every node names a single seed.
func startMesh(t *testing.T) []*NodeAgent {
	a1 := startAgent(t, "idcA", "a1")
	seed := a1.Mesh.GossipAddr()
	a2 := startAgent(t, "idcA", "a2", seed)
	b1 := startAgent(t, "idcB", "b1", a2.Mesh.GossipAddr())
	b2 := startAgent(t, "idcB", "b2", b1.Mesh.GossipAddr())
	all := []*NodeAgent{a1, a2, b1, b2}
	eventually(t, 20*time.Second, "every node to see 4 alive members", func() bool {
		for _, a := range all {
			if len(a.Mesh.Alive(nil)) != 4 {
				return false
			}
		}
		return true
	})
	return all
}

func TestMeshFormsAndEveryNodeReachesEveryNode(t *testing.T) {
	all := startMesh(t)
	took := eventually(t, 30*time.Second, "every node to reach every other node over NATS", func() bool {
		for _, from := range all {
			for _, to := range all {
				if from != to && reachable(from, to) != nil {
					return false
				}
			}
		}
		return true
	})
	t.Logf("all 12 node pairs reachable %s after the membership converged", took)
	// Members as seen over the wire, by the CLI's path.
	nc, err := all[0].Node.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rep, err := FetchMembers(context.Background(), nc, "idcB", "b2")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Members) != 4 || rep.Self != "node:idcB:b2" {
		t.Fatalf("members reply: %v", rep)
	}
	for _, m := range rep.Members {
		if m.Meta.NatsClient == "" || m.Meta.NatsCluster == "" || m.Meta.NatsGateway == "" || m.Meta.Host == "" {
			t.Fatalf("member without addresses: %v", m)
		}
	}
}

func TestKilledNodeIsFailedAndRejoins(t *testing.T) {
	all := startMesh(t)
	victim := all[3]
	id := victim.Mesh.Self().memberID()
	start := time.Now()
	victim.Kill()
	took := eventually(t, 15*time.Second, "every member to mark the killed node failed", func() bool {
		for _, a := range all[:3] {
			if memberState(a, id) != StateFailed {
				return false
			}
		}
		return true
	})
	t.Logf("failure detected by all 3 members in %s (Local profile; bound 15s)", took)
	_ = start
	// The host comes back (same gossip address, as a restarted host keeps
	// its gossip port; new NATS ports) and is reachable again.
	_, portStr, _ := net.SplitHostPort(victim.Mesh.GossipAddr())
	port, _ := strconv.Atoi(portStr)
	back := startAgentOn(t, port, "idcB", "b2", all[0].Mesh.GossipAddr())
	took = eventually(t, 20*time.Second, "rejoined node alive for every member", func() bool {
		for _, a := range all[:3] {
			if memberState(a, id) != StateAlive {
				return false
			}
		}
		return true
	})
	t.Logf("rejoined node alive for all members %s after its start", took)
	took = eventually(t, 30*time.Second, "rejoined node reachable from every node", func() bool {
		for _, a := range all[:3] {
			if err := reachable(a, back); err != nil {
				return false
			}
		}
		return true
	})
	t.Logf("rejoined node reachable from all members %s later", took)
}

func TestGracefulLeaveIsNotAFailure(t *testing.T) {
	all := startMesh(t)
	leaver := all[1]
	id := leaver.Mesh.Self().memberID()
	sub := all[0].Mesh.Subscribe(64)
	defer sub.Close()
	if err := leaver.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "members to see a leave", func() bool {
		for _, a := range []*NodeAgent{all[0], all[2], all[3]} {
			if memberState(a, id) != StateLeft {
				return false
			}
		}
		return true
	})
	for {
		select {
		case ev := <-sub.C:
			if ev.Member.ID == id && ev.Type == EventFail {
				t.Fatalf("a graceful leave was reported as a failure")
			}
			continue
		default:
		}
		break
	}
}

func TestDeadWorkerLeasesReturnEarly(t *testing.T) {
	all := startMesh(t)
	node := all[0]
	keys, _ := secretstest.Set(t).GossipKeys()
	w, err := New(Config{BindAddr: "127.0.0.1", BindPort: RandomPort, Seeds: []string{node.Mesh.GossipAddr()}, Profile: ProfileLocal, Logger: testLogger(t), Keyring: keys,
		Meta: Meta{Role: RoleWorker, IDC: "idcA", Host: "host-a1", Name: "worker-7", Node: "a1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the node to see the worker", func() bool { return memberState(node, "worker:idcA:worker-7") == StateAlive })
	c, err := node.Node.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := c.Enqueue(ctx, "jobs", &mqnode.EnqueueItem{Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	const lease = time.Hour
	ds, _, err := c.Pull(ctx, mqnode.PullRequest{Queue: "jobs", MaxTasks: 5, Lease: lease, WorkerID: "worker-7"})
	if err != nil || len(ds) != 5 {
		t.Fatal(ds, err)
	}
	w.Kill() // dies without a leave
	took := eventually(t, 20*time.Second, "the dead worker's tasks to be ready again", func() bool {
		_, qs, err := c.Stats(ctx, "jobs")
		return err == nil && qs[0].Ready == 5 && qs[0].Leased == 0
	})
	t.Logf("leased tasks of a dead worker ready again after %s (lease was %s)", took, lease)
}

func outMsgs(t *testing.T, s *server.Server) int64 { return testlog.GatewayOutMsgs(t, s) }

func TestGatewayForwardsOnlyWithInterest(t *testing.T) {
	all := startMesh(t)
	a1, b1 := all[0], all[2]
	eventually(t, 30*time.Second, "gateways up", func() bool { return reachable(a1, b1) == nil && reachable(b1, a1) == nil })
	pub, err := a1.Node.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sumOut := func() int64 {
		var n int64
		for _, a := range all[:2] {
			n += outMsgs(t, a.Node.Server())
		}
		return n
	}
	const msgs = 1000
	publish := func(subj string) {
		for i := 0; i < msgs; i++ {
			if err := pub.Publish(subj, []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		if err := pub.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	before := sumOut()
	publish("bl.idcA.a1.orders") // nobody in idcB subscribes
	noInterest := sumOut() - before
	if noInterest > msgs/10 {
		t.Fatalf("%d gateway messages for %d publishes nobody in idcB wants", noInterest, msgs)
	}
	// With a subscriber in idcB the same traffic crosses: the statistic works.
	sc, err := b1.Node.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	got := make(chan struct{}, msgs)
	sub, err := sc.Subscribe("bl.idcA.>", func(*nats.Msg) { got <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = sc.Flush()
	eventually(t, 10*time.Second, "interest to reach idcA", func() bool {
		_ = pub.Publish("bl.idcA.a1.probe", nil)
		select {
		case <-got:
			return true
		default:
			return false
		}
	})
	before = sumOut()
	publish("bl.idcA.a1.orders")
	withInterest := sumOut() - before
	t.Logf("gateway messages: %d without interest, %d with a subscriber in idcB (for %d publishes)", noInterest, withInterest, msgs)
	if withInterest < msgs {
		t.Fatalf("only %d of %d messages crossed with a subscriber in idcB", withInterest, msgs)
	}
}

func TestFetchMembersOfAStandaloneNode(t *testing.T) {
	n, err := mqnode.New(mqnode.Config{Name: "solo", IDC: "x", DataDir: t.TempDir(), Listen: mqnode.ListenNone, Logger: testLogger(t), Throttle: testlog.NoCPUThrottle})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n.Stop(context.Background())
	nc, err := n.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := FetchMembers(context.Background(), nc, "x", "solo"); !errors.Is(err, ErrNotMember) {
		t.Fatalf("members of a standalone node: %v", err)
	}
}

// TestGossipEncryption: members with the same key form a mesh; a member
// with another key cannot join it.
func TestGossipEncryption(t *testing.T) {
	key := "MDEyMzQ1Njc4OWFiY2RlZg==" // 16 bytes
	other := "ZmVkY2JhOTg3NjU0MzIxMA=="
	start := func(name, k string, seeds ...string) (*Mesh, error) {
		m, err := New(Config{BindAddr: "127.0.0.1", BindPort: RandomPort, Seeds: seeds, Profile: ProfileLocal, SecretKey: k, JoinWait: 2 * time.Second,
			Logger: testLogger(t), Meta: Meta{Role: RoleWorker, IDC: "a", Name: name}})
		if err != nil {
			return nil, err
		}
		if err := m.Start(context.Background()); err != nil {
			return nil, err
		}
		t.Cleanup(func() { m.Kill() })
		return m, nil
	}
	m1, err := start("w1", key)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := start("w2", key, m1.GossipAddr())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "encrypted mesh of 2", func() bool { return len(m1.Alive(nil)) == 2 && len(m2.Alive(nil)) == 2 })
	if _, err := start("w3", other, m1.GossipAddr()); err == nil {
		t.Fatal("a member with another key joined")
	}
	if _, err := New(Config{SecretKey: "c2hvcnQ=", Meta: Meta{Role: RoleWorker, IDC: "a", Name: "x"}}); err == nil {
		t.Fatal("a 5-byte key was accepted")
	}
}
