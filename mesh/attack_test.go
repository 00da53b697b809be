package mesh

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/internal/secrets/secretstest"
	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

// The attack suite: every probe of issue 12's "Why" list, repeated against a
// secured 2 IDC × 2 host mesh with real listeners (TCP client, route and
// gateway ports, UDP+TCP gossip on loopback), and each must be refused.

// Small limits, so the floods are quick.
const (
	attackMaxPulls  = 32
	attackMaxQueues = 60
)

type attackMesh struct {
	set   *secrets.Set
	nodes []*NodeAgent // a1, a2 (idcA), b1, b2 (idcB)
}

func startAttackMesh(t *testing.T) *attackMesh {
	t.Helper()
	m := &attackMesh{set: secretstest.Set(t)}
	var seed []string
	for _, n := range []struct{ idc, name string }{{"idcA", "a1"}, {"idcA", "a2"}, {"idcB", "b1"}, {"idcB", "b2"}} {
		a, err := NewNodeAgent(NodeAgentConfig{ClusterListen: "127.0.0.1:0", GatewayListen: "127.0.0.1:0",
			Node: mqnode.Config{Name: n.name, IDC: n.idc, DataDir: t.TempDir(), Listen: "127.0.0.1:0", Logger: testLogger(t),
				Throttle: testlog.NoCPUThrottle, Security: m.set, MaxPullsPerClient: attackMaxPulls, MaxQueues: attackMaxQueues},
			Mesh: Config{BindAddr: "127.0.0.1", BindPort: RandomPort, Seeds: seed, Profile: ProfileLocal},
			Host: "host-" + n.name,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = a.Start(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Stop(context.Background()) })
		seed = []string{a.Mesh.GossipAddr()}
		m.nodes = append(m.nodes, a)
	}
	eventually(t, 30*time.Second, "4 alive members and every node reachable", func() bool {
		for _, from := range m.nodes {
			if len(from.Mesh.Alive(nil)) != 4 {
				return false
			}
			for _, to := range m.nodes {
				if reachable(from, to) != nil {
					return false
				}
			}
		}
		return true
	})
	return m
}

// dial connects to node a over TCP as role.
func (m *attackMesh) dial(t *testing.T, a *NodeAgent, role secrets.Role) *mqnode.Client {
	t.Helper()
	opts, err := m.set.ClientOptions(role)
	if err != nil {
		t.Fatal(err)
	}
	c, err := mqnode.Dial(ctxA(t), a.Node.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("dial %s as %s: %v", a.Node.Config().Name, role, err)
	}
	t.Cleanup(c.Close)
	return c
}

func ctxA(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// refusedFor asserts cond stays false for the whole window: for probes
// whose refusal is the absence of something (a link that never forms).
func refusedFor(t *testing.T, window time.Duration, what string, happened func() bool) {
	t.Helper()
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if happened() {
			t.Fatalf("ATTACK SUCCEEDED: %s", what)
		}
	}
}

func TestAttackSuite(t *testing.T) {
	if testing.Short() {
		t.Skip("the attack suite starts a 4-node mesh")
	}
	m := startAttackMesh(t)
	a1, a2, b1 := m.nodes[0], m.nodes[1], m.nodes[2]
	url1 := a1.Node.ClientURL()
	prod := m.dial(t, a1, secrets.RoleProducer)
	enq := func(payload string) string {
		res, err := prod.Enqueue(ctxA(t), "jobs", &mqnode.EnqueueItem{Payload: []byte(payload)})
		if err != nil {
			t.Fatal(err)
		}
		return res[0].Id
	}

	t.Run("anonymous client", func(t *testing.T) {
		ctx := ctxA(t)
		for what, opts := range map[string][]nats.Option{
			"plain":                      nil,
			"TLS, no credentials":        {nats.Secure(m.set.ClientTLS())},
			"TLS, a key not in the mesh": {nats.Secure(m.set.ClientTLS()), nats.Nkey("UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4", func(b []byte) ([]byte, error) { return b, nil })},
		} {
			nc, err := nats.Connect(url1, append(opts, nats.Timeout(3*time.Second))...)
			if err == nil {
				nc.Close()
				t.Errorf("ATTACK SUCCEEDED: %s connection accepted", what)
			}
		}
		// A stolen node credential is refused on the network (nodes connect
		// only to themselves, in process).
		nodeOpts, _ := m.set.ClientOptions(secrets.RoleNode)
		if c, err := mqnode.Dial(ctx, url1, nodeOpts...); err == nil {
			c.Close()
			t.Error("ATTACK SUCCEEDED: the node credential logged in over TCP")
		}
		// Nor with another mesh's credentials (its CA does not sign the node).
		other, err := secrets.Load(secretstest.Dir(t))
		if err != nil {
			t.Fatal(err)
		}
		opts, _ := other.ClientOptions(secrets.RoleAdmin)
		if c, err := mqnode.Dial(ctx, url1, opts...); err == nil {
			c.Close()
			t.Error("ATTACK SUCCEEDED: another mesh's admin connected")
		}
	})

	t.Run("wrong role", func(t *testing.T) {
		ctx := ctxA(t)
		wrk := m.dial(t, a1, secrets.RoleWorker)
		adm := m.dial(t, a1, secrets.RoleAdmin)
		enq("dead-soon")
		for what, call := range map[string]func() error{
			"producer purges dead letters": func() error { _, err := prod.DLQPurge(ctx, "jobs"); return err },
			"producer lists dead letters":  func() error { _, _, err := prod.DLQList(ctx, "jobs", "", 10); return err },
			"producer reads stats":         func() error { _, _, err := prod.Stats(ctx, ""); return err },
			"producer pulls":               func() error { _, _, err := prod.Pull(ctx, mqnode.PullRequest{Queue: "jobs"}); return err },
			"worker enqueues":              func() error { _, err := wrk.Enqueue(ctx, "jobs", &mqnode.EnqueueItem{}); return err },
			"worker purges dead letters":   func() error { _, err := wrk.DLQPurge(ctx, "jobs"); return err },
			"worker deletes a queue":       func() error { return wrk.DeleteQueue(ctx, "jobs") },
			"producer asks another node":   func() error { _, _, err := mqnode.NewClient(prod.Conn(), "idcB", "b1").Stats(ctx, ""); return err },
		} {
			if err := call(); !errors.Is(err, mqnode.ErrPermissionDenied) {
				t.Errorf("%s: %v, want PERMISSION_DENIED", what, err)
			}
		}
		if _, _, err := adm.Stats(ctx, ""); err != nil {
			t.Errorf("admin stats: %v", err)
		}
	})

	t.Run("sniffing everything", func(t *testing.T) {
		for _, role := range []secrets.Role{secrets.RoleProducer, secrets.RoleWorker, secrets.RoleAdmin} {
			for _, subj := range []string{">", "_I.worker.>", "mq.>"} {
				if role == secrets.RoleWorker && subj == "_I.worker.>" {
					continue // its own inbox space
				}
				nc := m.dial(t, a1, role).Conn()
				if _, err := nc.SubscribeSync(subj); err == nil {
					err = nc.Flush()
				}
				if err := nc.LastError(); !errors.Is(err, nats.ErrPermissionViolation) {
					t.Errorf("ATTACK SUCCEEDED: %s subscribed to %s (%v)", role, subj, err)
				}
			}
		}
	})

	t.Run("forged receipt", func(t *testing.T) {
		ctx := ctxA(t)
		victim := m.dial(t, a1, secrets.RoleWorker)
		thief := m.dial(t, a1, secrets.RoleWorker)
		enq("precious")
		ds, _, err := victim.Pull(ctx, mqnode.PullRequest{Queue: "jobs", MaxTasks: 10, MaxWait: time.Second, Lease: time.Minute})
		if err != nil || len(ds) == 0 {
			t.Fatal(ds, err)
		}
		// The old receipts were an incarnation and a counter: a thief that
		// saw one receipt guessed its neighbours. Forge both kinds.
		seen := ds[0].Receipt
		var forged []*mqnode.AckItem
		for i := 0; i < 64; i++ {
			rc := append([]byte(nil), seen...)
			rc[15] += byte(i + 1)
			forged = append(forged, &mqnode.AckItem{Receipt: rc})
			rnd := make([]byte, 16)
			_, _ = rand.Read(rnd)
			forged = append(forged, &mqnode.AckItem{Receipt: rnd})
		}
		res, err := thief.Ack(ctx, forged...)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if !errors.Is(mqnode.ItemErr(r), mqnode.ErrStaleReceipt) {
				t.Fatalf("ATTACK SUCCEEDED: a forged receipt settled a lease: %v", r)
			}
		}
		for _, d := range ds {
			if _, err := victim.AckOne(ctx, &mqnode.AckItem{Receipt: d.Receipt}); err != nil {
				t.Fatalf("the real consumer's ack: %v", err)
			}
		}
		if len(ds[0].Receipt) != 16 {
			t.Fatalf("receipt of %d bytes", len(ds[0].Receipt))
		}
	})

	t.Run("rogue responder", func(t *testing.T) {
		ctx := ctxA(t)
		for _, role := range []secrets.Role{secrets.RoleWorker, secrets.RoleAdmin, secrets.RoleProducer} {
			nc := m.dial(t, a2, role).Conn()
			got := make(chan *nats.Msg, 1)
			if _, err := nc.Subscribe(mqnode.Subject("idcA", "a1", mqnode.OpPull), func(msg *nats.Msg) {
				select {
				case got <- msg:
				default:
				}
				_ = msg.Respond([]byte("fake task"))
			}); err == nil {
				_ = nc.Flush()
			}
			if err := nc.LastError(); !errors.Is(err, nats.ErrPermissionViolation) {
				t.Errorf("ATTACK SUCCEEDED: %s may answer a1's pulls (%v)", role, err)
			}
			// Forged backlog is refused too.
			nc2 := m.dial(t, a2, role).Conn()
			_ = nc2.Publish("bl.h.idcA.a1.jobs", []byte("forged"))
			_ = nc2.Flush()
			if err := nc2.LastError(); !errors.Is(err, nats.ErrPermissionViolation) {
				t.Errorf("ATTACK SUCCEEDED: %s may publish backlog (%v)", role, err)
			}
		}
		// A worker waiting on a1 gets the real task.
		enq("real")
		wrk := m.dial(t, a2, secrets.RoleWorker)
		ds, _, err := mqnode.NewClient(wrk.Conn(), "idcA", "a1").Pull(ctx, mqnode.PullRequest{Queue: "jobs", MaxTasks: 1, MaxWait: 2 * time.Second})
		if err != nil || len(ds) != 1 || string(ds[0].Task.Payload) != "real" {
			t.Fatalf("pull through a2: %v %v", ds, err)
		}
		_, _ = mqnode.NewClient(wrk.Conn(), "idcA", "a1").AckOne(ctx, &mqnode.AckItem{Receipt: ds[0].Receipt})
	})

	t.Run("rogue route", func(t *testing.T) {
		routeURL, _ := url.Parse("nats-route://" + a1.Node.Server().ClusterAddr().String())
		withPass, _ := url.Parse("nats-route://mqmesh:guess@" + a1.Node.Server().ClusterAddr().String())
		other, _ := secrets.Load(secretstest.Dir(t))
		otherTLS, _ := other.PeerTLS()
		cases := map[string]func(*server.Options){
			"plain":                      func(o *server.Options) { o.Routes = []*url.URL{routeURL} },
			"password guess":             func(o *server.Options) { o.Routes = []*url.URL{withPass} },
			"another mesh's certificate": func(o *server.Options) { o.Routes = []*url.URL{withPass}; o.Cluster.TLSConfig = otherTLS },
		}
		before := a1.Node.Server().NumRoutes()
		for what, set := range cases {
			rogue := startRogue(t, func(o *server.Options) {
				o.Cluster = server.ClusterOpts{Name: "idcA", Host: "127.0.0.1", Port: -1}
				set(o)
			})
			refusedFor(t, 2*time.Second, what+" route to a1 formed", func() bool {
				return rogue.NumRoutes() > 0 || a1.Node.Server().NumRoutes() > before
			})
		}
	})

	t.Run("rogue gateway", func(t *testing.T) {
		gwURL, _ := url.Parse("nats://mqmesh:guess@" + a1.Node.Server().GatewayAddr().String())
		before := a1.Node.Server().NumOutboundGateways()
		rogue := startRogue(t, func(o *server.Options) {
			o.Gateway = server.GatewayOpts{Name: "idcX", Host: "127.0.0.1", Port: -1,
				Gateways: []*server.RemoteGatewayOpts{{Name: "idcA", URLs: []*url.URL{gwURL}}}}
		})
		refusedFor(t, 2*time.Second, "a rogue gateway linked to idcA", func() bool {
			return rogue.NumOutboundGateways() > 0 || a1.Node.Server().NumOutboundGateways() > before
		})
	})

	t.Run("rogue gossip member", func(t *testing.T) {
		for what, keys := range map[string][][]byte{"no key": nil, "another key": {[]byte("0123456789abcdef0123456789abcdef")}} {
			rogue, err := New(Config{BindAddr: "127.0.0.1", BindPort: RandomPort, Seeds: []string{a1.Mesh.GossipAddr()}, Profile: ProfileLocal,
				JoinWait: time.Second, Keyring: keys, Logger: testLogger(t),
				Meta: Meta{Role: RoleNode, IDC: "idcA", Name: "evil", NATSCluster: "nats-route://127.0.0.1:1"}})
			if err != nil {
				t.Fatal(err)
			}
			if err := rogue.Start(context.Background()); err == nil {
				rogue.Kill()
				t.Errorf("ATTACK SUCCEEDED: a member with %s joined", what)
			}
			for _, mb := range a1.Mesh.Members() {
				if mb.Meta.Name == "evil" {
					t.Errorf("ATTACK SUCCEEDED: a1 believes the member with %s", what)
				}
			}
		}
	})

	t.Run("fake worker death", func(t *testing.T) {
		ctx := ctxA(t)
		// The real worker "w7" of idcA, a keyed member, leases a task.
		real, err := New(Config{BindAddr: "127.0.0.1", BindPort: RandomPort, Seeds: []string{a1.Mesh.GossipAddr()}, Profile: ProfileLocal,
			Keyring: secretstest.GossipKeys(t), Logger: testLogger(t), Meta: Meta{Role: RoleWorker, IDC: "idcA", Name: "w7", Node: "a1"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := real.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { real.Kill() })
		eventually(t, 10*time.Second, "a1 to see w7", func() bool { return memberState(a1, "worker:idcA:w7") == StateAlive })
		wrk := m.dial(t, a1, secrets.RoleWorker)
		enq("leased")
		ds, _, err := wrk.Pull(ctx, mqnode.PullRequest{Queue: "jobs", MaxTasks: 1, MaxWait: time.Second, Lease: time.Hour, WorkerID: "w7"})
		if err != nil || len(ds) != 1 {
			t.Fatal(ds, err)
		}
		// Another member reusing the id (another IDC, so gossip accepts
		// it) dies: nothing of w7's may be released.
		fake, err := New(Config{BindAddr: "127.0.0.1", BindPort: RandomPort, Seeds: []string{b1.Mesh.GossipAddr()}, Profile: ProfileLocal,
			Keyring: secretstest.GossipKeys(t), Logger: testLogger(t), Meta: Meta{Role: RoleWorker, IDC: "idcB", Name: "w7"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := fake.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "a1 to see the fake", func() bool { return memberState(a1, "worker:idcB:w7") == StateAlive })
		fake.Kill()
		eventually(t, 20*time.Second, "a1 to see the fake dead", func() bool { return memberState(a1, "worker:idcB:w7") == StateFailed })
		adm := m.dial(t, a1, secrets.RoleAdmin)
		_, qs, err := adm.Stats(ctx, "jobs")
		if err != nil || qs[0].Leased != 1 {
			t.Fatalf("ATTACK SUCCEEDED: the fake's death released w7's lease: %v %v", qs, err)
		}
		// The real worker's death does release it.
		real.Kill()
		eventually(t, 20*time.Second, "w7's lease released on its real death", func() bool {
			_, qs, err := adm.Stats(ctx, "jobs")
			return err == nil && qs[0].Leased == 0
		})
		drain(t, wrk, "jobs")
	})

	t.Run("dedup-key squatting", func(t *testing.T) {
		ctx := ctxA(t)
		// Only a producer (or admin/node) may enqueue: an anonymous client
		// cannot connect (above) and a worker is refused.
		wrk := m.dial(t, a1, secrets.RoleWorker)
		if _, err := wrk.Enqueue(ctx, "orders", &mqnode.EnqueueItem{Payload: []byte("evil"), DedupKey: "order-42"}); !errors.Is(err, mqnode.ErrPermissionDenied) {
			t.Fatalf("a worker's enqueue with a dedup key: %v, want PERMISSION_DENIED", err)
		}
		res, err := prod.Enqueue(ctx, "orders", &mqnode.EnqueueItem{Payload: []byte("real"), DedupKey: "order-42"})
		if err != nil || res[0].Duplicate {
			t.Fatalf("the real producer's enqueue: %v %v", res, err)
		}
		drain(t, wrk, "orders")
	})

	t.Run("long-poll flood", func(t *testing.T) {
		ctx := ctxA(t)
		flooder := m.dial(t, a1, secrets.RoleWorker)
		var wg sync.WaitGroup
		var refused, mu = 0, sync.Mutex{}
		for i := 0; i < attackMaxPulls+20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, err := flooder.Pull(ctx, mqnode.PullRequest{Queue: "idle", MaxWait: 3 * time.Second})
				if errors.Is(err, mqnode.ErrUnavailable) {
					mu.Lock()
					refused++
					mu.Unlock()
				}
			}()
		}
		// Meanwhile another worker is served at once.
		time.Sleep(200 * time.Millisecond) // let the flood arrive first
		enq("served")
		honest := m.dial(t, a1, secrets.RoleWorker)
		start := time.Now()
		ds, _, err := honest.Pull(ctx, mqnode.PullRequest{Queue: "jobs", MaxTasks: 1, MaxWait: 2 * time.Second})
		if err != nil || len(ds) != 1 || time.Since(start) > time.Second {
			t.Fatalf("an honest pull during the flood: %v %v after %s", ds, err, time.Since(start))
		}
		_, _ = honest.AckOne(ctx, &mqnode.AckItem{Receipt: ds[0].Receipt})
		wg.Wait()
		if refused < 20 {
			t.Fatalf("ATTACK SUCCEEDED: %d of %d long polls of one client refused, want >= 20", refused, attackMaxPulls+20)
		}
	})

	t.Run("queue flood", func(t *testing.T) {
		ctx := ctxA(t)
		flooder := m.dial(t, a2, secrets.RoleWorker)
		adm := m.dial(t, a2, secrets.RoleAdmin)
		refused := 0
		for i := 0; i < attackMaxQueues+20; i++ {
			_, _, err := flooder.Pull(ctx, mqnode.PullRequest{Queue: fmt.Sprintf("flood-%d", i)})
			if errors.Is(err, mqnode.ErrUnavailable) && strings.Contains(err.Error(), "max_queues") {
				refused++
			} else if err != nil {
				t.Fatal(err)
			}
		}
		if refused < 20 {
			t.Fatalf("ATTACK SUCCEEDED: only %d queue creations refused", refused)
		}
		start := time.Now()
		_, qs, err := adm.Stats(ctx, "")
		if err != nil || len(qs) > attackMaxQueues || time.Since(start) > 2*time.Second {
			t.Fatalf("stats after the flood: %d queues, %v, %s", len(qs), err, time.Since(start))
		}
		for _, q := range qs {
			if strings.HasPrefix(q.Queue, "flood-") {
				if err := adm.DeleteQueue(ctx, q.Queue); err != nil {
					t.Fatalf("queue delete %s: %v", q.Queue, err)
				}
			}
		}
		if _, qs, _ = adm.Stats(ctx, ""); len(qs) > 5 {
			t.Fatalf("%d queues after deleting the flood", len(qs))
		}
	})
}

// drain acks everything ready on queue.
func drain(t *testing.T, c *mqnode.Client, queue string) {
	t.Helper()
	for {
		ds, _, err := c.Pull(ctxA(t), mqnode.PullRequest{Queue: queue, MaxTasks: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			return
		}
		for _, d := range ds {
			_, _ = c.AckOne(ctxA(t), &mqnode.AckItem{Receipt: d.Receipt})
		}
	}
}

// startRogue starts a NATS server of an attacker on loopback.
func startRogue(t *testing.T, set func(*server.Options)) *server.Server {
	t.Helper()
	o := &server.Options{ServerName: "rogue", Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, NoSystemAccount: true}
	set(o)
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("rogue server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}
