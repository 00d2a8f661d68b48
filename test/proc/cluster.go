package proc

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Node is one `tally server` and its addresses.
type Node struct {
	*Proc
	ID, HTTP, Raft, Data string
}

// NewNode describes node id: its data in data, its output appended to
// logPath, extra flags after the addresses on every start. Its Ready
// probe is GET /healthz through http.DefaultClient; replace it where the
// node is reached otherwise.
func NewNode(bin, id, httpAddr, raftAddr, data, logPath string, extra ...string) *Node {
	args := append([]string{"server", "--id", id, "--data", data, "--raft", raftAddr, "--http", httpAddr}, extra...)
	return &Node{ID: id, HTTP: httpAddr, Raft: raftAddr, Data: data, Proc: &Proc{Name: id, Bin: bin, Args: args,
		LogPath: logPath, Ready: HTTPReady(http.DefaultClient, httpAddr, "/healthz")}}
}

// NewProxy describes `tally proxy` listening on listen in front of the
// nodes, with the same kind of Ready probe as NewNode.
func NewProxy(bin, listen, logPath string, nodes []*Node) *Proc {
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.HTTP
	}
	return &Proc{Name: "proxy", Bin: bin, Args: []string{"proxy", "--listen", listen, "--nodes", strings.Join(addrs, ",")},
		LogPath: logPath, Ready: HTTPReady(http.DefaultClient, listen, "/healthz")}
}

// Loopback describes n nodes and the proxy on 127.0.0.1, on ports[i]
// (Raft) and ports[n+i] (HTTP) for node i and ports[2n] for the proxy,
// data under dir/<id>, logs in logs/<id>.log and logs/proxy.log.
func Loopback(bin, dir, logs string, ports []int, n int) ([]*Node, *Proc) {
	var nodes []*Node
	for i := range n {
		id := "n" + strconv.Itoa(i+1)
		nodes = append(nodes, NewNode(bin, id, fmt.Sprintf("127.0.0.1:%d", ports[n+i]),
			fmt.Sprintf("127.0.0.1:%d", ports[i]), filepath.Join(dir, id), filepath.Join(logs, id+".log")))
	}
	return nodes, NewProxy(bin, fmt.Sprintf("127.0.0.1:%d", ports[2*n]), filepath.Join(logs, "proxy.log"), nodes)
}

// StartCluster starts a new cluster: the first node bootstraps it with
// shards shards, and once it is ready (within timeout) the others join it
// and the proxy starts. It does not wait for the others or the proxy:
// what the cluster must reach before use is the caller's to say.
func StartCluster(ctx context.Context, nodes []*Node, proxy *Proc, shards int, timeout time.Duration) error {
	first := nodes[0]
	if err := first.Start("--bootstrap", "--shards", strconv.Itoa(shards)); err != nil {
		return err
	}
	if err := first.WaitReady(ctx, timeout); err != nil {
		return err
	}
	for _, n := range nodes[1:] {
		if err := n.Start("--join", first.HTTP); err != nil {
			return err
		}
	}
	return proxy.Start()
}

// Procs lists the nodes' processes, then the proxy's.
func Procs(nodes []*Node, proxy *Proc) []*Proc {
	var out []*Proc
	for _, n := range nodes {
		out = append(out, n.Proc)
	}
	if proxy != nil {
		out = append(out, proxy)
	}
	return out
}
