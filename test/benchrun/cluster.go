package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"tally/api/wire"
)

// Loopback ports of the bench cluster, away from `make cluster`
// (8001-8003, 7001-7003, 8080) so both can run at once.
const (
	httpBase  = 18200 // node i serves HTTP on httpBase+i
	raftBase  = 17200 // and Raft on raftBase+i
	proxyPort = 18280
	nodeCount = 3
)

// Limits on waiting for the cluster.
const (
	upTimeout   = 90 * time.Second // from start until every shard has a leader and 3 replicas
	stopTimeout = 10 * time.Second // from SIGTERM until SIGKILL
	pollEvery   = 500 * time.Millisecond
)

// proc is one process we started; done closes once it has been waited for.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

type node struct {
	id, http, raft, data string
	p                    *proc
}

// cluster is the fresh local cluster the Tally profiles run against.
type cluster struct {
	cfg    *config
	dir    string // data directories, removed by stop unless -keep
	nodes  []*node
	proxy  string
	pproc  *proc
	cpuTop *cpuTop // the leader's CPU profile of the uniform run, if taken
}

// startCluster starts three nodes and the proxy and waits until every
// shard has a leader and three replicas. A non-nil cluster is returned
// even on error so that the caller stops what did start.
func startCluster(ctx context.Context, cfg *config) (*cluster, error) {
	if err := checkPortsFree(); err != nil {
		return nil, err
	}
	// Not in /tmp, which may be a tmpfs where fsync costs nothing: the
	// data lives on the repository's disk, like `make cluster`'s.
	store := filepath.Join(cfg.root, "test", "store")
	if err := os.MkdirAll(store, 0o755); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	dir, err := os.MkdirTemp(store, "bench-data-")
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	c := &cluster{cfg: cfg, dir: dir, proxy: fmt.Sprintf("127.0.0.1:%d", proxyPort)}
	for i := 1; i <= nodeCount; i++ {
		id := fmt.Sprintf("n%d", i)
		c.nodes = append(c.nodes, &node{id: id, http: fmt.Sprintf("127.0.0.1:%d", httpBase+i),
			raft: fmt.Sprintf("127.0.0.1:%d", raftBase+i), data: filepath.Join(dir, id)})
	}
	logf("starting %d nodes (HTTP %s..%s) and the proxy (%s), data in %s",
		nodeCount, c.nodes[0].http, c.nodes[nodeCount-1].http, c.proxy, dir)
	if err := c.startNode(c.nodes[0], "--bootstrap", "--shards", strconv.Itoa(cfg.shards)); err != nil {
		return c, err
	}
	if err := c.waitHealthy(ctx, c.nodes[0]); err != nil {
		return c, err
	}
	for _, n := range c.nodes[1:] {
		if err := c.startNode(n, "--join", c.nodes[0].http); err != nil {
			return c, err
		}
	}
	var addrs []string
	for _, n := range c.nodes {
		addrs = append(addrs, n.http)
	}
	c.pproc, err = c.spawn("proxy", "proxy", "--listen", c.proxy, "--nodes", strings.Join(addrs, ","))
	if err != nil {
		return c, err
	}
	if err := c.waitLeaders(ctx); err != nil {
		return c, err
	}
	logf("cluster up: %d shards, each with a leader and %d replicas", cfg.shards, nodeCount)
	c.waitSpread(ctx)
	return c, nil
}

// spreadTimeout bounds the wait for the cluster to spread its leaders.
const spreadTimeout = 30 * time.Second

// waitSpread waits until no node leads more shards than its share: the
// first node to start wins every election, and a run before the cluster
// moves leaders away from it would measure one node doing all the work.
// Not spreading in time is reported, not fatal.
func (c *cluster) waitSpread(ctx context.Context) {
	share := (c.cfg.shards + nodeCount - 1) / nodeCount
	deadline := time.Now().Add(spreadTimeout)
	for {
		m, err := c.leaders(ctx)
		worst := 0
		for _, shards := range m {
			worst = max(worst, len(shards))
		}
		if err == nil && worst <= share {
			logf("leaders spread: %v", m)
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			logf("leaders not spread after %v: %v (%v)", spreadTimeout, m, err)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(pollEvery):
		}
	}
}

// checkPortsFree fails early, with a clear message, when a port we need
// is taken (a bench left running, or something else).
func checkPortsFree() error {
	ports := []int{proxyPort}
	for i := 1; i <= nodeCount; i++ {
		ports = append(ports, httpBase+i, raftBase+i)
	}
	for _, p := range ports {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return fmt.Errorf("port 127.0.0.1:%d is in use (another bench still running?): %w", p, err)
		}
		l.Close()
	}
	return nil
}

func (c *cluster) startNode(n *node, extra ...string) error {
	args := append([]string{"server", "--id", n.id, "--data", n.data, "--raft", n.raft, "--http", n.http}, extra...)
	p, err := c.spawn(n.id, args...)
	n.p = p
	return err
}

