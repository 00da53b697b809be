package mqnode

import (
	"context"
	"fmt"
	"net/url"

	"github.com/nats-io/nats-server/v2/server"
)

// StartGroup starts nodes joined by NATS routes into one cluster (on
// 127.0.0.1, random ports) and tells each about the others (SetPeers), as
// the mesh would: the way tests and benchmarks run replicated nodes
// without gossip. cfgs[i].Host defaults to the node's name, so every node
// counts as its own host. Listen "" becomes 127.0.0.1:0. On error the
// nodes started are stopped. Call SetGroupPeers again after stopping or
// restarting a member to tell the others (a stopped member is down: its
// buddy takes over after TakeoverAfter).
func StartGroup(ctx context.Context, cfgs ...Config) ([]*Node, error) {
	nodes := make([]*Node, 0, len(cfgs))
	var first *url.URL
	for i, cfg := range cfgs {
		n, err := StartGroupMember(ctx, cfg, first)
		if err != nil {
			for _, n := range nodes {
				_ = n.Stop(context.Background())
			}
			return nil, fmt.Errorf("mqnode: start group member %d: %w", i, err)
		}
		if first == nil {
			first = n.RouteURL()
		}
		nodes = append(nodes, n)
	}
	SetGroupPeers(nodes, nil)
	return nodes, nil
}

// StartGroupMember starts one node of a group, routed to route (nil: the
// first of the group). It does not tell anyone (see SetGroupPeers).
func StartGroupMember(ctx context.Context, cfg Config, route *url.URL) (*Node, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Host == "" {
		cfg.Host = cfg.Name
	}
	n, err := New(cfg)
	if err != nil {
		return nil, err
	}
	n.NATSOptions = func(o *server.Options) {
		o.Cluster = server.ClusterOpts{Name: "mqnode-group", Host: "127.0.0.1", Port: server.RANDOM_PORT}
		if route != nil {
			o.Routes = []*url.URL{route}
		}
	}
	if err := n.Start(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// RouteURL is the node's NATS cluster (route) URL; nil without a cluster.
func (n *Node) RouteURL() *url.URL {
	if n.ns == nil || n.ns.ClusterAddr() == nil {
		return nil
	}
	return &url.URL{Scheme: "nats-route", Host: n.ns.ClusterAddr().String()}
}

// SetGroupPeers tells every node in alive about all of them, and about
// down (nodes stopped or killed) as down.
func SetGroupPeers(alive []*Node, down []*Node) {
	var peers []Peer
	for _, n := range alive {
		peers = append(peers, n.peer(true))
	}
	for _, n := range down {
		peers = append(peers, n.peer(false))
	}
	for _, n := range alive {
		n.SetPeers(peers)
	}
}

func (n *Node) peer(alive bool) Peer {
	return Peer{IDC: n.cfg.IDC, Name: n.cfg.Name, Host: n.cfg.Host, Alive: alive}
}
