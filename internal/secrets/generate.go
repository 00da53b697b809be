package secrets

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nkeys"
)

// Validity of generated certificates.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	NodeValidity = 5 * 365 * 24 * time.Hour
)

// ErrExists is returned by Init when the directory already holds secrets
// and force is false.
var ErrExists = errors.New("secrets already exist")

// Init writes a complete, fresh secrets directory (see the package doc).
// It never overwrites: when any file of the set exists it returns an error
// wrapping ErrExists naming it, unless force, which replaces every file
// (a rotation of everything at once: see the README for rotating one kind
// at a time without downtime).
func Init(dir string, force bool) error {
	if !force {
		for _, f := range allFiles() {
			if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
				return fmt.Errorf("secrets %s: %w (%s); --force replaces them", dir, ErrExists, f)
			}
		}
	}
	files, err := generate()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	for _, f := range allFiles() {
		if err := writeFile(filepath.Join(dir, f), files[f]); err != nil {
			return err
		}
	}
	return nil
}

func allFiles() []string {
	fs := []string{FileCACert, FileCAKey, FileNodeCert, FileNodeKey, FileRoles, FileClusterSecret, FileGossipKey, FileAdminToken}
	for _, r := range Roles {
		fs = append(fs, SeedFile(r))
	}
	return fs
}

// writeFile replaces path atomically (temp file + rename), mode 0600.
func writeFile(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err == nil {
		_, err = tmp.Write(b)
		if err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), path)
		}
	}
	if err != nil {
		_ = tmp.Close()
		return fmt.Errorf("secrets: write %s: %w", path, err)
	}
	return nil
}

// generate creates every file's content.
func generate() (map[string][]byte, error) {
	out := map[string][]byte{}
	caKey, caCert, caDER, err := newCA()
	if err != nil {
		return nil, err
	}
	out[FileCACert] = pemBlock("CERTIFICATE", caDER)
	if out[FileCAKey], err = keyPEM(caKey); err != nil {
		return nil, err
	}
	nodeKey, nodeDER, err := newNodeCert(caKey, caCert)
	if err != nil {
		return nil, err
	}
	out[FileNodeCert] = pemBlock("CERTIFICATE", nodeDER)
	if out[FileNodeKey], err = keyPEM(nodeKey); err != nil {
		return nil, err
	}
	roles := map[Role][]string{}
	for _, r := range Roles {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return nil, fmt.Errorf("secrets: nkey: %w", err)
		}
		seed, _ := kp.Seed()
		pub, _ := kp.PublicKey()
		out[SeedFile(r)] = append(seed, '\n')
		roles[r] = []string{pub}
	}
	if out[FileRoles], err = json.MarshalIndent(roles, "", "  "); err != nil {
		return nil, err
	}
	out[FileRoles] = append(out[FileRoles], '\n')
	out[FileClusterSecret] = []byte(randomHex(32) + "\n")
	out[FileAdminToken] = []byte(randomHex(32) + "\n")
	out[FileGossipKey] = []byte(NewGossipKey() + "\n")
	return out, nil
}

// NewGossipKey returns a fresh base64 AES-256 gossip key.
func NewGossipKey() string {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // crypto/rand.Read never fails (Go 1.24+)
	return base64.StdEncoding.EncodeToString(k)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func serial() *big.Int {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return new(big.Int).SetBytes(b)
}

func newCA() (*ecdsa.PrivateKey, *x509.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("secrets: CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "mqmesh CA " + now.UTC().Format("2006-01-02")},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("secrets: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	return key, cert, der, nil
}

func newNodeCert(caKey *ecdsa.PrivateKey, ca *x509.Certificate) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("secrets: node key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: ServerName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(NodeValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{ServerName, "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("secrets: node certificate: %w", err)
	}
	return key, der, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("secrets: encode key: %w", err)
	}
	return pemBlock("PRIVATE KEY", der), nil
}
