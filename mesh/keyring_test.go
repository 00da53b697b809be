package mesh

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/internal/secrets"
)

// TestGossipKeyRotation: two members, each with its own copy of
// gossip.key, rotate the key (add, use, remove; the file copied to both
// after each step) while they run: they never lose each other, a member
// with only the new key joins afterwards, one with only the old key no
// longer can.
func TestGossipKeyRotation(t *testing.T) {
	master := t.TempDir()
	if err := secrets.Init(master, false); err != nil {
		t.Fatal(err)
	}
	hosts := []string{t.TempDir(), t.TempDir()}
	distribute := func() {
		b, err := os.ReadFile(filepath.Join(master, secrets.FileGossipKey))
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hosts {
			tmp := filepath.Join(h, ".gk")
			if err := os.WriteFile(tmp, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(h, secrets.FileGossipKey)); err != nil {
				t.Fatal(err)
			}
		}
	}
	keysOf := func(dir string) [][]byte {
		s, err := secrets.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		k, _ := s.GossipKeys()
		return k
	}
	distribute()
	oldKeys := keysOf(master)
	start := func(name string, keys [][]byte, file string, seeds ...string) (*Mesh, error) {
		m, err := New(Config{BindAddr: "127.0.0.1", BindPort: RandomPort, Seeds: seeds, Profile: ProfileLocal, Keyring: keys, KeyringFile: file,
			JoinWait: 2 * time.Second, Logger: testLogger(t), Meta: Meta{Role: RoleWorker, IDC: "a", Name: name}})
		if err != nil {
			return nil, err
		}
		if err := m.Start(context.Background()); err != nil {
			return nil, err
		}
		t.Cleanup(func() { m.Kill() })
		return m, nil
	}
	m1, err := start("w1", oldKeys, filepath.Join(hosts[0], secrets.FileGossipKey))
	if err != nil {
		t.Fatal(err)
	}
	m2, err := start("w2", oldKeys, filepath.Join(hosts[1], secrets.FileGossipKey), m1.GossipAddr())
	if err != nil {
		t.Fatal(err)
	}
	both := func() bool { return len(m1.Alive(nil)) == 2 && len(m2.Alive(nil)) == 2 }
	eventually(t, 10*time.Second, "mesh of 2", both)
	keyring := func(m *Mesh) [][]byte {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.keyring.GetKeys()
	}
	step := func(name string, edit func(string) ([]string, error), want int) {
		fps, err := edit(master)
		if err != nil {
			t.Fatal(err)
		}
		distribute()
		primary := keysOf(master)[0]
		eventually(t, 10*time.Second, name+": both members reloaded", func() bool {
			for _, m := range []*Mesh{m1, m2} {
				ks := keyring(m)
				if len(ks) != want || string(m.keyring.GetPrimaryKey()) != string(primary) {
					return false
				}
			}
			return true
		})
		t.Logf("%s: keyring %v", name, fps)
		// A few gossip rounds later both still see each other alive.
		time.Sleep(1500 * time.Millisecond)
		if !both() {
			t.Fatalf("%s: the members lost each other", name)
		}
	}
	step("add", secrets.AddGossipKey, 2)
	step("use", secrets.UseGossipKey, 2)
	step("remove", secrets.RemoveGossipKeys, 1)

	if _, err := start("w3", keysOf(master), "", m1.GossipAddr()); err != nil {
		t.Fatalf("a member with the new key: %v", err)
	}
	if _, err := start("w4", oldKeys, "", m1.GossipAddr()); err == nil {
		t.Fatal("a member with only the retired key joined")
	}
}
