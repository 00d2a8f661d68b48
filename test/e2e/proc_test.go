// Package e2e tests the real tally binary: three node processes and the
// proxy on loopback, killed and restarted like an operator would.
package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"tally/test/proc"
)

var bin string // the tally binary built by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tally-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "tally")
	out, err := exec.Command("go", "build", "-o", bin, "tally/cmd/tally").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build tally: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is one tally server process.
type node struct {
	*proc.Node
	id, http string
}

// cluster is three nodes and a proxy.
type cluster struct {
	t     *testing.T
	dir   string
	nodes []*node
	proxy string
	pproc *proc.Proc
}

// newCluster describes three nodes and the proxy on free loopback ports,
// stopped when the test ends, and starts nothing.
func newCluster(t *testing.T) (*cluster, []*proc.Node, *proc.Proc) {
	t.Helper()
	dir := t.TempDir()
	ports, err := proc.FreePorts(7)
	if err != nil {
		t.Fatal(err)
	}
	nodes, pp := proc.Loopback(bin, dir, dir, ports, 3)
	c := &cluster{t: t, dir: dir, proxy: fmt.Sprintf("127.0.0.1:%d", ports[6]), pproc: pp}
	for _, n := range nodes {
		c.nodes = append(c.nodes, &node{Node: n, id: n.ID, http: n.HTTP})
	}
	t.Cleanup(c.stop)
	return c, nodes, pp
}

func startCluster(t *testing.T, shards int) *cluster {
	t.Helper()
	c, nodes, pp := newCluster(t)
	if err := proc.StartCluster(context.Background(), nodes, pp, shards, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		c.waitHTTP(n.http, "/readyz")
	}
	c.waitMembers()
	return c
}

// start starts a node that was killed again, with its data.
func (c *cluster) start(n *node) {
	c.t.Helper()
	if err := n.Start(); err != nil {
		c.t.Fatal(err)
	}
}

// kill sends SIGKILL: no shutdown, no flush.
func (c *cluster) kill(n *node) {
	c.t.Helper()
	if err := n.Kill(); err != nil {
		c.t.Fatalf("kill %s: %v", n.id, err)
	}
}

// stop sends SIGTERM to every process, SIGKILL to those still running
// 10s later, and shows the logs of a failed test.
func (c *cluster) stop() {
	var ps []*proc.Proc
	for _, n := range c.nodes {
		ps = append(ps, n.Proc)
	}
	proc.StopAll(10*time.Second, append(ps, c.pproc)...)
	if c.t.Failed() {
		for _, n := range c.nodes {
			b, _ := os.ReadFile(n.LogPath)
			c.t.Logf("---- %s log (last 4 KiB) ----\n%s", n.id, tail(b, 4096))
		}
		b, _ := os.ReadFile(c.pproc.LogPath)
		c.t.Logf("---- proxy log (last 4 KiB) ----\n%s", tail(b, 4096))
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (c *cluster) waitHTTP(addr, path string) {
	c.t.Helper()
	waitFor(c.t, 30*time.Second, addr+path, func() bool {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// run runs the tally CLI against the proxy and returns its output.
func (c *cluster) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, append([]string{"--addr", c.proxy}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
