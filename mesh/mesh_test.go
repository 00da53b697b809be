package mesh

import (
	"context"
	"errors"
	"fmt"
	"github.com/mqmesh/mqmesh/internal/testlog"
	"log/slog"
	"testing"
	"time"

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
