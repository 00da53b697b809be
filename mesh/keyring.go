package mesh

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/fsnotify/fsnotify"

	"github.com/mqmesh/mqmesh/internal/secrets"
)

// Gossip key rotation without downtime. Every member must be able to read
// what any other sends, so a new key goes in three steps, each rolled out to
// every member before the next (mqmesh secrets gossip-key add|use|remove):
//
//  1. install: the key is added to every keyring (still sending with the old);
//  2. use: the new key becomes the primary (members send with it; the old
//     one still decrypts the stragglers);
//  3. remove: the old key is dropped.
//
// A member whose Config.KeyringFile names the keyring file (the secrets
// directory's gossip.key) applies each change as soon as the file changes.

// SetKeyring makes keys (primary first) this member's gossip keyring:
// missing keys are installed, the first becomes the primary, the others are
// removed. The mesh must have been started with a keyring.
func (m *Mesh) SetKeyring(keys [][]byte) error {
	if len(keys) == 0 {
		return errors.New("mesh: empty keyring")
	}
	m.mu.Lock()
	kr := m.keyring
	m.mu.Unlock()
	if kr == nil {
		return errors.New("mesh: gossip has no keyring (started without keys): restart the member with its secrets")
	}
	for _, k := range keys {
		if err := kr.AddKey(k); err != nil {
			return fmt.Errorf("mesh: install gossip key: %w", err)
		}
	}
	if err := kr.UseKey(keys[0]); err != nil {
		return fmt.Errorf("mesh: use gossip key: %w", err)
	}
	for _, old := range kr.GetKeys() {
		if !slices.ContainsFunc(keys, func(k []byte) bool { return string(k) == string(old) }) {
			if err := kr.RemoveKey(old); err != nil {
				return fmt.Errorf("mesh: remove gossip key: %w", err)
			}
		}
	}
	return nil
}

// watchKeyring applies the keyring file's changes until stop closes.
func (m *Mesh) watchKeyring(path string, stop <-chan struct{}, done chan<- struct{}) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		close(done)
		return fmt.Errorf("mesh: watch %s: %w", path, err)
	}
	// Watch the directory: the file is replaced by a rename.
	if err := w.Add(filepath.Dir(path)); err != nil {
		w.Close()
		close(done)
		return fmt.Errorf("mesh: watch %s: %w", path, err)
	}
	go func() {
		defer close(done)
		defer w.Close()
		for {
			select {
			case <-stop:
				return
			case ev := <-w.Events:
				if filepath.Clean(ev.Name) != filepath.Clean(path) || ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) == 0 {
					continue
				}
				m.reloadKeyring(path)
			case err := <-w.Errors:
				m.log.Warn("keyring file watch", "err", err)
			}
		}
	}()
	return nil
}

func (m *Mesh) reloadKeyring(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return // mid-replace: the create event follows
	}
	keys, err := secrets.ParseGossipKeys(string(b))
	if err == nil {
		err = m.SetKeyring(keys)
	}
	if err != nil {
		m.log.Error("gossip keyring not reloaded: the old one stays", "file", path, "err", err)
		return
	}
	m.log.Info("gossip keyring reloaded", "file", path, "keys", len(keys))
}
