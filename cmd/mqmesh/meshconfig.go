package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
)

// meshConfig is the mesh section of a node config file (and the mesh flags
// of `mqmesh node`): the gossip settings of mesh.Config, plus the host's
// name and the NATS route and gateway addresses of the node.
type meshConfig struct {
	// bind, port, advertise, seeds, profile, secret_key, join_wait, retain.
	mesh.Config `yaml:",inline"`
	// Host names this host in the membership. Default: the OS host name.
	Host string `yaml:"host"`
	// ClusterListen is the NATS route address (host:port) the other nodes
	// of this IDC connect to. Port 0 picks a free one. Default: the host of
	// listen, port mesh.DefaultClusterPort (6222).
	ClusterListen string `yaml:"cluster_listen"`
	// GatewayListen is the NATS gateway address (host:port) the other IDCs
	// connect to. Port 0 picks a free one. Default: the host of listen,
	// port mesh.DefaultGatewayPort (7222).
	GatewayListen string `yaml:"gateway_listen"`
}

// newMeshConfig is a mesh section with nothing set: every default comes
// later from the mesh package (see withDefaults).
func newMeshConfig() *meshConfig { return &meshConfig{} }

// UnmarshalYAML decodes a mesh section over newMeshConfig. It takes yaml's
// callback form on purpose: the callback decodes with the file's own
// decoder, which keeps an unknown key an error.
func (c *meshConfig) UnmarshalYAML(unmarshal func(any) error) error {
	p := meshSection(*newMeshConfig())
	if err := unmarshal(&p); err != nil {
		return err
	}
	*c = meshConfig(p)
	return nil
}

// meshSection is meshConfig without its UnmarshalYAML. yaml names it in
// errors ("field x not found in type main.meshSection"); loadConfig says
// "in the mesh section" instead.
type meshSection meshConfig

// bindMeshFlags registers the mesh flags of `mqmesh node`, bound to c's
// fields. secret_key has no flag, so a key never shows in a process list:
// use the file or $MQMESH_GOSSIP_KEY.
func bindMeshFlags(fs *pflag.FlagSet, c *meshConfig) {
	fs.StringSliceVar(&c.Seeds, "seed", c.Seeds, "gossip address host:port of any existing mesh member (repeatable; one reachable is enough; none: start a new mesh)")
	fs.StringVar(&c.BindAddr, "gossip-bind", c.BindAddr, "gossip (UDP+TCP) IP address (default: the host of --listen)")
	fs.IntVar(&c.BindPort, "gossip-port", c.BindPort, fmt.Sprintf("gossip port (default %d; %d picks a free one)", mesh.DefaultBindPort, mesh.RandomPort))
	fs.StringVar(&c.AdvertiseAddr, "gossip-advertise", c.AdvertiseAddr, "IP address other members reach this host's gossip at (default: --gossip-bind; required when that is 0.0.0.0)")
	fs.StringVar((*string)(&c.Profile), "profile", string(c.Profile), fmt.Sprintf("gossip timings: lan (inside one IDC), wan (across slow links) or local (one machine) (default %s)", mesh.DefaultProfile))
	fs.DurationVar(&c.JoinWait, "join-wait", c.JoinWait, fmt.Sprintf("how long to keep trying the seeds at start (default %s)", mesh.DefaultJoinWait))
	fs.DurationVar(&c.Retain, "gossip-retain", c.Retain, fmt.Sprintf("how long failed and left members stay listed (default %s)", mesh.DefaultRetain))
	fs.StringVar(&c.Host, "host", c.Host, "name of this host in the membership (default: the OS host name)")
	fs.StringVar(&c.ClusterListen, "cluster-listen", c.ClusterListen, fmt.Sprintf("NATS route address host:port for the nodes of this IDC (default: the host of --listen, port %d)", mesh.DefaultClusterPort))
	fs.StringVar(&c.GatewayListen, "gateway-listen", c.GatewayListen, fmt.Sprintf("NATS gateway address host:port for the other IDCs (default: the host of --listen, port %d)", mesh.DefaultGatewayPort))
}

// meshFlagsSet reports whether any mesh flag was given on fs.
func meshFlagsSet(fs *pflag.FlagSet) bool {
	names := pflag.NewFlagSet("mesh", pflag.ContinueOnError)
	bindMeshFlags(names, newMeshConfig())
	set := false
	names.VisitAll(func(f *pflag.Flag) { set = set || fs.Changed(f.Name) })
	return set
}

// withDefaults fills what is not set with the mesh package's defaults
// (mesh.NodeAgentConfig.WithDefaults, mesh.Config.WithDefaults) for a node
// listening at listen: gossip on its host at mesh.DefaultBindPort, routes
// and gateways on the same host at mesh.DefaultClusterPort and
// mesh.DefaultGatewayPort. A listen address without a host (":4222")
// listens everywhere, so the defaults do too. Only the keys of the section
// are taken (not, say, a gossip key from the environment).
func (c meshConfig) withDefaults(listen string) meshConfig {
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return c // "none" or malformed: validate says so
	}
	a := c.agentConfig(mqnode.Config{Listen: listen}).WithDefaults()
	m := a.Mesh.WithDefaults()
	c.BindAddr, c.BindPort, c.Profile, c.JoinWait, c.Retain = m.BindAddr, m.BindPort, m.Profile, m.JoinWait, m.Retain
	c.Host, c.ClusterListen, c.GatewayListen = a.Host, a.ClusterListen, a.GatewayListen
	return c
}

// validate checks a defaulted mesh section of the (defaulted) node config
// and names the bad key.
func (c meshConfig) validate(node mqnode.Config) error {
	if node.Listen == mqnode.ListenNone {
		return errors.New(`mesh: a mesh node serves other hosts: listen must be host:port, not "none"`)
	}
	mc := c.Config
	mc.Meta = mesh.Meta{Role: mesh.RoleNode, IDC: node.IDC, Name: node.Name}
	errs := []error{mc.WithDefaults().Validate()}
	if ip := net.ParseIP(c.BindAddr); ip != nil && ip.IsUnspecified() && c.AdvertiseAddr == "" {
		errs = append(errs, fmt.Errorf("bind %s listens on every interface: set advertise (--gossip-advertise) to the address other members reach this host at", c.BindAddr))
	}
	errs = append(errs, checkHostPort("cluster_listen", c.ClusterListen), checkHostPort("gateway_listen", c.GatewayListen))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("mesh config: %w", err)
	}
	return nil
}

// checkHostPort checks a listen address host:port (port 0 picks one).
func checkHostPort(key, addr string) error {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: want host:port: %w", key, addr, err)
	}
	if port, err := strconv.Atoi(p); err != nil || port < 0 || port > 65535 {
		return fmt.Errorf("%s %q: bad port", key, addr)
	}
	return nil
}

// agentConfig is the mesh agent's config for node.
func (c meshConfig) agentConfig(node mqnode.Config) mesh.NodeAgentConfig {
	return mesh.NodeAgentConfig{
		Node: node, Mesh: c.Config, Host: c.Host,
		ClusterListen: c.ClusterListen, GatewayListen: c.GatewayListen,
	}
}
