package mesh

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestCorruptMembersFileIsAClearError: a damaged members file stops the
// start with an error naming the file, and the file is left as it was.
func TestCorruptMembersFileIsAClearError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, MembersFileName)
	if err := os.WriteFile(path, []byte(`{"version":1,"members":[{"id":"x","gossip_addr":"nope"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Meta: Meta{Role: RoleNode, IDC: "i", Name: "n"}, BindPort: 0, MembersFile: path, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	err = m.Start(context.Background())
	if err == nil {
		m.Kill()
		t.Fatal("start with a corrupt members file succeeded")
	}
	t.Logf("error: %v", err)
	if b, _ := os.ReadFile(path); len(b) == 0 {
		t.Fatal("members file was lost")
	}
}

func FuzzDecodeKnown(f *testing.F) {
	f.Add([]byte(`{"version":1,"self":"node:a:a1","members":[{"id":"node:a:a2","gossip_addr":"127.0.0.1:7946","state":"alive"}]}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"members":[{"id":"","gossip_addr":"1.2.3.4:1"}]}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := decodeKnown(b)
		if err != nil {
			return
		}
		for _, m := range k.Members {
			if m.ID == "" {
				t.Fatal("accepted an empty id")
			}
			if _, _, err := net.SplitHostPort(m.Addr); err != nil {
				t.Fatalf("accepted a bad address %q", m.Addr)
			}
		}
	})
}
