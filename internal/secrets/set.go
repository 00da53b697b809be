package secrets

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"

	"github.com/nats-io/nkeys"
)

// Role is a NATS identity of the mesh.
type Role string

// The roles, from most to least trusted.
const (
	RoleNode     Role = "node"     // MQ nodes: serve requests, publish backlog and usage, link to each other
	RoleAdmin    Role = "admin"    // operators: stats, dead letters, membership, everything but answering requests
	RoleWorker   Role = "worker"   // workers: pull, ack/extend, read backlog
	RoleProducer Role = "producer" // producers: enqueue
)

// Roles lists every role.
var Roles = []Role{RoleNode, RoleAdmin, RoleWorker, RoleProducer}

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	if slices.Contains(Roles, Role(s)) {
		return Role(s), nil
	}
	return "", fmt.Errorf("role %q: want node, admin, worker or producer", s)
}

// File names inside a secrets directory.
const (
	FileCACert        = "ca.crt"
	FileCAKey         = "ca.key"
	FileNodeCert      = "node.crt"
	FileNodeKey       = "node.key"
	FileRoles         = "roles.json"
	FileClusterSecret = "cluster.secret"
	FileGossipKey     = "gossip.key"
	FileAdminToken    = "admin.token"
)

// SeedFile is the nkey seed file of a role: "<role>.nk".
func SeedFile(r Role) string { return string(r) + ".nk" }

// ServerName is the name every TLS peer verifies: the node certificate's
// SAN, so one certificate serves a node on any address.
const ServerName = "mqmesh-node"

// Set is a loaded secrets directory. Fields of files that were absent are
// empty; the accessors needing them say which file is missing.
type Set struct {
	// Dir is the directory the set was loaded from.
	Dir string

	caPool   *x509.CertPool
	nodeCert *tls.Certificate
	seeds    map[Role][]byte
	roles    map[Role][]string
	cluster  string
	gossip   [][]byte
	adminTok string
}

// missing is the error of an accessor whose file was not in the directory.
func (s *Set) missing(file, need string) error {
	return fmt.Errorf("secrets %s: %s is missing (needed %s)", s.Dir, file, need)
}

// ClusterSecret is the password of routes and gateways.
func (s *Set) ClusterSecret() (string, error) {
	if s.cluster == "" {
		return "", s.missing(FileClusterSecret, "by a mesh node for routes and gateways")
	}
	return s.cluster, nil
}

// GossipKeys returns the gossip keyring, primary key first.
func (s *Set) GossipKeys() ([][]byte, error) {
	if len(s.gossip) == 0 {
		return nil, s.missing(FileGossipKey, "by every mesh member for gossip encryption")
	}
	return s.gossip, nil
}

// AdminToken is the admin's HTTP bearer token.
func (s *Set) AdminToken() (string, error) {
	if s.adminTok == "" {
		return "", s.missing(FileAdminToken, "for the admin HTTP endpoints")
	}
	return s.adminTok, nil
}

// HasSeed reports whether the role's nkey seed is in the directory.
func (s *Set) HasSeed(r Role) bool { return len(s.seeds[r]) > 0 }

// RoleKeys returns the public nkeys roles.json lists for a role.
func (s *Set) RoleKeys(r Role) []string { return s.roles[r] }

// CheckNode reports what a node's server lacks in this set: the node
// certificate and key, roles.json with a node key, and node.nk.
func (s *Set) CheckNode() error {
	if _, err := s.NodeCertificate(); err != nil {
		return err
	}
	if len(s.roles[RoleNode]) == 0 {
		return s.missing(FileRoles+" (with a node key)", "by a node to authorize clients")
	}
	if !s.HasSeed(RoleNode) {
		return s.missing(SeedFile(RoleNode), "by a node to connect to itself")
	}
	if pub := s.publicKey(RoleNode); !slices.Contains(s.roles[RoleNode], pub) {
		return fmt.Errorf("secrets %s: the key of %s (%s) is not a node key in %s", s.Dir, SeedFile(RoleNode), pub, FileRoles)
	}
	return nil
}

// publicKey is the public key of a role's seed ("" without one).
func (s *Set) publicKey(r Role) string {
	kp, err := nkeys.FromSeed(s.seeds[r])
	if err != nil {
		return ""
	}
	pub, _ := kp.PublicKey()
	return pub
}

// CheckMesh reports what a mesh node lacks beyond CheckNode: cluster.secret
// and gossip.key.
func (s *Set) CheckMesh() error {
	if err := s.CheckNode(); err != nil {
		return err
	}
	if _, err := s.ClusterSecret(); err != nil {
		return err
	}
	_, err := s.GossipKeys()
	return err
}
