package cluster

import (
	"crypto/tls"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"tally/secure"
)

// Only a node certificate of the cluster's CA opens the Raft port: a
// forged node certificate (another CA) and the proxy's certificate (the
// right CA, not a node) are dropped before a byte reaches a group.
func TestMuxTLS(t *testing.T) {
	dir := t.TempDir()
	files, err := secure.InitCerts(dir, []string{"n1", "n2"}, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	forged, err := secure.InitCerts(filepath.Join(dir, "forged"), []string{"n2"}, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	load := func(cert, key, ca string) *secure.TLS {
		m, err := secure.LoadTLS(cert, key, ca)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	n1 := load(files.Nodes["n1"][0], files.Nodes["n1"][1], files.CA)
	sec := func(m *secure.TLS) *TLS { return &TLS{Server: m.RaftServer(), Client: m.RaftClient} }
	m, err := Listen("127.0.0.1:0", sec(n1), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	addr := raft.ServerAddress(m.Addr().String())
	l := m.Layer(1)

	// A genuine node gets through, both ways verified.
	n2 := load(files.Nodes["n2"][0], files.Nodes["n2"][1], files.CA)
	other, err := Listen("127.0.0.1:0", sec(n2), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	c, err := other.Layer(1).Dial(addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	in, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("x"))
	var b [1]byte
	in.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := in.Read(b[:]); err != nil || b[0] != 'x' {
		t.Fatalf("a node's bytes did not arrive: %v", err)
	}
	c.Close()
	in.Close()

	// Others are dropped: a plain TCP client, a forged node, the proxy.
	bad := map[string]*tls.Config{
		"forged node": forgedClient(t, forged, files.CA),
		"proxy":       load(files.Proxy[0], files.Proxy[1], files.CA).Client(),
		"no cert":     load("", "", files.CA).Client(),
	}
	for name, cfg := range bad {
		cfg.ServerName = "127.0.0.1"
		conn, err := tls.Dial("tcp", string(addr), cfg)
		if err == nil {
			conn.Write([]byte{1})
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, err = conn.Read(b[:])
			conn.Close()
		}
		if err == nil {
			t.Errorf("%s: the Raft port answered", name)
		}
	}
	select {
	case c := <-l.conns:
		c.Close()
		t.Fatal("a connection without a node certificate reached the group")
	case <-time.After(200 * time.Millisecond):
	}
}

// forgedClient shows a node certificate of another CA while trusting the
// cluster's, as an attacker who can reach the port would.
func forgedClient(t *testing.T, forged *secure.CertFiles, realCA string) *tls.Config {
	cert, err := tls.LoadX509KeyPair(forged.Nodes["n2"][0], forged.Nodes["n2"][1])
	if err != nil {
		t.Fatal(err)
	}
	ca, err := secure.LoadTLS("", "", realCA)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ca.Client()
	cfg.Certificates = []tls.Certificate{cert}
	return cfg
}
