package mesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"
)

// MembersFileName is the name of the known-members file a node keeps in its
// data dir (NodeAgentConfig sets Config.MembersFile to it).
const MembersFileName = "mesh-members.json"

// knownVersion is the format version of the known-members file.
const knownVersion = 1

// knownFile is what a member remembers of the mesh between runs: every
// other member it knew (alive, failed or left, within Config.Retain), so
// that a restart without a seed rejoins through them instead of starting a
// mesh of its own.
type knownFile struct {
	Version int           `json:"version"`
	Self    string        `json:"self"`
	Saved   time.Time     `json:"saved"`
	Members []knownMember `json:"members"`
}

// knownMember is one remembered member.
type knownMember struct {
	ID    string    `json:"id"`
	Addr  string    `json:"gossip_addr"`
	Meta  Meta      `json:"meta"`
	State State     `json:"state"`
	Since time.Time `json:"since"`
}

// decodeKnown parses a known-members file. It is outside input (a file on
// disk that may be truncated or edited by hand): every field is checked.
func decodeKnown(b []byte) (knownFile, error) {
	var f knownFile
	if err := json.Unmarshal(b, &f); err != nil {
		return knownFile{}, fmt.Errorf("mesh: members file: %w", err)
	}
	if f.Version != knownVersion {
		return knownFile{}, fmt.Errorf("mesh: members file: version %d, want %d", f.Version, knownVersion)
	}
	for i, m := range f.Members {
		if m.ID == "" {
			return knownFile{}, fmt.Errorf("mesh: members file: member %d: empty id", i)
		}
		if _, _, err := net.SplitHostPort(m.Addr); err != nil {
			return knownFile{}, fmt.Errorf("mesh: members file: member %q: gossip_addr %q: %w", m.ID, m.Addr, err)
		}
	}
	return f, nil
}

// loadKnown reads the known-members file at path. A missing file is no
// error (a member that never was in a mesh).
func loadKnown(path string) (knownFile, error) {
	if path == "" {
		return knownFile{}, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return knownFile{}, nil
	}
	if err != nil {
		return knownFile{}, fmt.Errorf("mesh: members file: %w", err)
	}
	return decodeKnown(b)
}

// saveKnown writes f to path atomically (a temp file renamed over it), so a
// crash mid-write leaves the previous file.
func saveKnown(path string, f knownFile) error {
	f.Version = knownVersion
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("mesh: members file: %w", err)
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("mesh: members file: %w", err)
	}
	_, werr := tmp.Write(append(b, '\n'))
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("mesh: members file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("mesh: members file: %w", err)
	}
	return nil
}
