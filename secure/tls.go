package secure

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"time"
)

// Organizational units that certs init writes into certificates. A node
// certificate is what makes a caller a node: the cluster's CA signed it
// with NodeUnit.
const (
	NodeUnit  = "tally-node"
	ProxyUnit = "tally-proxy"
)

// TLS is one party's TLS material: its own certificate (none for a client
// that only checks servers) and the cluster's CA. It is read-only once
// loaded and safe to share.
type TLS struct {
	cert atomic.Pointer[tls.Certificate] // nil: no certificate of its own
	pool *x509.CertPool
	// certFile and keyFile are reread by Watch.
	certFile, keyFile string
}

// LoadTLS reads a certificate and key (both or neither) and the CA that
// signs the cluster's certificates. Every problem is one error naming the
// file.
func LoadTLS(certFile, keyFile, caFile string) (*TLS, error) {
	if caFile == "" {
		return nil, errors.New("--tls-ca is required with TLS: it is the CA that signs the cluster's certificates")
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", caFile)
	}
	t := &TLS{pool: pool, certFile: certFile, keyFile: keyFile}
	if certFile != "" {
		c, err := t.readPair()
		if err != nil {
			return nil, err
		}
		t.cert.Store(c)
	}
	return t, nil
}

// readPair reads the certificate and key and checks them against the CA.
func (t *TLS) readPair() (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(t.certFile, t.keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", t.certFile, t.keyFile, err)
	}
	if c.Leaf == nil {
		return nil, fmt.Errorf("--tls-cert %s: no certificate", t.certFile)
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: t.pool,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("--tls-cert %s is not signed by --tls-ca: %w", t.certFile, err)
	}
	return &c, nil
}

// Watch rereads the certificate and key when either file changes, until
// ctx ends, so that a renewed certificate (certs add) is served without a
// restart. A new pair must be signed by the same CA and name the same
// subject; otherwise, or when it does not read, the old one stays and the
// reason is logged.
func (t *TLS) Watch(ctx context.Context, every time.Duration, log *slog.Logger) {
	if t.cert.Load() == nil {
		return
	}
	onChange(ctx, every, func() {
		c, err := t.readPair()
		if err == nil && c.Leaf.Subject.String() != t.cert.Load().Leaf.Subject.String() {
			err = fmt.Errorf("--tls-cert %s now names %q, not %q", t.certFile, c.Leaf.Subject, t.cert.Load().Leaf.Subject)
		}
		if err != nil {
			log.Error("certificate changed but is not taken; keeping the one loaded before", "err", err)
			return
		}
		t.cert.Store(c)
		log.Info("certificate reloaded", "file", t.certFile, "expires", c.Leaf.NotAfter)
	}, t.certFile, t.keyFile)
}

// IsNode reports whether this party's own certificate is a node's.
func (t *TLS) IsNode() bool { c := t.cert.Load(); return c != nil && isNodeCert(c.Leaf) }

// Name is the common name of this party's certificate.
func (t *TLS) Name() string {
	if c := t.cert.Load(); c != nil {
		return c.Leaf.Subject.CommonName
	}
	return ""
}

// base is the configuration every use starts from. The certificate is
// looked up per handshake, so that Watch can replace it.
func (t *TLS) base() *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: t.pool, ClientCAs: t.pool}
	if t.cert.Load() != nil {
		c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return t.cert.Load(), nil }
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return t.cert.Load(), nil }
	}
	return c
}

// HTTPServer is the configuration of an HTTP port (a node's API, the
// proxy): clients need no certificate, and a certificate that is given
// must be signed by the CA, so that NodeOf can trust it.
func (t *TLS) HTTPServer() *tls.Config {
	c := t.base()
	c.ClientAuth = tls.VerifyClientCertIfGiven
	return c
}

// Client is the configuration of a client of the cluster: it checks the
// server against the CA and presents its own certificate, if any.
func (t *TLS) Client() *tls.Config { return t.base() }

// RaftServer is the configuration of the Raft port: only nodes connect.
func (t *TLS) RaftServer() *tls.Config {
	c := t.base()
	c.ClientAuth = tls.RequireAndVerifyClientCert
	c.VerifyConnection = requireNode("Raft peer")
	return c
}

// RaftClient is the configuration for dialing another node's Raft port
// at addr: the server must be a node too.
func (t *TLS) RaftClient(addr string) *tls.Config {
	c := t.base()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		c.ServerName = host
	}
	c.VerifyConnection = requireNode("Raft server")
	return c
}

func requireNode(who string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if _, ok := NodeOf(&cs); !ok {
			return fmt.Errorf("%s has no node certificate of this cluster", who)
		}
		return nil
	}
}

// NodeOf returns the node named by a connection's verified peer
// certificate. A certificate that did not chain to the CA is never in
// VerifiedChains, so a forged one names no node.
func NodeOf(cs *tls.ConnectionState) (string, bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", false
	}
	leaf := cs.VerifiedChains[0][0]
	if !isNodeCert(leaf) {
		return "", false
	}
	return leaf.Subject.CommonName, true
}

func isNodeCert(c *x509.Certificate) bool {
	return c != nil && slices.Contains(c.Subject.OrganizationalUnit, NodeUnit) && c.Subject.CommonName != ""
}

// Loopback reports whether a listen address (host:port) binds only the
// loopback interface. An empty host, 0.0.0.0 or :: bind every interface.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
