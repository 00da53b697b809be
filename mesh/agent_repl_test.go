package mesh

import (
	"context"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/internal/secrets/secretstest"
	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

func startReplAgent(t *testing.T, name string, seeds ...string) *NodeAgent {
	t.Helper()
	a, err := NewNodeAgent(NodeAgentConfig{
		Node: mqnode.Config{Name: name, IDC: "idcA", DataDir: t.TempDir(), Listen: "127.0.0.1:0", Logger: testLogger(t),
			Throttle: testlog.NoCPUThrottle, Security: secretstest.Set(t), Replicas: 1,
			Buddy: mqnode.BuddyConfig{TakeoverAfter: time.Second}},
		Mesh: Config{BindAddr: "127.0.0.1", Seeds: seeds, Profile: ProfileLocal},
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

// TestMeshReplication runs buddy replication through gossip, with the
// security on (TLS routes, role node in process): each node picks the
// other as its buddy, gossips it in its member metadata, and when one
// node leaves for good its buddy takes its tasks over and serves them.
func TestMeshReplication(t *testing.T) {
	a1 := startReplAgent(t, "a1")
	a2 := startReplAgent(t, "a2", a1.Mesh.GossipAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a1.Node.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "buddy in gossip", func() bool {
		for _, m := range a2.Mesh.Members() {
			if m.Meta.Name == "a1" {
				return m.Meta.Buddy == "idcA.a2" && m.Meta.ReplState == mqnode.ReplReplicated
			}
		}
		return false
	})
	c1, err := a1.Node.Client()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 20 {
		res, err := c1.Enqueue(ctx, "jobs", &mqnode.EnqueueItem{Payload: []byte{byte(i)}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res[0].Id)
	}
	c1.Close()
	if err := a1.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "takeover", func() bool { return a2.Node.Replication().Takeovers == 1 })
	c2, err := a2.Node.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	ds, _, err := c2.Pull(ctx, mqnode.PullRequest{Queue: "jobs", MaxTasks: 100})
	if err != nil || len(ds) != len(ids) {
		t.Fatalf("buddy serves %d tasks (%v), want %d", len(ds), err, len(ids))
	}
}
