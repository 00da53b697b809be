package secrets

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nkeys"
)

// Load reads a secrets directory. ca.crt is required (every role verifies
// TLS peers with it); every other file is optional, so a host can be given
// only the files of its roles, but a file that is present must be valid and,
// when it holds a secret, readable by its owner only (mode 0600). Errors name
// the directory, the file and what is wrong with it.
func Load(dir string) (*Set, error) {
	if dir == "" {
		return nil, errors.New("secrets: no directory given")
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("secrets %s: not a directory", dir)
	}
	l := loader{dir: dir}
	s := &Set{Dir: dir, seeds: map[Role][]byte{}}
	ca, err := l.read(FileCACert, false)
	if err != nil {
		return nil, err
	}
	if ca == nil {
		return nil, fmt.Errorf("secrets %s: %s is missing (every host needs it; `mqmesh secrets init %s` creates a set)", dir, FileCACert, dir)
	}
	s.caPool = x509.NewCertPool()
	if !s.caPool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("secrets %s: %s holds no PEM certificate", dir, FileCACert)
	}
	if s.nodeCert, err = l.nodeCert(s.caPool); err != nil {
		return nil, err
	}
	for _, r := range Roles {
		seed, err := l.read(SeedFile(r), true)
		if err != nil {
			return nil, err
		}
		if seed == nil {
			continue
		}
		seed = bytes.TrimSpace(seed)
		kp, err := nkeys.FromSeed(seed)
		if err != nil {
			return nil, fmt.Errorf("secrets %s: %s is not an nkey seed: %w", dir, SeedFile(r), err)
		}
		if pub, _ := kp.PublicKey(); !nkeys.IsValidPublicUserKey(pub) {
			return nil, fmt.Errorf("secrets %s: %s is not a user nkey seed", dir, SeedFile(r))
		}
		s.seeds[r] = seed
	}
	if s.roles, err = l.roles(); err != nil {
		return nil, err
	}
	if s.cluster, err = l.text(FileClusterSecret, 16); err != nil {
		return nil, err
	}
	if s.adminTok, err = l.text(FileAdminToken, 16); err != nil {
		return nil, err
	}
	if s.gossip, err = l.gossipKeys(); err != nil {
		return nil, err
	}
	return s, nil
}

type loader struct{ dir string }

// read returns the file's content, nil when it does not exist. A secret
// file must not be readable by group or others.
func (l loader) read(name string, secret bool) ([]byte, error) {
	path := filepath.Join(l.dir, name)
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("secrets %s: %s: %w", l.dir, name, err)
	}
	if secret && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secrets %s: %s has mode %04o, want 0600 (it holds a secret: chmod 600 %s)", l.dir, name, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets %s: %s: %w", l.dir, name, err)
	}
	return b, nil
}

func (l loader) nodeCert(ca *x509.CertPool) (*tls.Certificate, error) {
	crt, err := l.read(FileNodeCert, false)
	if err != nil {
		return nil, err
	}
	key, err := l.read(FileNodeKey, true)
	if err != nil {
		return nil, err
	}
	switch {
	case crt == nil && key == nil:
		return nil, nil
	case crt == nil:
		return nil, fmt.Errorf("secrets %s: %s is missing (%s is there: a node needs both)", l.dir, FileNodeCert, FileNodeKey)
	case key == nil:
		return nil, fmt.Errorf("secrets %s: %s is missing (%s is there: a node needs both)", l.dir, FileNodeKey, FileNodeCert)
	}
	c, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return nil, fmt.Errorf("secrets %s: %s / %s: %w", l.dir, FileNodeCert, FileNodeKey, err)
	}
	leaf := c.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("secrets %s: %s: %w", l.dir, FileNodeCert, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca, DNSName: ServerName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("secrets %s: %s does not verify against %s for %q: %w", l.dir, FileNodeCert, FileCACert, ServerName, err)
	}
	return &c, nil
}

func (l loader) roles() (map[Role][]string, error) {
	b, err := l.read(FileRoles, false)
	if b == nil || err != nil {
		return nil, err
	}
	var raw map[string][]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("secrets %s: %s: %w", l.dir, FileRoles, err)
	}
	out := map[Role][]string{}
	for name, keys := range raw {
		r, err := ParseRole(name)
		if err != nil {
			return nil, fmt.Errorf("secrets %s: %s: %w", l.dir, FileRoles, err)
		}
		for _, k := range keys {
			if !nkeys.IsValidPublicUserKey(k) {
				return nil, fmt.Errorf("secrets %s: %s: role %s: %q is not a public user nkey", l.dir, FileRoles, r, k)
			}
		}
		out[r] = keys
	}
	return out, nil
}

func (l loader) text(name string, minLen int) (string, error) {
	b, err := l.read(name, true)
	if b == nil || err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if len(s) < minLen {
		return "", fmt.Errorf("secrets %s: %s is %d characters, want at least %d", l.dir, name, len(s), minLen)
	}
	return s, nil
}

func (l loader) gossipKeys() ([][]byte, error) {
	b, err := l.read(FileGossipKey, true)
	if b == nil || err != nil {
		return nil, err
	}
	keys, err := ParseGossipKeys(string(b))
	if err != nil {
		return nil, fmt.Errorf("secrets %s: %s: %w", l.dir, FileGossipKey, err)
	}
	return keys, nil
}

// ParseGossipKeys reads a keyring file: one base64 key (16, 24 or 32
// bytes) a line, the first the primary; blank lines and '#' comments are
// skipped.
func ParseGossipKeys(text string) ([][]byte, error) {
	var keys [][]byte
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: not base64: %w", i+1, err)
		}
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("line %d: key of %d bytes, want 16, 24 or 32", i+1, n)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no key")
	}
	return keys, nil
}
