package meshtest

import (
	"context"
	"fmt"

	"github.com/mqmesh/mqmesh/internal/lifecycle"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
)

// Node is one node of a cluster: a mesh node agent and an in-process client
// of it. It keeps the lifecycle contract (package internal/lifecycle):
// each Start builds a fresh agent from the node's config, so a failed Start
// may be retried; Stop is a graceful leave; Kill a crash (no leave).
type Node struct {
	IDC, Name string
	// Config is what Start builds the agent from (data dir, ports, seeds,
	// security...); change it before Start.
	Config mesh.NodeAgentConfig

	life   lifecycle.Guard
	agent  *mesh.NodeAgent
	client *mqnode.Client
}

// NewNode returns a node, not started, that will run with cfg.
func NewNode(cfg mesh.NodeAgentConfig) *Node {
	n := &Node{IDC: cfg.Node.IDC, Name: cfg.Node.Name, Config: cfg}
	n.life.Name = "meshtest: node " + cfg.Node.Name
	return n
}

// Agent is the running node agent (nil before Start).
func (n *Node) Agent() *mesh.NodeAgent { return n.agent }

// Client is an in-process client of the node (nil before Start; closed at
// Stop and Kill).
func (n *Node) Client() *mqnode.Client { return n.client }

// GossipAddr is the node's gossip address ("" when not started).
func (n *Node) GossipAddr() string {
	if n.agent == nil {
		return ""
	}
	return n.agent.Mesh.GossipAddr()
}

// Start builds the agent, starts it and opens the client.
func (n *Node) Start(ctx context.Context) error {
	return n.life.Start(ctx, func() error {
		a, err := mesh.NewNodeAgent(n.Config)
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if err := a.Start(ctx); err != nil {
			return fmt.Errorf("start node %s: %w", n.Name, err)
		}
		c, err := a.Node.Client()
		if err != nil {
			a.Kill()
			return fmt.Errorf("client of node %s: %w", n.Name, err)
		}
		n.agent, n.client = a, c
		return nil
	})
}

// Stop closes the client and stops the agent gracefully (a leave).
func (n *Node) Stop(ctx context.Context) error {
	return n.life.Stop(func() error {
		n.client.Close()
		return n.agent.Stop(ctx)
	})
}

// Kill closes the client and kills the agent (no leave: others detect a
// failure).
func (n *Node) Kill() {
	n.life.Kill(func() {
		n.client.Close()
		n.agent.Kill()
	})
}

// Running reports whether the node was started and not stopped.
func (n *Node) Running() bool { return n.life.State() == lifecycle.Running }
