package secrets_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqmesh/mqmesh/internal/secrets"
)

func TestInitWritesEveryFilePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	if err := secrets.Init(dir, false); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v %v, want 0700", st.Mode().Perm(), err)
	}
	want := []string{"ca.crt", "ca.key", "node.crt", "node.key", "node.nk", "worker.nk", "producer.nk", "admin.nk",
		"roles.json", "cluster.secret", "gossip.key", "admin.token"}
	for _, f := range want {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", f, st.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(want) {
		t.Errorf("%d files, want %d (no temp files left)", len(entries), len(want))
	}
	s, err := secrets.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CheckMesh(); err != nil {
		t.Fatal(err)
	}
	for _, r := range secrets.Roles {
		if _, err := s.ClientOptions(r); err != nil {
			t.Errorf("role %s: %v", r, err)
		}
		if len(s.RoleKeys(r)) != 1 {
			t.Errorf("role %s: %d keys in roles.json", r, len(s.RoleKeys(r)))
		}
	}
	if tok, err := s.AdminToken(); err != nil || len(tok) != 64 {
		t.Errorf("admin token %q %v", tok, err)
	}
}

func TestInitNeverOverwritesWithoutForce(t *testing.T) {
	dir := t.TempDir()
	if err := secrets.Init(dir, false); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	err := secrets.Init(dir, false)
	if !errors.Is(err, secrets.ErrExists) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second init: %v, want ErrExists naming --force", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); string(after) != string(before) {
		t.Fatal("ca.crt changed without --force")
	}
	if err := secrets.Init(dir, true); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); string(after) == string(before) {
		t.Fatal("--force did not rotate ca.crt")
	}
}

func TestLoadNamesTheBadFile(t *testing.T) {
	fresh := func(t *testing.T) string {
		dir := t.TempDir()
		if err := secrets.Init(dir, false); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	cases := []struct {
		name  string
		spoil func(dir string)
		want  []string
	}{
		{"ca missing", func(d string) { os.Remove(filepath.Join(d, "ca.crt")) }, []string{"ca.crt", "missing"}},
		{"key readable by others", func(d string) { os.Chmod(filepath.Join(d, "node.key"), 0o644) }, []string{"node.key", "0644", "chmod 600"}},
		{"seed readable by group", func(d string) { os.Chmod(filepath.Join(d, "worker.nk"), 0o640) }, []string{"worker.nk", "0640"}},
		{"seed garbage", func(d string) { os.WriteFile(filepath.Join(d, "producer.nk"), []byte("SUxyz\n"), 0o600) }, []string{"producer.nk", "not an nkey seed"}},
		{"cert without key", func(d string) { os.Remove(filepath.Join(d, "node.key")) }, []string{"node.key", "missing"}},
		{"roles bad json", func(d string) { os.WriteFile(filepath.Join(d, "roles.json"), []byte("{"), 0o600) }, []string{"roles.json"}},
		{"roles unknown role", func(d string) { os.WriteFile(filepath.Join(d, "roles.json"), []byte(`{"root":[]}`), 0o600) }, []string{"roles.json", "root"}},
		{"gossip key short", func(d string) { os.WriteFile(filepath.Join(d, "gossip.key"), []byte("c2hvcnQ=\n"), 0o600) }, []string{"gossip.key", "5 bytes"}},
		{"cluster secret short", func(d string) { os.WriteFile(filepath.Join(d, "cluster.secret"), []byte("abc\n"), 0o600) }, []string{"cluster.secret"}},
		{"node cert of another CA", func(d string) {
			other := t.TempDir()
			_ = secrets.Init(other, false)
			b, _ := os.ReadFile(filepath.Join(other, "ca.crt"))
			os.WriteFile(filepath.Join(d, "ca.crt"), b, 0o600)
		}, []string{"node.crt", "does not verify"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := fresh(t)
			c.spoil(dir)
			_, err := secrets.Load(dir)
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestPartialDirectory: a worker host gets ca.crt, worker.nk and gossip.key
// only; it loads, connects as worker, and asking for node material names
// the missing file.
func TestPartialDirectory(t *testing.T) {
	full := t.TempDir()
	if err := secrets.Init(full, false); err != nil {
		t.Fatal(err)
	}
	part := t.TempDir()
	for _, f := range []string{"ca.crt", "worker.nk", "gossip.key"} {
		b, _ := os.ReadFile(filepath.Join(full, f))
		if err := os.WriteFile(filepath.Join(part, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err := secrets.Load(part)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClientOptions(secrets.RoleWorker); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClientOptions(secrets.RoleAdmin); err == nil || !strings.Contains(err.Error(), "admin.nk is missing") {
		t.Fatalf("admin on a worker host: %v", err)
	}
	if err := s.CheckNode(); err == nil || !strings.Contains(err.Error(), "node.crt") {
		t.Fatalf("node on a worker host: %v", err)
	}
}

func TestParseGossipKeys(t *testing.T) {
	k1, k2 := secrets.NewGossipKey(), secrets.NewGossipKey()
	keys, err := secrets.ParseGossipKeys("# primary first\n" + k1 + "\n\n" + k2 + "\n")
	if err != nil || len(keys) != 2 || len(keys[0]) != 32 {
		t.Fatal(keys, err)
	}
	if _, err := secrets.ParseGossipKeys("\n# nothing\n"); err == nil {
		t.Fatal("empty keyring accepted")
	}
}
