// Package secretstest gives tests a mesh secrets set cheaply, so test
// clusters run with TLS and authentication by default.
//
//	set := secretstest.Set(t) // one set per test process, loaded in memory
//	dir := secretstest.Dir(t) // a fresh directory under t.TempDir(), for child processes and CLIs
package secretstest

import (
	"os"
	"path/filepath"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/internal/secrets"
)

// TB is the part of testing.TB this package uses. It is an interface of
// its own so that non-test code (the simulator and the benchmarks build
// their mesh with internal/meshtest) does not link package testing.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	TempDir() string
}

var (
	once   sync.Once
	shared *secrets.Set
	err    error
)

// Set returns the test process's secrets set, generating it on first use
// (a few milliseconds). The files are loaded into memory and their
// temporary directory removed at once, so nothing is left behind; tests
// that need the files use Dir.
func Set(t TB) *secrets.Set {
	t.Helper()
	once.Do(func() {
		dir, e := os.MkdirTemp("", "mqmesh-secretstest-")
		if e != nil {
			err = e
			return
		}
		defer os.RemoveAll(dir)
		if err = secrets.Init(dir, false); err == nil {
			shared, err = secrets.Load(dir)
		}
	})
	if err != nil {
		t.Fatalf("secretstest: %v", err)
	}
	return shared
}

// Dir writes a fresh secrets directory under t.TempDir() and returns its
// path.
func Dir(t TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "secrets")
	if err := secrets.Init(dir, false); err != nil {
		t.Fatalf("secretstest: %v", err)
	}
	return dir
}

// GossipKeys is the gossip keyring of Set, for mesh members a test starts.
func GossipKeys(t TB) [][]byte {
	t.Helper()
	keys, err := Set(t).GossipKeys()
	if err != nil {
		t.Fatalf("secretstest: %v", err)
	}
	return keys
}

// InProcess are the options of an in-process connection as role r with
// Set's credentials (give them to mqnode.Node.Connect).
func InProcess(t TB, r secrets.Role) []nats.Option {
	t.Helper()
	opts, err := Set(t).InProcessOptions(r)
	if err != nil {
		t.Fatalf("secretstest: %v", err)
	}
	return opts
}
