package secure

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.json")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	w, err := CreateToken(path, "app", RoleWrite, now)
	if err != nil {
		t.Fatal(err)
	}
	r, err := CreateToken(path, "ro", RoleRead, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CreateToken(path, "app", RoleRead, now); err == nil {
		t.Fatal("a second token named app was added")
	}
	if _, err := CreateToken(path, "bad name", RoleRead, now); err == nil {
		t.Fatal("a name with a space was taken")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("auth file mode %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), w) || strings.Contains(string(b), r) {
		t.Fatal("the auth file holds a secret")
	}
	tok, err := LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := tok.Lookup(w); !ok || p != (Principal{"app", RoleWrite}) {
		t.Errorf("write token is %v %v", p, ok)
	}
	if p, ok := tok.Lookup(r); !ok || p.Role != RoleRead {
		t.Errorf("read token is %v %v", p, ok)
	}
	for _, s := range []string{"", "tly_", w + "x", strings.TrimPrefix(w, tokenPrefix)} {
		if _, ok := tok.Lookup(s); ok {
			t.Errorf("%q was taken for a token", s)
		}
	}
	if err := RevokeToken(path, "app"); err != nil {
		t.Fatal(err)
	}
	if err := RevokeToken(path, "app"); err == nil {
		t.Error("revoking an unknown token did not fail")
	}
	if err := tok.load(path); err != nil {
		t.Fatal(err)
	}
	if _, ok := tok.Lookup(w); ok {
		t.Error("a revoked token still works")
	}
}

func TestBadTokenFiles(t *testing.T) {
	dir := t.TempDir()
	hash := strings.Repeat("ab", 32)
	for name, body := range map[string]string{
		"not json":      "tokens: []",
		"unknown field": `{"tokens":[],"admin":true}`,
		"bad role":      `{"tokens":[{"name":"a","role":"root","sha256":"` + hash + `"}]}`,
		"node role":     `{"tokens":[{"name":"a","role":"node","sha256":"` + hash + `"}]}`,
		"short hash":    `{"tokens":[{"name":"a","role":"read","sha256":"abcd"}]}`,
		"twice":         `{"tokens":[{"name":"a","role":"read","sha256":"` + hash + `"},{"name":"a","role":"write","sha256":"` + hash + `"}]}`,
		"trailing":      `{"tokens":[]} {}`,
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		os.WriteFile(p, []byte(body), 0o600)
		if _, err := LoadTokens(p); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	if _, err := LoadTokens(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file loaded")
	}
	unreadable := filepath.Join(dir, "unreadable")
	os.Mkdir(unreadable, 0o700) // a directory does not read as a file, even as root
	if _, err := LoadTokens(unreadable); err == nil {
		t.Error("a directory loaded as an auth file")
	}
}

func TestCertsAndTLS(t *testing.T) {
	dir := t.TempDir()
	files, err := InitCerts(dir, []string{"n1", "n2"}, []string{"127.0.0.1", "localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InitCerts(dir, []string{"n1"}, []string{"127.0.0.1"}, time.Now()); err == nil {
		t.Fatal("a second CA was written over the first")
	}
	n1, err := LoadTLS(files.Nodes["n1"][0], files.Nodes["n1"][1], files.CA)
	if err != nil {
		t.Fatal(err)
	}
	if !n1.IsNode() || n1.Name() != "n1" {
		t.Errorf("n1: node %v name %q", n1.IsNode(), n1.Name())
	}
	px, err := LoadTLS(files.Proxy[0], files.Proxy[1], files.CA)
	if err != nil {
		t.Fatal(err)
	}
	if px.IsNode() {
		t.Error("the proxy's certificate passes for a node's")
	}
	other, err := InitCerts(filepath.Join(dir, "other"), []string{"n1"}, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	for name, args := range map[string][3]string{
		"no CA":           {files.Nodes["n1"][0], files.Nodes["n1"][1], ""},
		"cert of another": {other.Nodes["n1"][0], other.Nodes["n1"][1], files.CA},
		"key of another":  {files.Nodes["n1"][0], files.Nodes["n2"][1], files.CA},
		"garbage cert":    {garbage, files.Nodes["n1"][1], files.CA},
		"garbage CA":      {files.Nodes["n1"][0], files.Nodes["n1"][1], garbage},
		"cert, no key":    {files.Nodes["n1"][0], "", files.CA},
		"missing CA":      {files.Nodes["n1"][0], files.Nodes["n1"][1], filepath.Join(dir, "nope")},
	} {
		if _, err := LoadTLS(args[0], args[1], args[2]); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	for _, bad := range [][]string{{"ca"}, {"proxy"}, {"a b"}, {}} {
		if _, err := InitCerts(filepath.Join(dir, "x"), bad, []string{"127.0.0.1"}, time.Now()); err == nil {
			t.Errorf("nodes %q: written", bad)
		}
	}
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:1": true, "localhost:1": true, "[::1]:1": true, "127.1.2.3:1": true,
		":1": false, "0.0.0.0:1": false, "[::]:1": false, "10.0.0.1:1": false, "example.com:1": false, "nonsense": false,
	} {
		if got := Loopback(addr); got != want {
			t.Errorf("Loopback(%q) = %v", addr, got)
		}
	}
}

// TestCertReload: a renewed certificate of the same node (certs add) is
// taken without a restart; a certificate of another subject is not.
func TestCertReload(t *testing.T) {
	dir := t.TempDir()
	files, err := InitCerts(dir, []string{"n1"}, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m, err := LoadTLS(files.Nodes["n1"][0], files.Nodes["n1"][1], files.CA)
	if err != nil {
		t.Fatal(err)
	}
	first := m.cert.Load().Leaf.SerialNumber
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Watch(ctx, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	time.Sleep(30 * time.Millisecond)
	if _, err := AddNodeCerts(dir, []string{"n1"}, []string{"127.0.0.1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for m.cert.Load().Leaf.SerialNumber.Cmp(first) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate was not taken")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !m.IsNode() || m.Name() != "n1" {
		t.Fatalf("after the reload: node %v name %q", m.IsNode(), m.Name())
	}
	renewed := m.cert.Load().Leaf.SerialNumber
	// The proxy's pair written over n1's: another subject, refused.
	for i, f := range []string{files.Proxy[1], files.Proxy[0]} {
		b, _ := os.ReadFile(f)
		os.WriteFile(files.Nodes["n1"][1-i], b, 0o600)
	}
	time.Sleep(200 * time.Millisecond)
	if m.cert.Load().Leaf.SerialNumber.Cmp(renewed) != 0 || m.Name() != "n1" {
		t.Fatal("a certificate of another subject replaced the node's")
	}
	if _, err := AddNodeCerts(t.TempDir(), []string{"n2"}, []string{"127.0.0.1"}, time.Now()); err == nil {
		t.Fatal("certs add without a CA wrote certificates")
	}
}
