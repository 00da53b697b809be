package main

import (
	"net"
	"strconv"
	"testing"

	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/worker"
)

// TestFlagDefaultsAreThePackageDefaults: `mqmesh node --mesh` with no other
// flag and no file runs with exactly what the packages' WithDefaults give a
// zero config, so the CLI cannot drift from the library (a literal port in
// the CLI, a default the package documents but never sets).
func TestFlagDefaultsAreThePackageDefaults(t *testing.T) {
	cfg := printConfig(t, "--mesh")
	node := mqnode.Config{}.WithDefaults()
	if cfg.Listen != node.Listen || cfg.DataDir != node.DataDir || cfg.IDC != node.IDC || cfg.Durability != node.Durability ||
		cfg.MaxPayload != node.MaxPayload || cfg.DefaultLease != node.DefaultLease || cfg.MaxPullWait != node.MaxPullWait {
		t.Fatalf("node defaults: CLI %+v\npackage %+v", cfg.Config, node)
	}
	agent := mesh.NodeAgentConfig{}.WithDefaults()
	gossip := agent.Mesh.WithDefaults()
	m := cfg.Mesh
	if m == nil {
		t.Fatal("--mesh gave no mesh section")
	}
	if m.BindAddr != gossip.BindAddr || m.BindPort != gossip.BindPort || m.Profile != gossip.Profile ||
		m.JoinWait != gossip.JoinWait || m.Retain != gossip.Retain {
		t.Fatalf("gossip defaults: CLI %+v\npackage %+v", m.Config, gossip)
	}
	if m.ClusterListen != agent.ClusterListen || m.GatewayListen != agent.GatewayListen || m.Host != agent.Host {
		t.Fatalf("agent defaults: CLI cluster %s gateway %s host %s; package %s %s %s",
			m.ClusterListen, m.GatewayListen, m.Host, agent.ClusterListen, agent.GatewayListen, agent.Host)
	}
	// And the documented ports are the ones in force.
	for _, c := range []struct {
		what string
		addr string
		want int
	}{{"cluster_listen", m.ClusterListen, mesh.DefaultClusterPort}, {"gateway_listen", m.GatewayListen, mesh.DefaultGatewayPort}} {
		if _, p, _ := net.SplitHostPort(c.addr); p != strconv.Itoa(c.want) {
			t.Fatalf("%s %s: want port %d", c.what, c.addr, c.want)
		}
	}
	if m.BindPort != mesh.DefaultBindPort {
		t.Fatalf("gossip port %d, want %d", m.BindPort, mesh.DefaultBindPort)
	}
}

// TestWorkerPoolGossipsOnAFreePortByDefault: a pool shares its host with a
// node (which has mesh.DefaultBindPort), so worker.Config's defaults give
// its gossip a free port; the CLI's flag (0 when not given) keeps that.
func TestWorkerPoolGossipsOnAFreePortByDefault(t *testing.T) {
	if got := (worker.Config{Mesh: &mesh.Config{}}).WithDefaults().Mesh.BindPort; got != mesh.RandomPort {
		t.Fatalf("pool gossip port %d, want mesh.RandomPort", got)
	}
	if got := (worker.Config{Mesh: &mesh.Config{BindPort: 7000}}).WithDefaults().Mesh.BindPort; got != 7000 {
		t.Fatalf("a given pool gossip port became %d", got)
	}
}
