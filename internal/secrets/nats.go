package secrets

import (
	"crypto/tls"
	"fmt"
	"net/url"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ClusterUser is the user name of route and gateway connections; the
// password is cluster.secret.
const ClusterUser = "mqmesh"

// connTypeInProcess is jwt.ConnectionTypeInProcess (nats-io/jwt/v2), the
// connection type of a client connected in process.
const connTypeInProcess = "IN_PROCESS"

// tlsTimeout is the TLS handshake timeout of every listener, in seconds.
const tlsTimeout = 5

// authOptions are the nkey and inbox options of a role.
func (s *Set) authOptions(r Role) ([]nats.Option, error) {
	seed := s.seeds[r]
	if len(seed) == 0 {
		return nil, s.missing(SeedFile(r), "to connect as role "+string(r))
	}
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("secrets %s: %s: %w", s.Dir, SeedFile(r), err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("secrets %s: %s: %w", s.Dir, SeedFile(r), err)
	}
	sign := func(nonce []byte) ([]byte, error) { return kp.Sign(nonce) }
	return []nats.Option{nats.Nkey(pub, sign), nats.CustomInboxPrefix(InboxPrefix(r))}, nil
}

// ClientOptions are the options of a NATS connection as role r over the
// network: its nkey, its inbox prefix, and TLS verifying the node.
func (s *Set) ClientOptions(r Role) ([]nats.Option, error) {
	opts, err := s.authOptions(r)
	if err != nil {
		return nil, err
	}
	return append(opts, nats.Secure(s.ClientTLS())), nil
}

// InProcessOptions are the options of an in-process connection as role r
// (no socket, so no TLS): its nkey and inbox prefix.
func (s *Set) InProcessOptions(r Role) ([]nats.Option, error) { return s.authOptions(r) }

// ServerOptions secures a node's client port: TLS with the node
// certificate and the nkey users of roles.json, each with its role's
// Permissions. Anonymous connections are refused.
func (s *Set) ServerOptions(o *server.Options) error {
	tc, err := s.ServerTLS()
	if err != nil {
		return err
	}
	if len(s.roles) == 0 {
		return s.missing(FileRoles, "by a node to authorize clients")
	}
	var users []*server.NkeyUser
	for _, r := range Roles {
		for _, k := range s.roles[r] {
			u := &server.NkeyUser{Nkey: k, Permissions: Permissions(r)}
			if r == RoleNode {
				// A node connects only to itself, in process: its credential
				// is refused on the network, so a stolen node.nk cannot
				// serve another node's subjects.
				u.AllowedConnectionTypes = map[string]struct{}{connTypeInProcess: {}}
			}
			users = append(users, u)
		}
	}
	if len(s.roles[RoleNode]) == 0 {
		return fmt.Errorf("secrets %s: %s lists no node key: the node could not connect to itself", s.Dir, FileRoles)
	}
	o.TLSConfig, o.TLSTimeout = tc, tlsTimeout
	o.Nkeys = users
	o.AuthTimeout = tlsTimeout
	return nil
}

// ClusterOptions secures a node's routes: mutual TLS with the node
// certificate and the cluster.secret password.
func (s *Set) ClusterOptions(c *server.ClusterOpts) error {
	return s.peerOptions(&c.TLSConfig, &c.TLSTimeout, &c.Username, &c.Password, &c.AuthTimeout)
}

// GatewayOptions secures a node's gateways: mutual TLS with the node
// certificate and the cluster.secret password, in and out.
func (s *Set) GatewayOptions(g *server.GatewayOpts) error {
	return s.peerOptions(&g.TLSConfig, &g.TLSTimeout, &g.Username, &g.Password, &g.AuthTimeout)
}

// peerOptions sets the fields routes and gateways share.
func (s *Set) peerOptions(tc **tls.Config, handshake *float64, user, pass *string, auth *float64) error {
	c, err := s.PeerTLS()
	if err != nil {
		return err
	}
	pw, err := s.ClusterSecret()
	if err != nil {
		return err
	}
	*tc, *handshake = c, tlsTimeout
	*user, *pass, *auth = ClusterUser, pw, tlsTimeout
	return nil
}

// RouteURL returns a copy of a route URL carrying the cluster credentials
// (routes authenticate with the URL's user info).
func (s *Set) RouteURL(u *url.URL) *url.URL {
	c := *u
	c.User = url.UserPassword(ClusterUser, s.cluster)
	return &c
}
