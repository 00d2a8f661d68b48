package secure

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Lifetimes of development certificates.
const (
	caLifetime   = 10 * 365 * 24 * time.Hour
	leafLifetime = 825 * 24 * time.Hour
)

// CertFiles names what InitCerts wrote.
type CertFiles struct {
	CA    string               `json:"ca"`     // ca.crt
	CAKey string               `json:"ca_key"` // ca.key
	Nodes map[string][2]string `json:"nodes"`  // node id -> cert, key
	Proxy [2]string            `json:"proxy"`  // proxy.crt, proxy.key
}

// InitCerts writes a development CA into dir, and a certificate for each
// node (valid for hosts, as a server and as a client of other nodes) and
// one for the proxy. It refuses a directory that already has a CA: a new
// CA would silently split an existing cluster in two.
func InitCerts(dir string, nodes, hosts []string, now time.Time) (*CertFiles, error) {
	if err := checkCertArgs(nodes, hosts); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	out := &CertFiles{CA: filepath.Join(dir, "ca.crt"), CAKey: filepath.Join(dir, "ca.key"), Nodes: map[string][2]string{}}
	if _, err := os.Stat(out.CA); err == nil {
		return nil, fmt.Errorf("%s exists: this directory already has a CA (remove it to start over, or add nodes with certs add)", out.CA)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Tally development CA", Organization: []string{"Tally"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	if err := writePair(out.CA, out.CAKey, caDER, caKey); err != nil {
		return nil, err
	}
	iss := &issuer{dir: dir, ca: ca, key: caKey, hosts: hosts, now: now}
	for _, n := range nodes {
		if out.Nodes[n], err = iss.leaf(n, NodeUnit); err != nil {
			return nil, err
		}
	}
	if out.Proxy, err = iss.leaf("proxy", ProxyUnit); err != nil {
		return nil, err
	}
	return out, nil
}

// AddNodeCerts writes a certificate for each node, signed by the CA that
// InitCerts wrote into dir: for a node that joins a running cluster, or
// to renew a node's certificate (the node reloads it without a restart).
// An existing certificate of that name is replaced.
func AddNodeCerts(dir string, nodes, hosts []string, now time.Time) (map[string][2]string, error) {
	if err := checkCertArgs(nodes, hosts); err != nil {
		return nil, err
	}
	caPair, err := tls.LoadX509KeyPair(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, fmt.Errorf("the CA of %s: %w (certs init writes one)", dir, err)
	}
	key, ok := caPair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || caPair.Leaf == nil || !caPair.Leaf.IsCA {
		return nil, fmt.Errorf("%s: not a CA that certs init wrote", filepath.Join(dir, "ca.crt"))
	}
	iss := &issuer{dir: dir, ca: caPair.Leaf, key: key, hosts: hosts, now: now}
	out := map[string][2]string{}
	for _, n := range nodes {
		if out[n], err = iss.leaf(n, NodeUnit); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func checkCertArgs(nodes, hosts []string) error {
	if len(nodes) == 0 {
		return errors.New("--nodes: name at least one node")
	}
	if len(hosts) == 0 {
		return errors.New("--hosts: name at least one host")
	}
	for _, n := range nodes {
		if !validName.MatchString(n) {
			return fmt.Errorf("--nodes: node id %q: use letters, digits, '.', '_', '@' or '-'", n)
		}
		if n == "ca" || n == "proxy" {
			return fmt.Errorf("--nodes: %q names another file of the directory; choose another node id", n)
		}
	}
	return nil
}

// issuer signs leaf certificates with a CA.
type issuer struct {
	dir   string
	ca    *x509.Certificate
	key   *ecdsa.PrivateKey
	hosts []string
	now   time.Time
}

// leaf writes name.crt and name.key: a certificate for unit, valid for
// the issuer's hosts, as a server and as a client.
func (iss *issuer) leaf(name, unit string) ([2]string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return [2]string{}, err
	}
	t := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, OrganizationalUnit: []string{unit}, Organization: []string{"Tally"}},
		NotBefore:    iss.now.Add(-time.Hour),
		NotAfter:     iss.now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range iss.hosts {
		if ip := net.ParseIP(h); ip != nil {
			t.IPAddresses = append(t.IPAddresses, ip)
		} else {
			t.DNSNames = append(t.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, t, iss.ca, &key.PublicKey, iss.key)
	if err != nil {
		return [2]string{}, err
	}
	files := [2]string{filepath.Join(iss.dir, name+".crt"), filepath.Join(iss.dir, name+".key")}
	return files, writePair(files[0], files[1], der, key)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func writePair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	// The key first: a process that reloads the pair between the two
	// renames sees a key that does not match the old certificate, refuses
	// the pair and keeps the one it has until both are new.
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeFile replaces path whole (write, sync, rename), so that a process
// rereading it (Watch) sees the old file or the new one, never half.
func writeFile(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tally-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
