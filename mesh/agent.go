package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/mesh/meshpb"
	"github.com/mqmesh/mqmesh/mqnode"
)

// OpMembers is the node operation that answers with the membership as that
// node sees it (mq.<idc>.<node>.members).
const OpMembers = "members"

// NodeAgentConfig configures a node that is a member of the mesh.
type NodeAgentConfig struct {
	// Node is the MQ node's config; its IDC and Name are the member's.
	Node mqnode.Config
	// Mesh is the gossip config; its Meta is filled in by the agent.
	Mesh Config
	// Host names this host in the membership. Default: the OS host name.
	Host string
	// ClusterListen and GatewayListen are the NATS route and gateway
	// addresses (host:port; port 0 picks a free one, which is gossiped).
	// Defaults: the host of Node.Listen with port 0.
	ClusterListen string
	GatewayListen string
	// GatewayAdvertise, when set (host:port), is the gateway address given
	// to other IDCs instead of the listener's: e.g. a proxy in front of it
	// (the simulator's link faults), or a NAT address.
	GatewayAdvertise string
	// Backlog are the backlog publisher's per-tier policies (zero entries:
	// defaults). NoBacklog turns the publisher off.
	Backlog   [backlog.NumTiers]backlog.TierPolicy
	NoBacklog bool
}

// NodeAgent runs an MQ node as a mesh member: it joins gossip first, starts
// the node's NATS server with routes to its IDC's nodes and gateways to the
// other IDCs as gossip reports them, gossips its own NATS addresses, keeps
// routes in step with membership, and returns a dead worker's leased tasks
// to ready as soon as gossip declares it dead.
type NodeAgent struct {
	cfg  NodeAgentConfig
	log  *slog.Logger
	Mesh *Mesh
	Node *mqnode.Node

	mu   sync.Mutex
	topo Topology
	// workers are the alive worker members by worker id: the memberships
	// (MemberToken) gossip reports for that id.
	workers  map[string]map[string]bool
	gateways []*server.RemoteGatewayOpts // fixed at start: gateways cannot be reloaded

	pub     *backlog.Publisher
	pubConn *nats.Conn
	sub     *Subscription
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	stopMu  sync.Mutex
}

// NewNodeAgent checks the configs and builds the agent.
func NewNodeAgent(cfg NodeAgentConfig) (*NodeAgent, error) {
	cfg.Node = cfg.Node.WithDefaults()
	if cfg.Node.Listen == mqnode.ListenNone {
		return nil, errors.New("mesh: a mesh node needs a NATS listen address (not \"none\")")
	}
	host, _, err := net.SplitHostPort(cfg.Node.Listen)
	if err != nil {
		return nil, fmt.Errorf("mesh: node listen %q: %w", cfg.Node.Listen, err)
	}
	if cfg.ClusterListen == "" {
		cfg.ClusterListen = net.JoinHostPort(host, "0")
	}
	if cfg.GatewayListen == "" {
		cfg.GatewayListen = net.JoinHostPort(host, "0")
	}
	if cfg.Host == "" {
		cfg.Host = mqnode.DefaultName()
	}
	if cfg.Node.Host == "" {
		cfg.Node.Host = cfg.Host
	}
	if cfg.Mesh.MembersFile == "" {
		cfg.Mesh.MembersFile = filepath.Join(cfg.Node.DataDir, MembersFileName)
	}
	if sec := cfg.Node.Security; sec != nil {
		if err := sec.CheckMesh(); err != nil {
			return nil, fmt.Errorf("mesh: security: %w", err)
		}
		if len(cfg.Mesh.Keyring) == 0 {
			cfg.Mesh.Keyring, _ = sec.GossipKeys() // checked by CheckMesh
		}
	}
	cfg.Mesh.Meta = Meta{Role: RoleNode, IDC: cfg.Node.IDC, Host: cfg.Host, Name: cfg.Node.Name, Version: mqnode.Version}
	if cfg.Mesh.Logger == nil {
		cfg.Mesh.Logger = cfg.Node.Logger
	}
	m, err := New(cfg.Mesh)
	if err != nil {
		return nil, err
	}
	n, err := mqnode.New(cfg.Node)
	if err != nil {
		return nil, err
	}
	a := &NodeAgent{cfg: cfg, Mesh: m, Node: n, stop: make(chan struct{}),
		log: cfg.Node.Logger.With("component", "mesh-agent", "node", cfg.Node.Name, "idc", cfg.Node.IDC)}
	n.NATSOptions = a.natsOptions
	n.WorkerMember = a.workerMember
	a.workers = map[string]map[string]bool{}
	if err := n.HandleOp(OpMembers, a.members); err != nil {
		return nil, err
	}
	n.SetWorkerInfo((&workerDirectory{m: m}).lookup)
	return a, nil
}

