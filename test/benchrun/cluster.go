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
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"tally/api/wire"
	"tally/test/proc"
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

// cluster is the fresh local cluster the Tally profiles run against.
type cluster struct {
	cfg    *config
	dir    string // data directories, removed by stop unless -keep
	nodes  []*proc.Node
	proxy  string
	pproc  *proc.Proc
	cpuTop *cpuTop // the leader's CPU profile of the same-shard run, if taken
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
		c.nodes = append(c.nodes, proc.NewNode(cfg.bin, id, fmt.Sprintf("127.0.0.1:%d", httpBase+i),
			fmt.Sprintf("127.0.0.1:%d", raftBase+i), filepath.Join(dir, id), filepath.Join(cfg.out, id+".log")))
	}
	c.pproc = proc.NewProxy(cfg.bin, c.proxy, filepath.Join(cfg.out, "proxy.log"), c.nodes)
	logf("starting %d nodes (HTTP %s..%s) and the proxy (%s), data in %s",
		nodeCount, c.nodes[0].HTTP, c.nodes[nodeCount-1].HTTP, c.proxy, dir)
	if err := proc.StartCluster(ctx, c.nodes, c.pproc, cfg.shards, upTimeout); err != nil {
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

// deadProc names a process that has exited while it should be running.
func (c *cluster) deadProc() error {
	for _, p := range proc.Procs(c.nodes, c.pproc) {
		if !p.Running() {
			return fmt.Errorf("%s exited early (%s); see %s", p.Name, p.Exit(), p.LogPath)
		}
	}
	return nil
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
	if killed := proc.StopAll(stopTimeout, proc.Procs(c.nodes, c.pproc)...); len(killed) > 0 {
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
	for _, p := range proc.Procs(c.nodes, c.pproc) {
		if !p.Running() {
			continue
		}
		kib, err := vmHWM(p.Pid())
		if err != nil {
			logf("peak RSS of %s: %v", p.Name, err)
			continue
		}
		out = append(out, rss{Process: p.Name, PeakMiB: float64(kib) / 1024})
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

// snapFigures is one node's snapshots since it started, from its
// metrics: markers written, and full streams sent to followers.
type snapFigures struct {
	Node      string  `json:"node"`
	Count     int64   `json:"count"`
	Seconds   float64 `json:"seconds"`
	Bytes     float64 `json:"bytes"`
	Sent      int64   `json:"sent"`
	SentBytes float64 `json:"sent_bytes"`
}

// snapshotFigures reads every node's snapshot metrics, summed over its
// shards.
func (c *cluster) snapshotFigures() []snapFigures {
	var out []snapFigures
	for _, n := range c.nodes {
		fams, err := scrape("http://" + n.HTTP + "/metrics")
		if err != nil {
			logf("metrics of %s: %v", n.ID, err)
			continue
		}
		f := snapFigures{Node: n.ID}
		for _, m := range fams["tally_snapshot_seconds"].GetMetric() {
			f.Count += int64(m.GetSummary().GetSampleCount())
			f.Seconds += m.GetSummary().GetSampleSum()
		}
		for _, m := range fams["tally_snapshot_bytes"].GetMetric() {
			f.Bytes += m.GetSummary().GetSampleSum()
		}
		for _, m := range fams["tally_snapshot_sent_bytes"].GetMetric() {
			f.Sent += int64(m.GetSummary().GetSampleCount())
			f.SentBytes += m.GetSummary().GetSampleSum()
		}
		out = append(out, f)
	}
	return out
}

// scrape reads a Prometheus text exposition.
func scrape(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}
