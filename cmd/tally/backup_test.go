package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackupRefusals: each bad use of backup and --restore is one clear
// error, and leaves no file or data directory behind.
func TestBackupRefusals(t *testing.T) {
	dir := t.TempDir()
	exists := filepath.Join(dir, "exists.bak")
	if err := os.WriteFile(exists, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(dir, "junk.bak")
	if err := os.WriteFile(junk, []byte("TALLYBK\nnot a header"), 0o600); err != nil {
		t.Fatal(err)
	}
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("TALLYBK\n")) // a file that breaks off after its magic
	}))
	defer broken.Close()
	full := filepath.Join(dir, "full")
	if err := os.MkdirAll(full, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(full, "node.json"), []byte(`{"shards": 4}`), 0o644)
	for _, tc := range []struct {
		name string
		addr string
		args []string
		want string
	}{
		{"no file", "127.0.0.1:1", []string{"backup"}, "accepts 1 arg"},
		{"file exists", "127.0.0.1:1", []string{"backup", exists}, "exists; remove it"},
		{"unknown flag", "127.0.0.1:1", []string{"backup", "x.bak", "--bogus"}, "unknown flag"},
		{"broken stream", broken.Listener.Addr().String(), []string{"backup", filepath.Join(dir, "broken.bak")}, "truncated"},
		{"inspect junk", "127.0.0.1:1", []string{"backup", "inspect", junk}, "corrupt"},
		{"restore without bootstrap", "127.0.0.1:1", []string{"server", "--id", "r1", "--data", filepath.Join(dir, "r1"), "--join", "127.0.0.1:1", "--restore", junk}, "needs --bootstrap"},
		{"restore onto state", "127.0.0.1:1", []string{"server", "--id", "r2", "--data", full, "--bootstrap", "--restore", junk}, "empty data directory"},
		{"restore junk", "127.0.0.1:1", []string{"server", "--id", "r3", "--data", filepath.Join(dir, "r3"), "--bootstrap", "--restore", junk,
			"--raft", "127.0.0.1:0", "--http", "127.0.0.1:0"}, "corrupt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, tc.addr, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("tally %s: %v, want one line with %q", strings.Join(tc.args, " "), err, tc.want)
			}
		})
	}
	for _, left := range []string{"broken.bak", "broken.bak.partial", "r1", "r3"} {
		if _, err := os.Stat(filepath.Join(dir, left)); !os.IsNotExist(err) {
			t.Errorf("%s left behind (%v)", left, err)
		}
	}
}
