package main

import (
	"fmt"
	"net"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/mqmesh/mqmesh/internal/secrets"
)

// SecretsEnv is the environment variable holding the default of --secrets.
const SecretsEnv = "MQMESH_SECRETS"

// securityFlags are --secrets and --role, shared by every command that
// connects. def is the command's own role (--role overrides it).
type securityFlags struct {
	Dir  string
	Role string
	def  secrets.Role
}

func (s *securityFlags) bind(fs *pflag.FlagSet) {
	fs.StringVar(&s.Dir, "secrets", os.Getenv(SecretsEnv), "secrets directory (see 'mqmesh secrets init'): TLS and credentials (default $"+SecretsEnv+")")
	if s.def == "" {
		s.def = secrets.RoleAdmin
	}
	fs.StringVar(&s.Role, "role", string(s.def), "credentials to use from --secrets: node, admin, worker or producer")
}

// load reads the secrets directory; nil without one.
func (s *securityFlags) load() (*secrets.Set, error) {
	if s.Dir == "" {
		return nil, nil
	}
	return secrets.Load(s.Dir)
}

// role is --role, or the command's role when it is not set.
func (s *securityFlags) role() (secrets.Role, error) {
	name := s.Role
	if name == "" {
		name = string(s.def)
	}
	if name == "" {
		name = string(secrets.RoleAdmin)
	}
	r, err := secrets.ParseRole(name)
	if err != nil {
		return "", fmt.Errorf("--%w", err)
	}
	return r, nil
}

// validate checks --role.
func (s *securityFlags) validate() error {
	_, err := s.role()
	return err
}

// natsOptions are the connection options of --role from --secrets: nkey,
// inbox prefix and TLS; none without --secrets.
func (s *securityFlags) natsOptions() ([]nats.Option, error) {
	set, err := s.load()
	if set == nil || err != nil {
		return nil, err
	}
	r, err := s.role()
	if err != nil {
		return nil, err
	}
	return set.ClientOptions(r)
}

// isLoopback reports whether a listen address (host:port) binds loopback
// only. An empty host (all interfaces) or a name is not loopback, except
// "localhost".
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
