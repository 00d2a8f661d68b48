package harness

import (
	"context"
	"fmt"
	"os"
	"time"

	"tally/test/jepsen/nemesis"
)

// The faults themselves live in package nemesis, one file per family,
// registered once; this file gives them the cluster to act on.

// Window is what happened to one fault (package nemesis).
type Window = nemesis.Window

// failpointBase is every node's failpoint file when nothing is armed.
const failpointBase = nemesis.FailpointBase

// faultView is the cluster and the leader poller as the nemesis sees
// them: members by name, the proxy as "proxy".
type faultView struct {
	c    *Cluster
	poll *Poller
}

var (
	_ nemesis.Cluster  = faultView{}
	_ nemesis.Observer = faultView{}
	_ nemesis.Network  = netView{}
	_ nemesis.Proc     = (*Proc)(nil)
	_ nemesis.Disk     = (*Disk)(nil)
)

func (v faultView) Shards() int { return v.c.Shards }

func (v faultView) Nodes() []string {
	ids := make([]string, len(v.c.Nodes))
	for i, n := range v.c.Nodes {
		ids[i] = n.ID
	}
	return ids
}

func (v faultView) proc(name string) *Proc {
	if n := v.c.Node(name); n != nil {
		return n.Proc
	}
	return v.c.Proxy
}

// addr is a member's HTTP address.
func (v faultView) addr(name string) string {
	if n := v.c.Node(name); n != nil {
		return n.HTTP
	}
	return v.c.ProxyAddr
}

func (v faultView) Proc(name string) nemesis.Proc { return v.proc(name) }

func (v faultView) Healthy(ctx context.Context, name string) bool {
	return v.c.cl.healthy(ctx, v.addr(name))
}

func (v faultView) Restart(ctx context.Context, name string) error {
	return v.c.Restart(ctx, v.proc(name))
}

func (v faultView) Net() nemesis.Network {
	if v.c.net == nil {
		return nil
	}
	return netView(v)
}

func (v faultView) Disk(node string) nemesis.Disk {
	if d := v.c.disks[node]; d != nil {
		return d
	}
	return nil
}

func (v faultView) SetFailpoints(node, content string) error {
	n := v.c.Node(node)
	if n == nil {
		return fmt.Errorf("no node %s", node)
	}
	return os.WriteFile(n.FailpointFile, []byte(content), 0o644)
}

func (v faultView) Poll(ctx context.Context)          { v.poll.Poll(ctx) }
func (v faultView) Leader(shard int) (string, uint64) { return v.poll.Leader(shard) }
func (v faultView) AllLed() bool                      { return v.poll.AllLed() }
func (v faultView) Applied(node string, shard int) (uint64, bool) {
	s, ok := v.poll.States()[fmt.Sprintf("%s/%d", node, shard)]
	return s.AppliedSeq, ok
}

// netView is the run's network as the nemesis sees it.
type netView faultView

func (v netView) Apply(rules []nemesis.Rule) error { return v.c.net.Apply(rules) }

func (v netView) CutShard(node string, shard int) error {
	return v.c.net.SetShardLink(node, v.c.Shards, shard)
}

func (v netView) Probe(from, to string, d time.Duration) bool {
	return v.c.net.Probe(from, faultView(v).addr(to), d)
}

func (v netView) BridgeDropped() (int64, error) { return Dropped(bridgeNS, "bridge") }

func (v netView) ShardDropped(node string) (int64, error) { return Dropped(v.c.net.NS(node), "inet") }
