package secure

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
	if len(nodes) == 0 {
		return nil, errors.New("--nodes: name at least one node")
	}
	if len(hosts) == 0 {
		return nil, errors.New("--hosts: name at least one host")
	}
	for _, n := range nodes {
		if !validName.MatchString(n) {
			return nil, fmt.Errorf("--nodes: node id %q: use letters, digits, '.', '_', '@' or '-'", n)
		}
		if n == "ca" || n == "proxy" {
			return nil, fmt.Errorf("--nodes: %q names another file of the directory; choose another node id", n)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	out := &CertFiles{CA: filepath.Join(dir, "ca.crt"), CAKey: filepath.Join(dir, "ca.key"), Nodes: map[string][2]string{}}
	if _, err := os.Stat(out.CA); err == nil {
		return nil, fmt.Errorf("%s exists: this directory already has a CA (remove it to start over)", out.CA)
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
	leaf := func(name, unit string, usage []x509.ExtKeyUsage) ([2]string, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return [2]string{}, err
		}
		t := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: name, OrganizationalUnit: []string{unit}, Organization: []string{"Tally"}},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(leafLifetime),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  usage,
		}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				t.IPAddresses = append(t.IPAddresses, ip)
			} else {
				t.DNSNames = append(t.DNSNames, h)
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, t, ca, &key.PublicKey, caKey)
		if err != nil {
			return [2]string{}, err
		}
		files := [2]string{filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")}
		return files, writePair(files[0], files[1], der, key)
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	for _, n := range nodes {
		if out.Nodes[n], err = leaf(n, NodeUnit, both); err != nil {
			return nil, err
		}
	}
	if out.Proxy, err = leaf("proxy", ProxyUnit, both); err != nil {
		return nil, err
	}
	return out, nil
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
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
}
