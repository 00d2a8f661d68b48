package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"tally/test/proc"
)

// Proc is one tally process (a node or the proxy), started again with the
// same arguments after a kill.
type Proc = proc.Proc

// Node is one tally server.
type Node struct {
	*proc.Node
	// FailpointFile arms the failpoints of a failpoints build.
	FailpointFile string
}

// Cluster is the run's three nodes and the proxy, and the harness's own
// view of them.
type Cluster struct {
	Nodes     []*Node
	Proxy     *Proc
	ProxyAddr string
	Shards    int
	Root      bool

	net   *Net
	disks map[string]*Disk
	bin   string
	work  string // data directories
	store string // logs
	cl    *client
	dial  func(ctx context.Context, network, addr string) (net.Conn, error) // from the harness
	logf  func(string, ...any)
}

// ClusterConfig says how to start the cluster.
type ClusterConfig struct {
	Bin    string
	Shards int
	Root   bool
	Work   string // where data directories go
	Store  string // where logs go
	Fast   bool   // --fast-failover
	Logf   func(string, ...any)
	// Failpoints is set for a failpoints build: each node's failpoint
	// file starts with the base settings (frequent snapshots).
	Failpoints bool
}

// StartCluster builds the network (with root), mounts the nodes' disks
// and starts three nodes and the proxy, waiting until every shard has a
// leader and three replicas.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	c := &Cluster{Shards: cfg.Shards, Root: cfg.Root, bin: cfg.Bin, work: cfg.Work, store: cfg.Store,
		disks: map[string]*Disk{}, logf: cfg.Logf}
	if err := c.start(ctx, cfg); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context, cfg ClusterConfig) error {
	ids := []string{"n1", "n2", "n3"}
	var ports []int
	if c.Root {
		n, err := NewNet(append(append([]string{}, ids...), "proxy", "harness"), c.logf)
		if err != nil {
			return fmt.Errorf("network: %w", err)
		}
		c.net = n
		c.dial = n.Dial("harness")
		c.cl = newClient(c.dial)
		for _, id := range ids {
			if err := n.SetShardLink(id, c.Shards, -1); err != nil {
				return err
			}
		}
	} else {
		var err error
		if ports, err = proc.FreePorts(7); err != nil {
			return err
		}
		d := &net.Dialer{}
		c.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if err := checkAddr(addr); err != nil {
				return nil, err
			}
			return d.DialContext(ctx, network, addr)
		}
		c.cl = newClient(c.dial)
	}
	for i, id := range ids {
		n, err := c.newNode(i, id, ports, cfg.Fast)
		if err != nil {
			return err
		}
		c.Nodes = append(c.Nodes, n)
	}
	if c.Root {
		c.ProxyAddr = fmt.Sprintf("%s:%d", c.net.IP("proxy"), proxyPort)
	} else {
		c.ProxyAddr = fmt.Sprintf("127.0.0.1:%d", ports[6])
	}
	var nodes []*proc.Node
	for _, n := range c.Nodes {
		nodes = append(nodes, n.Node)
	}
	c.Proxy = proc.NewProxy(c.bin, c.ProxyAddr, filepath.Join(c.store, "proxy.log"), nodes)
	c.Proxy.Ready = c.ready(c.ProxyAddr)
	if c.Root {
		c.Proxy.Prefix = netnsExec(c.net.NS("proxy"))
		c.Proxy.Args = append(c.Proxy.Args, "--insecure")
	}
	if err := proc.StartCluster(ctx, nodes, c.Proxy, c.Shards, 30*time.Second); err != nil {
		return err
	}
	return c.waitMembers(ctx, 90*time.Second)
}

// secretFile writes the cluster secret once and returns its path.
func (c *Cluster) secretFile() string {
	path := filepath.Join(c.work, "cluster.secret")
	if _, err := os.Stat(path); err != nil {
		var b [16]byte
		rand.Read(b[:])
		os.WriteFile(path, []byte(hex.EncodeToString(b[:])+"\n"), 0o600)
	}
	return path
}

