package mesh

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/internal/secrets/secretstest"
	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

// startAgentIn starts a node on data dir dir whose gossip binds port (0:
// any), as `mqmesh node` would with the same config after a restart.
func startAgentIn(t *testing.T, dir string, port int, idc, name string, seeds ...string) *NodeAgent {
	t.Helper()
	if port == 0 {
		port = RandomPort
	}
	a, err := NewNodeAgent(NodeAgentConfig{ClusterListen: "127.0.0.1:0", GatewayListen: "127.0.0.1:0",
		Node: mqnode.Config{Name: name, IDC: idc, DataDir: dir, Listen: "127.0.0.1:0", Logger: testLogger(t), Throttle: testlog.NoCPUThrottle,
			Security: secretstest.Set(t)},
		Mesh: Config{BindAddr: "127.0.0.1", BindPort: port, Seeds: seeds, Profile: ProfileLocal},
		Host: "host-" + name,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	return a
}

func gossipPort(t *testing.T, a *NodeAgent) int {
	t.Helper()
	_, p, err := net.SplitHostPort(a.Mesh.GossipAddr())
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(p)
	return port
}

// allSeeAlive reports whether every agent lists n alive members.
func allSeeAlive(all []*NodeAgent, n int) bool {
	for _, a := range all {
		if len(a.Mesh.Alive(nil)) != n {
			return false
		}
	}
	return true
}

// TestRestartWithoutSeedRejoins is the split brain of issue 14: the first
// node of a mesh (started without a seed) is killed and restarted exactly as
// before, still without a seed. It must rejoin through the members it
// remembers, not start a mesh of its own.
func TestRestartWithoutSeedRejoins(t *testing.T) {
	dirA1 := t.TempDir()
	a1 := startAgentIn(t, dirA1, 0, "idcA", "a1")
	a2 := startAgentIn(t, t.TempDir(), 0, "idcA", "a2", a1.Mesh.GossipAddr())
	b1 := startAgentIn(t, t.TempDir(), 0, "idcB", "b1", a1.Mesh.GossipAddr())
	eventually(t, 20*time.Second, "3 alive members everywhere", func() bool { return allSeeAlive([]*NodeAgent{a1, a2, b1}, 3) })
	// The file is saved at most a second after a change.
	eventually(t, 5*time.Second, "a1's members file to list a2 and b1", func() bool {
		f, err := loadKnown(filepath.Join(dirA1, MembersFileName))
		return err == nil && len(f.Members) == 2
	})
	port := gossipPort(t, a1)
	a1.Kill()
	eventually(t, 15*time.Second, "a1 failed for a2 and b1", func() bool {
		return memberState(a2, "node:idcA:a1") == StateFailed && memberState(b1, "node:idcA:a1") == StateFailed
	})
	start := time.Now()
	back := startAgentIn(t, dirA1, port, "idcA", "a1") // no seed, as at first start
	took := eventually(t, 15*time.Second, "every node to see 3 alive members after the restart", func() bool {
		return allSeeAlive([]*NodeAgent{back, a2, b1}, 3)
	})
	t.Logf("a1 restarted without a seed: every node sees 3 alive members %s after its start began (%s after Start returned)", time.Since(start), took)
	if ok, why := back.Mesh.Ready(); !ok {
		t.Fatalf("restarted a1 not ready: %s", why)
	}
	eventually(t, 30*time.Second, "a1 reachable over NATS from b1", func() bool { return reachable(b1, back) == nil })
}

// TestIsolatedRestartIsNotReadyAndRetries: a node whose data dir says it was
// in a mesh, restarted while none of its members runs, does not start a new
// mesh: it is not ready, keeps its memory, retries, and is back in the mesh
// once a member is reachable again.
func TestIsolatedRestartIsNotReadyAndRetries(t *testing.T) {
	dirA1, dirA2 := t.TempDir(), t.TempDir()
	a1 := startAgentIn(t, dirA1, 0, "idcA", "a1")
	a2 := startAgentIn(t, dirA2, 0, "idcA", "a2", a1.Mesh.GossipAddr())
	eventually(t, 20*time.Second, "2 alive members", func() bool { return allSeeAlive([]*NodeAgent{a1, a2}, 2) })
	eventually(t, 5*time.Second, "both members files saved", func() bool {
		f1, err1 := loadKnown(filepath.Join(dirA1, MembersFileName))
		f2, err2 := loadKnown(filepath.Join(dirA2, MembersFileName))
		return err1 == nil && err2 == nil && len(f1.Members) == 1 && len(f2.Members) == 1
	})
	p1, p2 := gossipPort(t, a1), gossipPort(t, a2)
	a2.Kill()
	a1.Kill()

	start := time.Now()
	lone := startAgentIn(t, dirA1, p1, "idcA", "a1")
	t.Logf("isolated start returned after %s", time.Since(start))
	if ok, why := lone.Mesh.Ready(); ok {
		t.Fatal("a1 restarted with none of its members reachable reports ready")
	} else {
		t.Logf("not ready: %s", why)
	}
	if n := len(lone.Mesh.Alive(nil)); n != 1 {
		t.Fatalf("isolated a1 lists %d alive members, want only itself", n)
	}
	if rep := MembersReply(lone.Mesh); rep.Ready || rep.NotReady == "" {
		t.Fatalf("members reply of the isolated node: ready=%v not_ready=%q", rep.Ready, rep.NotReady)
	}
	// Its memory survives while isolated (a second restart would still know).
	time.Sleep(1500 * time.Millisecond) // let a save happen if one were due
	if f, err := loadKnown(filepath.Join(dirA1, MembersFileName)); err != nil || len(f.Members) != 1 {
		t.Fatalf("isolated a1 forgot its members: %v, %+v", err, f)
	}
	// a2 comes back, also without a seed: the two find each other.
	back := startAgentIn(t, dirA2, p2, "idcA", "a2")
	took := eventually(t, 15*time.Second, "a1 and a2 to see each other again", func() bool {
		return allSeeAlive([]*NodeAgent{lone, back}, 2)
	})
	t.Logf("rejoined %s after a2's start", took)
	if ok, why := lone.Mesh.Ready(); !ok {
		t.Fatalf("a1 still not ready: %s", why)
	}
}

// TestCorruptMembersFileIsAClearError: a damaged members file stops the
// start with an error naming the file, and the file is left as it was.
func TestCorruptMembersFileIsAClearError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, MembersFileName)
	if err := os.WriteFile(path, []byte(`{"version":1,"members":[{"id":"x","gossip_addr":"nope"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Meta: Meta{Role: RoleNode, IDC: "i", Name: "n"}, BindPort: 0, MembersFile: path, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	err = m.Start(context.Background())
	if err == nil {
		m.Kill()
		t.Fatal("start with a corrupt members file succeeded")
	}
	t.Logf("error: %v", err)
	if b, _ := os.ReadFile(path); len(b) == 0 {
		t.Fatal("members file was lost")
	}
}

func FuzzDecodeKnown(f *testing.F) {
	f.Add([]byte(`{"version":1,"self":"node:a:a1","members":[{"id":"node:a:a2","gossip_addr":"127.0.0.1:7946","state":"alive"}]}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"members":[{"id":"","gossip_addr":"1.2.3.4:1"}]}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := decodeKnown(b)
		if err != nil {
			return
		}
		for _, m := range k.Members {
			if m.ID == "" {
				t.Fatal("accepted an empty id")
			}
			if _, _, err := net.SplitHostPort(m.Addr); err != nil {
				t.Fatalf("accepted a bad address %q", m.Addr)
			}
		}
	})
}