// spawn starts the tally binary with its output in <results>/<name>.log.
// It runs in its own process group so that a Ctrl-C at the terminal
// reaches only us, and we stop it in order.
func (c *cluster) spawn(name string, args ...string) (*proc, error) {
	f, err := os.Create(filepath.Join(c.cfg.out, name+".log"))
	if err != nil {
		return nil, fmt.Errorf("log of %s: %w", name, err)
	}
	cmd := exec.Command(c.cfg.bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		// The exit status is not needed: stop reports what it had to kill.
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (c *cluster) procs() []*proc {
	var ps []*proc
	for _, n := range c.nodes {
		if n.p != nil {
			ps = append(ps, n.p)
		}
	}
	if c.pproc != nil {
		ps = append(ps, c.pproc)
	}
	return ps
}

// deadProc names a process that has exited while it should be running.
func (c *cluster) deadProc() error {
	for _, p := range c.procs() {
		if p.exited() {
			return fmt.Errorf("%s exited early (%v); see %s", p.name, p.cmd.ProcessState,
				filepath.Join(c.cfg.out, p.name+".log"))
		}
	}
	return nil
}

func (c *cluster) waitHealthy(ctx context.Context, n *node) error {
	return c.poll(ctx, n.id+" /healthz", func() bool {
		resp, err := http.Get("http://" + n.http + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// status asks the proxy for the cluster status through the CLI, as a
// user would.
func (c *cluster) status(ctx context.Context) (*wire.Cluster, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, c.cfg.bin, "--addr", c.proxy, "--json", "cluster", "status").Output()
	if err != nil {
		return nil, fmt.Errorf("tally cluster status: %w", err)
	}
	var st wire.Cluster
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("parse cluster status: %w", err)
	}
	return &st, nil
}

// waitLeaders waits until every shard has a leader and every node is a
// replica of it: a run that starts earlier would measure the joins.
func (c *cluster) waitLeaders(ctx context.Context) error {
	return c.poll(ctx, "a leader and all replicas on every shard", func() bool {
		st, err := c.status(ctx)
		if err != nil || len(st.Shards) != c.cfg.shards {
			return false
		}
		for _, s := range st.Shards {
			if s.Leader == "" || len(s.Replicas) != nodeCount {
				return false
			}
		}
		return true
	})
}

// poll calls ok until it reports true, a process dies, ctx ends or
// upTimeout passes.
func (c *cluster) poll(ctx context.Context, what string, ok func() bool) error {
	deadline := time.Now().Add(upTimeout)
	for !ok() {
		if err := c.deadProc(); err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s after %v (logs in %s)", what, upTimeout, c.cfg.out)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(pollEvery):
		}
	}
	return nil
}

// leaders maps each node id to the shards it leads.
func (c *cluster) leaders(ctx context.Context) (map[string][]int, error) {
	st, err := c.status(ctx)
	if err != nil {
		return nil, err
	}
	m := map[string][]int{}
	for _, s := range st.Shards {
		if s.Leader != "" {
			m[s.Leader] = append(m[s.Leader], s.Shard)
		}
	}
	return m, nil
}

// stop sends SIGTERM to every process we started, then SIGKILL to those
// still running after stopTimeout, and removes the data unless -keep.
// It is safe to call on a partly started cluster.
func (c *cluster) stop() error {
	ps := c.procs()
	for _, p := range ps {
		if !p.exited() {
			// An error means it has just exited: nothing left to stop.
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(stopTimeout)
	var killed []string
	for _, p := range ps {
		select {
		case <-p.done:
		case <-deadline:
		}
		if !p.exited() {
			killed = append(killed, p.name)
			_ = p.cmd.Process.Kill() // as above: it may have exited meanwhile
			<-p.done
		}
	}
	if len(killed) > 0 {
		logf("killed %s: still running %v after SIGTERM", strings.Join(killed, ", "), stopTimeout)
	} else {
		logf("cluster stopped")
	}
	if c.cfg.keep {
		logf("cluster data kept in %s", c.dir)
		return nil
	}
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("remove cluster data: %w", err)
	}
	return nil
}

// rss is one process's peak resident memory.
type rss struct {
	Process string  `json:"process"`
	PeakMiB float64 `json:"peak_mib"`
}

// peakRSS reads VmHWM (the high-water mark of resident memory) of every
// process still running; call it before stop.
func (c *cluster) peakRSS() []rss {
	var out []rss
	for _, p := range c.procs() {
		kib, err := vmHWM(p.cmd.Process.Pid)
		if err != nil {
			logf("peak RSS of %s: %v", p.name, err)
			continue
		}
		out = append(out, rss{Process: p.name, PeakMiB: float64(kib) / 1024})
	}
	return out
}

func vmHWM(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no VmHWM line")
}