// newNode describes node i, id: its addresses (in its namespace with
// root, on loopback otherwise), its disk (with root), its failpoint file
// and its process.
func (c *Cluster) newNode(i int, id string, ports []int, fast bool) (*Node, error) {
	data := filepath.Join(c.work, id)
	var httpAddr, raftAddr string
	if c.Root {
		ip := c.net.IP(id)
		httpAddr, raftAddr = fmt.Sprintf("%s:%d", ip, httpPort), fmt.Sprintf("%s:%d", ip, raftPort)
		d, err := NewDisk(id, data)
		if err != nil {
			c.logf("disk for %s: %v (the disk-full fault is off)", id, err)
		} else {
			c.disks[id] = d
		}
	} else {
		httpAddr, raftAddr = fmt.Sprintf("127.0.0.1:%d", ports[3+i]), fmt.Sprintf("127.0.0.1:%d", ports[i])
	}
	var extra []string
	if fast {
		extra = append(extra, "--fast-failover")
	}
	if c.Root {
		// The namespaces' addresses are not loopback: the test network is
		// plaintext on purpose, and the nodes know each other by a secret,
		// so the node-only guard of the internal routes runs under faults.
		extra = append(extra, "--insecure", "--cluster-secret-file", c.secretFile())
	}
	n := &Node{Node: proc.NewNode(c.bin, id, httpAddr, raftAddr, data, filepath.Join(c.store, id+".log"), extra...),
		FailpointFile: filepath.Join(c.work, id+".failpoints")}
	if err := os.WriteFile(n.FailpointFile, []byte(failpointBase), 0o644); err != nil {
		return nil, err
	}
	n.Env = []string{"TALLY_FAILPOINTS=" + n.FailpointFile}
	n.Ready = c.ready(httpAddr)
	if c.Root {
		n.Prefix = netnsExec(c.net.NS(id))
	}
	return n, nil
}

// netnsExec is the prefix that runs a process in namespace ns; ip netns
// exec execs the binary, so the pid is tally's own.
func netnsExec(ns string) []string { return []string{"ip", "netns", "exec", ns} }

// ready probes addr's /healthz through the harness's own client, which
// reaches into the namespaces.
func (c *Cluster) ready(addr string) func(context.Context) bool {
	return func(ctx context.Context) bool { return c.cl.healthy(ctx, addr) }
}

// clusterView is the part of GET /v1/cluster the harness reads.
type clusterView struct {
	Shards []struct {
		Shard      int    `json:"shard"`
		Leader     string `json:"leader"`
		LeaderHTTP string `json:"leader_http"`
		Replicas   []struct {
			Node string `json:"node"`
			HTTP string `json:"http"`
		} `json:"replicas"`
	} `json:"shards"`
}

// waitMembers waits until every node sees every shard with three
// replicas whose addresses are known, and a leader.
func (c *Cluster) waitMembers(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		ok := true
		for _, n := range c.Nodes {
			var v clusterView
			if err := c.cl.getJSON(ctx, n.HTTP, "/v1/cluster", nil, 2*time.Second, &v); err != nil || len(v.Shards) != c.Shards {
				ok = false
				break
			}
			for _, s := range v.Shards {
				if s.Leader == "" || len(s.Replicas) != 3 {
					ok = false
				}
				for _, r := range s.Replicas {
					if r.HTTP == "" {
						ok = false
					}
				}
			}
		}
		if ok && c.cl.healthy(ctx, c.ProxyAddr) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the cluster did not form within %s", d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Node returns the node with id.
func (c *Cluster) Node(id string) *Node {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Restart starts a stopped node or the proxy again and waits until it
// answers.
func (c *Cluster) Restart(ctx context.Context, p *Proc) error {
	return p.Restart(ctx, 30*time.Second)
}

// Procs returns every process.
func (c *Cluster) Procs() []*Proc {
	var out []*Proc
	for _, n := range c.Nodes {
		out = append(out, n.Proc)
	}
	if c.Proxy == nil {
		return out
	}
	return append(out, c.Proxy)
}

// Close stops every process, unmounts the disks and deletes the
// namespaces. It is safe to call more than once.
func (c *Cluster) Close() {
	for _, p := range c.Procs() {
		if p != nil {
			p.Stop(5 * time.Second)
		}
	}
	if c.cl != nil {
		c.cl.close()
	}
	for id, d := range c.disks {
		_ = d.Drain()
		if err := d.Close(); err != nil {
			c.logf("cleanup: unmount %s: %v", id, err)
		}
		delete(c.disks, id)
	}
	if c.net != nil {
		c.net.Close()
		c.net = nil
	}
	_ = os.RemoveAll(c.work)
}