func splitListen(field, addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("mesh: %s %q: %w", field, addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("mesh: %s %q: bad port", field, addr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return h, port, nil
}

// natsOptions adds the IDC cluster and the gateways to the node's server.
func (a *NodeAgent) natsOptions(o *server.Options) {
	a.mu.Lock()
	defer a.mu.Unlock()
	idc := a.cfg.Node.IDC
	ch, cp, _ := splitListen("cluster_listen", a.cfg.ClusterListen)
	gh, gp, _ := splitListen("gateway_listen", a.cfg.GatewayListen)
	// No system account: its event traffic ($SYS) would cross every
	// gateway; mqmesh does not use it, and gateway statistics then count
	// only application messages.
	o.NoSystemAccount = true
	o.Cluster = server.ClusterOpts{Name: idc, Host: ch, Port: cp}
	o.Routes = a.topo.Routes
	o.Gateway = server.GatewayOpts{Name: idc, Host: gh, Port: gp, Gateways: a.gateways, Advertise: a.cfg.GatewayAdvertise}
	if sec := a.Node.Security(); sec != nil {
		// Mutual TLS (peers verify the node certificate under
		// secrets.ServerName, whatever IP they dial) plus the cluster
		// secret: a route or gateway from a server without both is refused.
		// Errors were ruled out by CheckMesh in NewNodeAgent.
		_ = sec.ClusterOptions(&o.Cluster)
		_ = sec.GatewayOptions(&o.Gateway)
		o.Routes = make([]*url.URL, len(a.topo.Routes))
		for i, u := range a.topo.Routes {
			o.Routes[i] = sec.RouteURL(u)
		}
	}
}

// Start joins the mesh, starts the node with the topology gossip reported,
// and publishes the node's NATS addresses.
func (a *NodeAgent) Start(ctx context.Context) (err error) {
	if _, _, err := splitListen("cluster_listen", a.cfg.ClusterListen); err != nil {
		return err
	}
	if _, _, err := splitListen("gateway_listen", a.cfg.GatewayListen); err != nil {
		return err
	}
	a.sub = a.Mesh.Subscribe(1024)
	if err := a.Mesh.Start(ctx); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = a.Mesh.Shutdown()
			_ = a.Node.Stop(context.Background())
		}
	}()
	a.mu.Lock()
	// Isolated at start (none of the remembered members answered): the
	// NATS links to the remembered nodes are configured anyway; NATS keeps
	// dialing them, and gateways cannot be added later.
	members := a.Mesh.Members()
	for _, k := range a.Mesh.KnownMembers() {
		k.State, k.Meta.Leaving = StateAlive, false
		members = append(members, k)
	}
	a.topo = TopologyFor(a.Mesh.Self(), members)
	for idc, urls := range a.topo.Gateways {
		a.gateways = append(a.gateways, &server.RemoteGatewayOpts{Name: idc, URLs: urls})
	}
	a.mu.Unlock()
	if err := a.Node.Start(ctx); err != nil {
		return err
	}
	ns := a.Node.Server()
	adv := a.cfg.Mesh.AdvertiseAddr
	if adv == "" {
		adv = a.cfg.Mesh.WithDefaults().BindAddr
	}
	if err := a.Mesh.UpdateMeta(func(m *Meta) {
		m.NATSClient = ns.ClientURL()
		m.NATSCluster = "nats-route://" + advertised(ns.ClusterAddr(), adv)
		m.NATSGateway = "nats://" + advertised(ns.GatewayAddr(), adv)
		if a.cfg.GatewayAdvertise != "" {
			m.NATSGateway = "nats://" + a.cfg.GatewayAdvertise
		}
	}); err != nil {
		return fmt.Errorf("mesh: publish nats addresses: %w", err)
	}
	if !a.cfg.NoBacklog {
		if a.pub, a.pubConn, err = StartPublisher(a.Node, a.cfg.Backlog); err != nil {
			return err
		}
	}
	a.mu.Lock()
	nRoutes, nGateways := len(a.topo.Routes), len(a.gateways)
	a.mu.Unlock()
	a.feedPeers() // agent_repl.go
	a.wg.Add(2)
	go a.watch()
	go a.gossipRepl()
	a.log.Info("node joined the mesh", "routes", nRoutes, "gateways", nGateways)
	return nil
}

// advertised renders a listener address, replacing an unspecified IP
// (0.0.0.0) with the advertise address.
func advertised(addr *net.TCPAddr, adv string) string {
	if addr == nil {
		return ""
	}
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = adv
	}
	return net.JoinHostPort(host, strconv.Itoa(addr.Port))
}

// watch follows membership: routes for node changes in this IDC, lease
// release for dead workers.
func (a *NodeAgent) watch() {
	defer a.wg.Done()
	for {
		select {
		case <-a.stop:
			return
		case ev := <-a.sub.C:
			a.handle(ev)
		}
	}
}

