// Package e2e tests the real tally binary: three node processes and the
// proxy on loopback, killed and restarted like an operator would.
package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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

// freePorts returns n distinct free loopback ports.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// node is one tally server process.
type node struct {
	id, raft, http, data, log string
	cmd                       *exec.Cmd
}

// cluster is three nodes and a proxy.
type cluster struct {
	t     *testing.T
	dir   string
	nodes []*node
	proxy string
	pcmd  *exec.Cmd

	mu     sync.Mutex
	exited map[*exec.Cmd]chan struct{} // closed when the process has been waited for
}

func startCluster(t *testing.T, shards int) *cluster {
	t.Helper()
	dir := t.TempDir()
	ports := freePorts(t, 7)
	c := &cluster{t: t, dir: dir, proxy: fmt.Sprintf("127.0.0.1:%d", ports[6]), exited: map[*exec.Cmd]chan struct{}{}}
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("n%d", i+1)
		c.nodes = append(c.nodes, &node{id: id, raft: fmt.Sprintf("127.0.0.1:%d", ports[i]),
			http: fmt.Sprintf("127.0.0.1:%d", ports[3+i]), data: filepath.Join(dir, id), log: filepath.Join(dir, id+".log")})
	}
	t.Cleanup(c.stop)
	c.start(c.nodes[0], "--bootstrap", "--shards", fmt.Sprint(shards))
	c.waitHTTP(c.nodes[0].http, "/healthz")
	for _, n := range c.nodes[1:] {
		c.start(n, "--join", c.nodes[0].http)
	}
	var nodes []string
	for _, n := range c.nodes {
		nodes = append(nodes, n.http)
	}
	c.pcmd = c.spawn(filepath.Join(dir, "proxy.log"), "proxy", "--listen", c.proxy, "--nodes", strings.Join(nodes, ","))
	for _, n := range c.nodes {
		c.waitHTTP(n.http, "/readyz")
	}
	c.waitMembers()
	return c
}

func (c *cluster) spawn(logPath string, args ...string) *exec.Cmd {
	c.t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	done := make(chan struct{})
	c.mu.Lock()
	c.exited[cmd] = done
	c.mu.Unlock()
	go func() {
		cmd.Wait()
		f.Close()
		close(done)
	}()
	return cmd
}

// waitExit waits up to d for cmd to exit and reports whether it did.
func (c *cluster) waitExit(cmd *exec.Cmd, d time.Duration) bool {
	c.mu.Lock()
	done := c.exited[cmd]
	c.mu.Unlock()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func (c *cluster) start(n *node, extra ...string) {
	args := append([]string{"server", "--id", n.id, "--data", n.data, "--raft", n.raft, "--http", n.http}, extra...)
	n.cmd = c.spawn(n.log, args...)
}

// kill sends SIGKILL: no shutdown, no flush.
func (c *cluster) kill(n *node) {
	c.t.Helper()
	if err := n.cmd.Process.Kill(); err != nil {
		c.t.Fatalf("kill %s: %v", n.id, err)
	}
	c.waitExit(n.cmd, 2*time.Second)
	n.cmd = nil
}

func (c *cluster) stop() {
	for _, n := range c.nodes {
		if n.cmd != nil {
			n.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	if c.pcmd != nil {
		c.pcmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, cmd := range append([]*exec.Cmd{c.pcmd}, c.cmds()...) {
		if cmd != nil && !c.waitExit(cmd, max(time.Until(deadline), 0)) {
			cmd.Process.Kill()
			c.waitExit(cmd, 2*time.Second)
		}
	}
	if c.t.Failed() {
		for _, n := range c.nodes {
			b, _ := os.ReadFile(n.log)
			c.t.Logf("---- %s log (last 4 KiB) ----\n%s", n.id, tail(b, 4096))
		}
		b, _ := os.ReadFile(filepath.Join(c.dir, "proxy.log"))
		c.t.Logf("---- proxy log (last 4 KiB) ----\n%s", tail(b, 4096))
	}
}

func (c *cluster) cmds() []*exec.Cmd {
	var out []*exec.Cmd
	for _, n := range c.nodes {
		out = append(out, n.cmd)
	}
	return out
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
