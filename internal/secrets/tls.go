package secrets

import (
	"crypto/tls"
	"crypto/x509"
)

// ClientTLS is the TLS config of a client of a node: it verifies the
// node's certificate against the CA under ServerName, whatever address it
// dialled.
func (s *Set) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: s.caPool, ServerName: ServerName, MinVersion: tls.VersionTLS12}
}

// CAPool is the pool of the CA certificates in ca.crt (several during a
// CA rotation).
func (s *Set) CAPool() *x509.CertPool { return s.caPool }

// NodeCertificate is the node certificate and key, for a node's listeners.
func (s *Set) NodeCertificate() (*tls.Certificate, error) {
	if s.nodeCert == nil {
		return nil, s.missing(FileNodeCert+" and "+FileNodeKey, "by a node")
	}
	return s.nodeCert, nil
}

// ServerTLS is the TLS config of a node's client port: the node
// certificate; clients authenticate with nkeys, not certificates.
func (s *Set) ServerTLS() (*tls.Config, error) {
	c, err := s.NodeCertificate()
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{*c}, MinVersion: tls.VersionTLS12}, nil
}

// PeerTLS is the mutual-TLS config of routes and gateways, used both to
// accept (a peer must present a certificate of the CA) and to dial (the
// peer must present one for ServerName).
func (s *Set) PeerTLS() (*tls.Config, error) {
	c, err := s.NodeCertificate()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{*c},
		RootCAs:      s.caPool,
		ClientCAs:    s.caPool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ServerName:   ServerName,
		MinVersion:   tls.VersionTLS12,
	}, nil
}
