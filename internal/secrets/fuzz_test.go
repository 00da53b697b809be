package secrets_test

import (
	"testing"

	"github.com/mqmesh/mqmesh/internal/secrets"
)

// FuzzParseGossipKeys: a keyring file is outside input (an operator edits
// it, a node reloads it while running): never a panic, and every accepted
// key has a length AES accepts.
func FuzzParseGossipKeys(f *testing.F) {
	f.Add(secrets.NewGossipKey() + "\n")
	f.Add("# comment\n\n" + secrets.NewGossipKey() + "\n" + secrets.NewGossipKey())
	f.Add("c2hvcnQ=\n")
	f.Add("not base64 !!\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, text string) {
		keys, err := secrets.ParseGossipKeys(text)
		if err != nil {
			return
		}
		if len(keys) == 0 {
			t.Fatal("no error and no key")
		}
		for _, k := range keys {
			if n := len(k); n != 16 && n != 24 && n != 32 {
				t.Fatalf("accepted a %d-byte key", n)
			}
		}
	})
}
