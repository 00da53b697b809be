package mesh

import (
	"testing"

	"github.com/mqmesh/mqmesh/internal/lifecycle"
	"github.com/mqmesh/mqmesh/internal/lifecycle/lifecycletest"
	"github.com/mqmesh/mqmesh/internal/secrets/secretstest"
	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

func TestMeshKeepsTheLifecycleContract(t *testing.T) {
	newMesh := func(t *testing.T, port int) *Mesh {
		m, err := New(Config{BindAddr: "127.0.0.1", BindPort: port, Profile: ProfileLocal, Logger: testLogger(t),
			Keyring: secretstest.GossipKeys(t), Meta: Meta{Role: RoleNode, IDC: "idcA", Name: "a1"}})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Part { return newMesh(t, RandomPort) },
		// Its gossip port is taken.
		FailStart: func(t *testing.T) (lifecycle.Part, func()) {
			port, _, free := lifecycletest.TakePort(t)
			return newMesh(t, port), free
		},
	})
}

func TestNodeAgentKeepsTheLifecycleContract(t *testing.T) {
	newAgent := func(t *testing.T, listen string) *NodeAgent {
		a, err := NewNodeAgent(NodeAgentConfig{ClusterListen: "127.0.0.1:0", GatewayListen: "127.0.0.1:0",
			Node: mqnode.Config{Name: "a1", IDC: "idcA", DataDir: t.TempDir(), Listen: listen, Logger: testLogger(t), Throttle: testlog.NoCPUThrottle,
				Security: secretstest.Set(t)},
			Mesh: Config{BindAddr: "127.0.0.1", BindPort: RandomPort, Profile: ProfileLocal},
			Host: "host-a1",
		})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Part { return newAgent(t, "127.0.0.1:0") },
		// The node's client port is taken: gossip has started when the node
		// fails, and must be undone.
		FailStart: func(t *testing.T) (lifecycle.Part, func()) {
			_, addr, free := lifecycletest.TakePort(t)
			return newAgent(t, addr), free
		},
	})
}
