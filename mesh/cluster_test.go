package mesh_test

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/internal/meshtest"
	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
)

// The tests of the mesh as a whole, on the shared in-process cluster
// (internal/meshtest, secured).

func eventually(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return testlog.Eventually(t, within, what, cond)
}

// stateOf is what a sees of the member named id.
func stateOf(a *mesh.NodeAgent, id string) mesh.State {
	for _, m := range a.Mesh.Members() {
		if m.ID == id {
			return m.State
		}
	}
	return ""
}

// startMesh starts 2 IDCs × 2 nodes; every node names a single seed (the
// node started before it), so gossip must spread the rest.
func startMesh(t *testing.T) (*meshtest.Cluster, []*mesh.NodeAgent) {
	c := meshtest.New(t, meshtest.Options{IDCs: 2, NodesPerIDC: 2, Seeds: 1, Logger: testlog.New(t)})
	var all []*mesh.NodeAgent
	for _, n := range c.Nodes {
		all = append(all, n.Agent())
	}
	return c, all
}

func allSeeAlive(c *meshtest.Cluster, n int) bool {
	for _, nd := range c.Running() {
		if len(nd.Agent().Mesh.Alive(nil)) != n {
			return false
		}
	}
	return true
}

func gossipPort(t *testing.T, n *meshtest.Node) int {
	t.Helper()
	_, p, err := net.SplitHostPort(n.GossipAddr())
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(p)
	return port
}

func TestMeshFormsAndEveryNodeReachesEveryNode(t *testing.T) {
	c, all := startMesh(t)
	ctx := context.Background()
	took := eventually(t, 30*time.Second, "every node to reach every other node over NATS", func() bool {
		for _, from := range c.Nodes {
			for _, to := range c.Nodes {
				if from != to && !meshtest.Reaches(ctx, from, to) {
					return false
				}
			}
		}
		return true
	})
	t.Logf("all 12 node pairs reachable %s after the membership converged", took)
	// Members as seen over the wire, by the CLI's path.
	nc := c.MustConnect(t, c.Nodes[0], secrets.RoleNode)
	rep, err := mesh.FetchMembers(ctx, nc, "idcB", "b2")
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
	_ = all
}

func TestKilledNodeIsFailedAndRejoins(t *testing.T) {
	c, all := startMesh(t)
	victim := c.Nodes[3]
	id := mesh.MemberID(victim.Agent().Mesh.Self())
	port := gossipPort(t, victim)
	victim.Kill()
	took := eventually(t, 15*time.Second, "every member to mark the killed node failed", func() bool {
		for _, a := range all[:3] {
			if stateOf(a, id) != mesh.StateFailed {
				return false
			}
		}
		return true
	})
	t.Logf("failure detected by all 3 members in %s (Local profile; bound 15s)", took)
	// The host comes back (same gossip address, as a restarted host keeps
	// its gossip port; new NATS ports) and is reachable again.
	ctx := context.Background()
	back, err := c.Restart(ctx, victim, port, false)
	if err != nil {
		t.Fatal(err)
	}
	took = eventually(t, 20*time.Second, "rejoined node alive for every member", func() bool {
		for _, a := range all[:3] {
			if stateOf(a, id) != mesh.StateAlive {
				return false
			}
		}
		return true
	})
	t.Logf("rejoined node alive for all members %s after its start", took)
	took = eventually(t, 30*time.Second, "rejoined node reachable from every node", func() bool {
		for _, n := range c.Nodes[:3] {
			if !meshtest.Reaches(ctx, n, back) {
				return false
			}
		}
		return true
	})
	t.Logf("rejoined node reachable from all members %s later", took)
}

func TestGracefulLeaveIsNotAFailure(t *testing.T) {
	c, all := startMesh(t)
	leaver := c.Nodes[1]
	id := mesh.MemberID(leaver.Agent().Mesh.Self())
	sub := all[0].Mesh.Subscribe(64)
	defer sub.Close()
	if err := leaver.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "members to see a leave", func() bool {
		for _, a := range []*mesh.NodeAgent{all[0], all[2], all[3]} {
			if stateOf(a, id) != mesh.StateLeft {
				return false
			}
		}
		return true
	})
	for {
		select {
		case ev := <-sub.C:
			if ev.Member.ID == id && ev.Type == mesh.EventFail {
				t.Fatalf("a graceful leave was reported as a failure")
			}
			continue
		default:
		}
		break
	}
}

