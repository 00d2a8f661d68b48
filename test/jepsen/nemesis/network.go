package nemesis

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The network family: partitions of the private bridge (cut links both
// ways, verified by connection probes between every pair of members),
// lossy links (a share of packets dropped at random, verified by the
// bridge's drop counter) and one shard's Raft link (verified by the cut
// node's drop counter). The harness's own links are never cut: it is the
// observer and the client. Every class needs root.
var (
	isolateNode   Fault = partition{"isolate-node", aimNode, isolate}
	isolateLeader Fault = partition{"isolate-leader", aimLeader, isolate}
	deposedLeader Fault = partition{"deposed-leader", aimLeader, depose}
	halves        Fault = partition{"halves", aimNode, halve}
	bridge        Fault = partition{"bridge", aimNode, bridgeCuts}
	lossyLink     Fault = lossy{"lossy-link", 30}
	shardLink     Fault = shardCut{"shard-link"}
)

// probeTimeout bounds one connection probe; a cut pair takes all of it.
const probeTimeout = 400 * time.Millisecond

// needNet returns the network, or why there is none.
func needNet(c Cluster, name string) (Network, error) {
	n := c.Net()
	if n == nil {
		return nil, fmt.Errorf("%s %w", name, ErrNeedsRoot)
	}
	return n, nil
}

func needsRoot(env Env) error {
	if !env.Root {
		return ErrNeedsRoot
	}
	return nil
}

// partition cuts links both ways. Its shape picks the links from the
// members and the aimed-at member x; it returns the window's target and
// the links to cut.
type partition struct {
	name  string
	aim   aim
	shape func(nodes []string, x string, w *Window) (string, [][2]string)
}

func (p partition) Name() string                               { return p.name }
func (partition) Available(env Env) error                      { return needsRoot(env) }
func (p partition) Traits() Traits                             { return Traits{Leader: p.aim == aimLeader} }
func (partition) Heal(_ context.Context, c Cluster, w *Window) { healBridge(c, w) }

func (p partition) Inject(_ context.Context, c Cluster, w *Window) error {
	n, err := needNet(c, p.name)
	if err != nil {
		return err
	}
	target, cuts := p.shape(c.Nodes(), p.aim.target(c, w), w)
	w.Target = target
	w.state = cuts
	var rules []Rule
	for _, l := range cuts {
		rules = append(rules, Rule{From: l[0], To: l[1]}, Rule{From: l[1], To: l[0]})
	}
	return n.Apply(rules)
}

func (partition) Verify(_ context.Context, c Cluster, w *Window) {
	cuts, _ := w.state.([][2]string)
	w.Verified, w.Verify = probeCuts(c, cuts)
}

// isolate cuts x from every other member, the proxy included.
func isolate(nodes []string, x string, _ *Window) (string, [][2]string) {
	var cuts [][2]string
	for _, o := range append(slices.Clone(nodes), proxy) {
		if o != x {
			cuts = append(cuts, [2]string{x, o})
		}
	}
	return x, cuts
}

// depose cuts the leader x from its followers but not from the proxy:
// the classic stale-read trap.
func depose(nodes []string, x string, w *Window) (string, [][2]string) {
	var cuts [][2]string
	for _, o := range nodes {
		if o != x {
			cuts = append(cuts, [2]string{x, o})
		}
	}
	w.note("%s keeps its link to the proxy", x)
	return x, cuts
}

// halve cuts the minority x from the majority; the proxy sides with the
// majority, or with the minority when the step says flip.
func halve(nodes []string, x string, w *Window) (string, [][2]string) {
	var cuts [][2]string
	var major []string
	for _, o := range nodes {
		if o != x {
			major = append(major, o)
			cuts = append(cuts, [2]string{x, o})
		}
	}
	if w.Fault.Flip {
		w.note("the proxy is with the minority %s", x)
		for _, o := range major {
			cuts = append(cuts, [2]string{proxy, o})
		}
	} else {
		w.note("the proxy is with the majority %s", strings.Join(major, ","))
		cuts = append(cuts, [2]string{proxy, x})
	}
	return x, cuts
}

// bridgeCuts cuts the two nodes on either side of the middle node x from
// each other: x alone reaches both.
func bridgeCuts(nodes []string, x string, _ *Window) (string, [][2]string) {
	mid := slices.Index(nodes, x)
	a, c := nodes[(mid+1)%len(nodes)], nodes[(mid+2)%len(nodes)]
	return fmt.Sprintf("%s-%s-%s", a, x, c), [][2]string{{a, c}}
}

// healBridge removes every bridge rule and probes that every pair
// connects again.
func healBridge(c Cluster, w *Window) {
	n := c.Net()
	if n == nil {
		return
	}
	if err := n.Apply(nil); err != nil {
		w.HealMsg = err.Error()
		return
	}
	w.HealVerified, w.HealMsg = probeCuts(c, nil)
}

// probeCuts checks every pair of running members: a cut pair must not
// connect (either way), every other pair must.
func probeCuts(c Cluster, cuts [][2]string) (bool, string) {
	cut := map[[2]string]bool{}
	for _, l := range cuts {
		cut[l], cut[[2]string{l[1], l[0]}] = true, true
	}
	type res struct {
		from, to  string
		want, got bool
	}
	all := members(c)
	ch := make(chan res, len(all)*len(all))
	k := 0
	for _, a := range all {
		for _, b := range all {
			if a == b || !c.Proc(b).Running() {
				continue
			}
			k++
			go func() {
				ch <- res{a, b, !cut[[2]string{a, b}], c.Net().Probe(a, b, probeTimeout)}
			}()
		}
	}
	var bad []string
	for range k {
		if r := <-ch; r.got != r.want {
			bad = append(bad, fmt.Sprintf("%s->%s connects=%v", r.from, r.to, r.got))
		}
	}
	if len(bad) == 0 {
		return true, fmt.Sprintf("%d probes as expected (%d links cut)", k, len(cuts))
	}
	slices.Sort(bad)
	return false, "probes: " + strings.Join(bad, ", ")
}

// lossy drops a share of the packets between one node and every other
// member, both ways.
type lossy struct {
	name    string
	percent int
}

func (l lossy) Name() string                               { return l.name }
func (lossy) Available(env Env) error                      { return needsRoot(env) }
func (lossy) Traits() Traits                               { return Traits{} }
func (lossy) Heal(_ context.Context, c Cluster, w *Window) { healBridge(c, w) }

func (l lossy) Inject(_ context.Context, c Cluster, w *Window) error {
	n, err := needNet(c, l.name)
	if err != nil {
		return err
	}
	x := aimNode.target(c, w)
	w.Target = x
	var rules []Rule
	for _, o := range members(c) {
		if o != x {
			rules = append(rules, Rule{From: x, To: o, Percent: l.percent}, Rule{From: o, To: x, Percent: l.percent})
		}
	}
	return n.Apply(rules)
}

func (lossy) Verify(_ context.Context, c Cluster, w *Window) {
	d, err := c.Net().BridgeDropped()
	w.Verified = err == nil && d > 0
	w.Verify = fmt.Sprintf("bridge dropped %d packets", d)
}

// shardCut drops one shard's Raft connections in its leader's namespace:
// that node's other shards, and the other nodes' links for that shard,
// flow on.
type shardCut struct{ name string }

func (s shardCut) Name() string          { return s.name }
func (shardCut) Available(env Env) error { return needsRoot(env) }
func (shardCut) Traits() Traits          { return Traits{Leader: true} }

func (s shardCut) Inject(_ context.Context, c Cluster, w *Window) error {
	n, err := needNet(c, s.name)
	if err != nil {
		return err
	}
	w.Target = aimLeader.target(c, w)
	return n.CutShard(w.Target, w.Fault.Shard)
}

func (shardCut) Verify(_ context.Context, c Cluster, w *Window) {
	d, err := c.Net().ShardDropped(w.Target)
	w.Verified = err == nil && d > 0
	w.Verify = fmt.Sprintf("%s dropped %d packets of shard %d's Raft connections", w.Target, d, w.Fault.Shard)
}

func (shardCut) Heal(_ context.Context, c Cluster, w *Window) {
	n := c.Net()
	if n == nil {
		return
	}
	err := n.CutShard(w.Target, -1)
	w.HealVerified = err == nil
	if err != nil {
		w.HealMsg = err.Error()
	}
}

// resetNetwork removes every bridge rule and every shard cut.
func resetNetwork(c Cluster) {
	n := c.Net()
	if n == nil {
		return
	}
	// Best effort, at the end of the run: a rule left behind goes with
	// the namespaces.
	_ = n.Apply(nil)
	for _, node := range c.Nodes() {
		_ = n.CutShard(node, -1)
	}
}