func (a *NodeAgent) handle(ev Event) {
	mb := ev.Member
	switch mb.Meta.Role {
	case RoleWorker:
		tok := MemberToken(mb)
		a.mu.Lock()
		ms := a.workers[mb.Meta.Name]
		if ev.Type == EventFail || ev.Type == EventLeave {
			delete(ms, tok)
			if len(ms) == 0 {
				delete(a.workers, mb.Meta.Name)
			}
		} else {
			if ms == nil {
				ms = map[string]bool{}
				a.workers[mb.Meta.Name] = ms
			}
			ms[tok] = true
		}
		a.mu.Unlock()
		if ev.Type == EventFail || ev.Type == EventLeave {
			// Only the leases this very member took: another member reusing
			// the worker id cannot release them by "dying".
			if n := a.Node.ReleaseWorker(mb.Meta.Name, tok); n > 0 {
				a.log.Info("released the leases of a worker that left the mesh", "worker", mb.Meta.Name, "member", tok, "event", ev.Type, "tasks", n)
			}
		}
	case RoleNode:
		a.feedPeers() // buddy choice and takeover (agent_repl.go)
		if mb.Meta.IDC != a.cfg.Node.IDC || mb.Meta.Name == a.cfg.Node.Name {
			return
		}
		topo := TopologyFor(a.Mesh.Self(), a.Mesh.Members())
		a.mu.Lock()
		changed := !sameURLs(topo.Routes, a.topo.Routes)
		a.topo.Routes = topo.Routes
		a.mu.Unlock()
		if changed {
			if err := a.Node.ReloadNATS(); err != nil {
				a.log.Warn("route reload failed", "err", err)
			} else {
				a.log.Info("routes follow membership", "routes", len(topo.Routes), "event", ev.Type, "member", mb.ID)
			}
		}
	}
}

// MemberToken names one membership of a member: its id and gossip address.
// A lease records its worker's token (see mqnode.Node.WorkerMember).
func MemberToken(mb Member) string { return mb.ID + "@" + mb.Addr }

// workerMember is the node's WorkerMember: the membership of the one alive
// worker member with this id ("" when none or several claim it).
func (a *NodeAgent) workerMember(id string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	ms := a.workers[id]
	if len(ms) != 1 {
		return ""
	}
	for tok := range ms {
		return tok
	}
	return ""
}

// Stop leaves the mesh gracefully (others see "left") and stops the node.
// Safe to call twice.
func (a *NodeAgent) Stop(ctx context.Context) error {
	return a.shutdown(ctx, true)
}

// Kill stops gossip without a leave, as a crash would (others detect a
// failure), then stops the node. For tests and the simulator.
func (a *NodeAgent) Kill() error {
	return a.shutdown(context.Background(), false)
}

func (a *NodeAgent) shutdown(ctx context.Context, graceful bool) error {
	var err error
	a.once.Do(func() {
		close(a.stop)
		a.wg.Wait()
		if a.pub != nil {
			a.pub.Stop()
			a.pubConn.Close()
		}
		if a.sub != nil {
			a.sub.Close()
		}
		var errM error
		if graceful {
			errM = a.Mesh.Leave(2 * time.Second)
		} else {
			errM = a.Mesh.Shutdown()
		}
		err = errors.Join(errM, a.Node.Stop(ctx))
	})
	return err
}

// members answers OpMembers.
func (a *NodeAgent) members(ctx context.Context, body []byte) proto.Message {
	var req meshpb.MembersRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		return &meshpb.MembersReply{Error: "bad request: " + err.Error()}
	}
	return MembersReply(a.Mesh)
}

// MembersReply renders the membership as the wire reply.
func MembersReply(m *Mesh) *meshpb.MembersReply {
	ready, why := m.Ready()
	rep := &meshpb.MembersReply{Self: m.Self().memberID(), Ready: ready, NotReady: why}
	for _, mb := range m.Members() {
		rep.Members = append(rep.Members, &meshpb.Member{
			Id: mb.ID, State: stateToPB[mb.State], GossipAddr: mb.Addr, SinceUnixMs: mb.Since.UnixMilli(), Meta: mb.Meta.toPB(),
		})
	}
	return rep
}

// StartPublisher starts the backlog publisher of a started node on its own
// in-process connection; stop the publisher, then close the connection.
func StartPublisher(n *mqnode.Node, policies [backlog.NumTiers]backlog.TierPolicy) (*backlog.Publisher, *nats.Conn, error) {
	nc, err := n.Connect(nats.Name("backlog-publisher"))
	if err != nil {
		return nil, nil, err
	}
	cfg := n.Config()
	p, err := backlog.NewPublisher(nc, backlog.PublisherConfig{
		IDC: cfg.IDC, Node: cfg.Name, NATSClient: n.ClientURL(), Policies: policies,
		Source: n.Levels, Logger: cfg.Logger,
	})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	if err := p.Start(); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return p, nc, nil
}
