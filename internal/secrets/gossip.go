package secrets

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Gossip key rotation edits gossip.key in three steps; after each, copy the
// file to every host (members reload it while they run) before the next:
//
//	AddGossipKey     install a new key, last (members still send with the primary)
//	UseGossipKey     make the newest key the primary (members send with it)
//	RemoveGossipKeys drop every key but the primary
//
// Each returns the keyring's key fingerprints after the change, primary
// first.

// KeyFingerprint names a key without revealing it: the first 8 bytes of its
// SHA-256, in hex.
func KeyFingerprint(k []byte) string {
	h := sha256.Sum256(k)
	return hex.EncodeToString(h[:8])
}

func editGossipKeys(dir string, edit func([][]byte) ([][]byte, error)) ([]string, error) {
	path := filepath.Join(dir, FileGossipKey)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets %s: %w", dir, err)
	}
	keys, err := ParseGossipKeys(string(b))
	if err != nil {
		return nil, fmt.Errorf("secrets %s: %s: %w", dir, FileGossipKey, err)
	}
	if keys, err = edit(keys); err != nil {
		return nil, fmt.Errorf("secrets %s: %s: %w", dir, FileGossipKey, err)
	}
	var text strings.Builder
	fps := make([]string, len(keys))
	for i, k := range keys {
		text.WriteString(base64.StdEncoding.EncodeToString(k) + "\n")
		fps[i] = KeyFingerprint(k)
	}
	return fps, writeFile(path, []byte(text.String()))
}

// AddGossipKey appends a fresh key to the keyring (step 1).
func AddGossipKey(dir string) ([]string, error) {
	return editGossipKeys(dir, func(keys [][]byte) ([][]byte, error) {
		k, _ := base64.StdEncoding.DecodeString(NewGossipKey())
		return append(keys, k), nil
	})
}

// UseGossipKey makes the last key (the newest) the primary (step 2).
func UseGossipKey(dir string) ([]string, error) {
	return editGossipKeys(dir, func(keys [][]byte) ([][]byte, error) {
		if len(keys) < 2 {
			return nil, errors.New("one key only: add a new one first (gossip-key add)")
		}
		last := keys[len(keys)-1]
		return append([][]byte{last}, keys[:len(keys)-1]...), nil
	})
}

// RemoveGossipKeys keeps only the primary (step 3).
func RemoveGossipKeys(dir string) ([]string, error) {
	return editGossipKeys(dir, func(keys [][]byte) ([][]byte, error) { return keys[:1], nil })
}