func TestDeadWorkerLeasesReturnEarly(t *testing.T) {
	c, all := startMesh(t)
	node := all[0]
	cfg := *c.WorkerMesh()
	cfg.Seeds = []string{node.Mesh.GossipAddr()}
	cfg.Meta = mesh.Meta{Role: mesh.RoleWorker, IDC: "idcA", Host: "host-a1", Name: "worker-7", Node: "a1"}
	w, err := mesh.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the node to see the worker", func() bool { return stateOf(node, "worker:idcA:worker-7") == mesh.StateAlive })
	cl := c.Nodes[0].Client()
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := cl.Enqueue(ctx, "jobs", &mqnode.EnqueueItem{Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	const lease = time.Hour
	ds, _, err := cl.Pull(ctx, mqnode.PullRequest{Queue: "jobs", MaxTasks: 5, Lease: lease, WorkerID: "worker-7"})
	if err != nil || len(ds) != 5 {
		t.Fatal(ds, err)
	}
	w.Kill() // dies without a leave
	took := eventually(t, 20*time.Second, "the dead worker's tasks to be ready again", func() bool {
		_, qs, err := cl.Stats(ctx, "jobs")
		return err == nil && qs[0].Ready == 5 && qs[0].Leased == 0
	})
	t.Logf("leased tasks of a dead worker ready again after %s (lease was %s)", took, lease)
}

func TestGatewayForwardsOnlyWithInterest(t *testing.T) {
	c, all := startMesh(t)
	a1, b1 := c.Nodes[0], c.Nodes[2]
	ctx := context.Background()
	eventually(t, 30*time.Second, "gateways up", func() bool { return meshtest.Reaches(ctx, a1, b1) && meshtest.Reaches(ctx, b1, a1) })
	pub := c.MustConnect(t, a1, secrets.RoleNode)
	sumOut := func() int64 {
		var n int64
		for _, a := range all[:2] {
			n += testlog.GatewayOutMsgs(t, a.Node.Server())
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
	sc := c.MustConnect(t, b1, secrets.RoleNode)
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

// TestRestartWithoutSeedRejoins is the split brain of issue 14: the first
// node of a mesh (started without a seed) is killed and restarted exactly as
// before, still without a seed. It must rejoin through the members it
// remembers, not start a mesh of its own.
func TestRestartWithoutSeedRejoins(t *testing.T) {
	c := meshtest.New(t, meshtest.Options{Logger: testlog.New(t)})
	a1 := c.MustAdd(t, "idcA", "a1")
	a2 := c.MustAdd(t, "idcA", "a2")
	b1 := c.MustAdd(t, "idcB", "b1")
	eventually(t, 20*time.Second, "3 alive members everywhere", func() bool { return allSeeAlive(c, 3) })
	// The file is saved at most a second after a change.
	fileA1 := filepath.Join(a1.Config.Node.DataDir, mesh.MembersFileName)
	eventually(t, 5*time.Second, "a1's members file to list a2 and b1", func() bool {
		n, err := mesh.KnownInFile(fileA1)
		return err == nil && n == 2
	})
	port := gossipPort(t, a1)
	a1.Kill()
	eventually(t, 15*time.Second, "a1 failed for a2 and b1", func() bool {
		return stateOf(a2.Agent(), "node:idcA:a1") == mesh.StateFailed && stateOf(b1.Agent(), "node:idcA:a1") == mesh.StateFailed
	})
	start := time.Now()
	back, err := c.Restart(context.Background(), a1, port, true) // no seed, as at first start
	if err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 15*time.Second, "every node to see 3 alive members after the restart", func() bool { return allSeeAlive(c, 3) })
	t.Logf("a1 restarted without a seed: every node sees 3 alive members %s after its start began (%s after Start returned)", time.Since(start), took)
	if ok, why := back.Agent().Mesh.Ready(); !ok {
		t.Fatalf("restarted a1 not ready: %s", why)
	}
	eventually(t, 30*time.Second, "a1 reachable over NATS from b1", func() bool { return meshtest.Reaches(context.Background(), b1, back) })
}

// TestIsolatedRestartIsNotReadyAndRetries: a node whose data dir says it was
// in a mesh, restarted while none of its members runs, does not start a new
// mesh: it is not ready, keeps its memory, retries, and is back in the mesh
// once a member is reachable again.
func TestIsolatedRestartIsNotReadyAndRetries(t *testing.T) {
	c := meshtest.New(t, meshtest.Options{Logger: testlog.New(t)})
	a1 := c.MustAdd(t, "idcA", "a1")
	a2 := c.MustAdd(t, "idcA", "a2")
	eventually(t, 20*time.Second, "2 alive members", func() bool { return allSeeAlive(c, 2) })
	fileA1 := filepath.Join(a1.Config.Node.DataDir, mesh.MembersFileName)
	fileA2 := filepath.Join(a2.Config.Node.DataDir, mesh.MembersFileName)
	eventually(t, 5*time.Second, "both members files saved", func() bool {
		n1, err1 := mesh.KnownInFile(fileA1)
		n2, err2 := mesh.KnownInFile(fileA2)
		return err1 == nil && err2 == nil && n1 == 1 && n2 == 1
	})
	p1, p2 := gossipPort(t, a1), gossipPort(t, a2)
	a2.Kill()
	a1.Kill()

	ctx := context.Background()
	start := time.Now()
	lone, err := c.Restart(ctx, a1, p1, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("isolated start returned after %s", time.Since(start))
	if ok, why := lone.Agent().Mesh.Ready(); ok {
		t.Fatal("a1 restarted with none of its members reachable reports ready")
	} else {
		t.Logf("not ready: %s", why)
	}
	if n := len(lone.Agent().Mesh.Alive(nil)); n != 1 {
		t.Fatalf("isolated a1 lists %d alive members, want only itself", n)
	}
	if rep := mesh.MembersReply(lone.Agent().Mesh); rep.Ready || rep.NotReady == "" {
		t.Fatalf("members reply of the isolated node: ready=%v not_ready=%q", rep.Ready, rep.NotReady)
	}
	// Its memory survives while isolated (a second restart would still know).
	time.Sleep(1500 * time.Millisecond) // let a save happen if one were due
	if n, err := mesh.KnownInFile(fileA1); err != nil || n != 1 {
		t.Fatalf("isolated a1 forgot its members: %v, %d", err, n)
	}
	// a2 comes back, also without a seed: the two find each other.
	if _, err := c.Restart(ctx, a2, p2, true); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 15*time.Second, "a1 and a2 to see each other again", func() bool { return allSeeAlive(c, 2) })
	t.Logf("rejoined %s after a2's start", took)
	if ok, why := lone.Agent().Mesh.Ready(); !ok {
		t.Fatalf("a1 still not ready: %s", why)
	}
}
