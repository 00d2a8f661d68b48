package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Fault classes. Each is applied, verified to have taken effect, held,
// healed and verified healed; the next starts once every shard has a
// leader again.
const (
	KillLeader    = "kill-leader"
	KillFollower  = "kill-follower"
	PauseLeader   = "pause-leader"
	PauseFollower = "pause-follower"
	SlowNode      = "slow-node"
	IsolateNode   = "isolate-node"
	IsolateLeader = "isolate-leader"
	Halves        = "halves"
	Bridge        = "bridge"
	ShardLink     = "shard-link"
	DeposedLeader = "deposed-leader"
	LossyLink     = "lossy-link"
	ProxyKill     = "proxy-kill"
	ProxyPause    = "proxy-pause"
	DiskFull      = "disk-full"
	FsyncError    = "fsync-error"
	CrashPoint    = "crash-point"
)

// Classes lists every fault class in a fixed order.
var Classes = []string{KillLeader, KillFollower, PauseLeader, PauseFollower, SlowNode, IsolateNode,
	IsolateLeader, Halves, Bridge, ShardLink, DeposedLeader, LossyLink, ProxyKill, ProxyPause, DiskFull,
	FsyncError, CrashPoint}

// withoutRoot lists the classes a run without root applies: kills and
// pauses. Everything else needs namespaces, nft or mount (or, for the
// failpoints, is left to the full run).
var withoutRoot = map[string]bool{KillLeader: true, KillFollower: true, PauseLeader: true, PauseFollower: true,
	SlowNode: true, ProxyKill: true, ProxyPause: true}

// needsFailpoints lists the classes that need a failpoints build.
var needsFailpoints = map[string]bool{FsyncError: true, CrashPoint: true}

// leaderTargeted lists the classes that aim at a shard's leader: each
// must change that shard's leader, or the run's verdict is unknown.
var leaderTargeted = map[string]bool{KillLeader: true, PauseLeader: true, IsolateLeader: true,
	ShardLink: true, DeposedLeader: true}

// maxElectionWait bounds how long a leader-targeted fault stays past its
// hold while the shard has not elected another leader.
const maxElectionWait = 8 * time.Second

// crashPoints are the crash failpoints a crash-point fault picks from.
var crashPoints = []string{"before-apply", "after-apply", "snapshot", "saga-before-credit", "saga-before-resolve"}

// Fault is one scheduled fault.
type Fault struct {
	Class   string        `json:"class"`
	At      time.Duration `json:"at"`    // offset from the start of the fault phase
	Hold    time.Duration `json:"hold"`  // how long it stays
	Shard   int           `json:"shard"` // the shard whose leader (or follower) is aimed at
	Node    int           `json:"node"`  // a node index for node faults not aimed by role
	Variant string        `json:"variant,omitempty"`
	Flip    bool          `json:"flip,omitempty"` // halves: the proxy sides with the minority
}

// Schedule builds a reproducible list of faults from a seed: for the CI
// profile every class once in a seeded order, otherwise classes drawn at
// random until the duration is filled.
func Schedule(seed uint64, classes []string, once bool, duration, hold, gap time.Duration, shards int) []Fault {
	rng := rand.New(rand.NewPCG(seed, 0x6a6570))
	var out []Fault
	at := time.Duration(0)
	mk := func(class string) Fault {
		f := Fault{Class: class, At: at, Shard: rng.IntN(shards), Node: rng.IntN(3), Flip: rng.IntN(2) == 0}
		f.Hold = hold
		if !once {
			f.Hold = hold/2 + time.Duration(rng.Int64N(int64(hold)))
		}
		if class == CrashPoint {
			f.Variant = crashPoints[rng.IntN(len(crashPoints))]
		}
		return f
	}
	if once {
		order := slices.Clone(classes)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, c := range order {
			out = append(out, mk(c))
			at += hold + gap
		}
		return out
	}
	for at < duration {
		out = append(out, mk(classes[rng.IntN(len(classes))]))
		at += hold + gap
	}
	return out
}

// Window is what happened to one fault.
type Window struct {
	N             int       `json:"n"`
	Fault         Fault     `json:"fault"`
	Target        string    `json:"target"`
	Start         time.Time `json:"start"`
	Healed        time.Time `json:"healed"`
	Recovered     time.Time `json:"recovered"`
	Verified      bool      `json:"verified"`
	Verify        string    `json:"verify"`
	HealVerified  bool      `json:"heal_verified"`
	HealMsg       string    `json:"heal_msg,omitempty"`
	LeaderBefore  string    `json:"leader_before,omitempty"`
	LeaderAfter   string    `json:"leader_after,omitempty"`
	TermBefore    uint64    `json:"term_before,omitempty"`
	TermAfter     uint64    `json:"term_after,omitempty"`
	LeaderChanged *bool     `json:"leader_changed,omitempty"`
	Notes         []string  `json:"notes,omitempty"`
	Err           string    `json:"err,omitempty"`
	Skipped       bool      `json:"skipped,omitempty"`
}

func (w *Window) note(format string, args ...any) {
	w.Notes = append(w.Notes, fmt.Sprintf(format, args...))
}

// Nemesis applies faults to the cluster.
type Nemesis struct {
	c    *Cluster
	poll *Poller
	logf func(string, ...any)
	out  *os.File

	// CatchUp makes each recovery also wait for every replica to catch
	// up, so that faults do not overlap (the CI profile).
	CatchUp bool

	mu     sync.Mutex
	active func() // heals the fault in force, nil when none
}

// NewNemesis writes its log (one JSON window per line) to path.
func NewNemesis(c *Cluster, poll *Poller, path string, logf func(string, ...any)) (*Nemesis, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &Nemesis{c: c, poll: poll, logf: logf, out: f}, nil
}

// Close closes the log.
func (n *Nemesis) Close() error { return n.out.Close() }

// Run applies the schedule, in order, until ctx ends or the phase
// (started at t0) reaches its end. Each fault waits for its time and for
// the cluster to have recovered from the previous one.
func (n *Nemesis) Run(ctx context.Context, t0 time.Time, end time.Time, sched []Fault, report func(*Window)) []*Window {
	var out []*Window
	for i, f := range sched {
		if wait := time.Until(t0.Add(f.At)); wait > 0 {
			sleepCtx(ctx, wait)
		}
		if ctx.Err() != nil || time.Now().Add(f.Hold).After(end) {
			break
		}
		w := n.one(ctx, i+1, f)
		out = append(out, w)
		b, _ := json.Marshal(w)
		n.out.Write(append(b, '\n'))
		if report != nil {
			report(w)
		}
	}
	return out
}

// HealAll heals whatever fault is in force. Safe to call at any time.
func (n *Nemesis) HealAll() {
	n.mu.Lock()
	heal := n.active
	n.active = nil
	n.mu.Unlock()
	if heal != nil {
		heal()
	}
	if n.c.net != nil {
		_ = n.c.net.Apply(nil)
		for _, node := range n.c.Nodes {
			_ = n.c.net.SetShardLink(node.ID, n.c.Shards, -1)
		}
	}
	for _, p := range n.c.Procs() {
		if p.Running() {
			_ = p.Signal(syscall.SIGCONT)
		}
	}
	for _, d := range n.c.disks {
		_ = d.Drain()
	}
	for _, node := range n.c.Nodes {
		_ = os.WriteFile(node.FailpointFile, []byte(failpointBase), 0o644)
	}
}

func (n *Nemesis) setActive(heal func()) {
	n.mu.Lock()
	n.active = heal
	n.mu.Unlock()
}

// one runs one fault window.
func (n *Nemesis) one(ctx context.Context, i int, f Fault) *Window {
	w := &Window{N: i, Fault: f, Start: time.Now()}
	n.poll.Poll(ctx)
	leader, term := n.poll.Leader(f.Shard)
	w.LeaderBefore, w.TermBefore = leader, term
	heal, err := n.apply(ctx, w, f, leader)
	if err != nil {
		w.Err = err.Error()
	}
	if heal != nil {
		n.setActive(heal)
		sleepCtx(ctx, f.Hold)
		if leaderTargeted[f.Class] && err == nil {
			// An election can take longer than a short hold (a lagging
			// voter, split votes): keep the fault until the shard's
			// leader changes, for a bounded while.
			waitFor(maxElectionWait, func() bool {
				if ctx.Err() != nil {
					return true
				}
				n.poll.Poll(ctx)
				l, t := n.poll.Leader(f.Shard)
				return l != w.LeaderBefore || t > w.TermBefore
			})
		}
		n.poll.Poll(ctx)
		n.afterHold(w, f)
		n.setActive(nil)
		heal()
	}
	w.Healed = time.Now()
	n.recover(ctx, w)
	w.Recovered = time.Now()
	return w
}

// afterHold checks, before healing, what can only be seen after a while:
// a leader change, drop counters.
func (n *Nemesis) afterHold(w *Window, f Fault) {
	l, t := n.poll.Leader(f.Shard)
	w.LeaderAfter, w.TermAfter = l, t
	if leaderTargeted[f.Class] {
		changed := w.LeaderBefore != "" && (l != w.LeaderBefore || t > w.TermBefore)
		w.LeaderChanged = &changed
	}
	switch f.Class {
	case LossyLink:
		d, err := Dropped(bridgeNS, "bridge")
		w.Verified = err == nil && d > 0
		w.Verify = fmt.Sprintf("bridge dropped %d packets", d)
	case ShardLink:
		d, err := Dropped(n.c.net.NS(w.Target), "inet")
		w.Verified = err == nil && d > 0
		w.Verify = fmt.Sprintf("%s dropped %d packets of shard %d's Raft connections", w.Target, d, f.Shard)
	}
}

// follower returns a node other than leader, chosen by f.Node.
func (n *Nemesis) follower(f Fault, leader string) *Node {
	var others []*Node
	for _, node := range n.c.Nodes {
		if node.ID != leader {
			others = append(others, node)
		}
	}
	return others[f.Node%len(others)]
}

// apply starts the fault and verifies it took effect. It returns the
// function that heals it.
func (n *Nemesis) apply(ctx context.Context, w *Window, f Fault, leader string) (func(), error) {
	if leaderTargeted[f.Class] && leader == "" {
		return nil, fmt.Errorf("shard %d has no known leader", f.Shard)
	}
	switch f.Class {
	case KillLeader, KillFollower:
		node := n.c.Node(leader)
		if f.Class == KillFollower || node == nil {
			node = n.follower(f, leader)
		}
		w.Target = node.ID
		if err := node.Kill(); err != nil {
			return nil, err
		}
		up := n.c.cl.healthy(ctx, node.HTTP)
		w.Verified = !node.Running() && !up
		w.Verify = fmt.Sprintf("%s exited (SIGKILL) and refuses connections", node.ID)
		return func() { n.restart(ctx, w, node.Proc) }, nil
	case PauseLeader, PauseFollower:
		node := n.c.Node(leader)
		if f.Class == PauseFollower || node == nil {
			node = n.follower(f, leader)
		}
		w.Target = node.ID
		return n.pause(w, node.Proc)
	case SlowNode:
		node := n.c.Nodes[f.Node]
		w.Target = node.ID
		return n.slow(w, node.Proc)
	case ProxyKill:
		w.Target = "proxy"
		if err := n.c.Proxy.Kill(); err != nil {
			return nil, err
		}
		up := n.c.cl.healthy(ctx, n.c.ProxyAddr)
		w.Verified = !n.c.Proxy.Running() && !up
		w.Verify = "proxy exited (SIGKILL) and refuses connections"
		return func() { n.restart(ctx, w, n.c.Proxy) }, nil
	case ProxyPause:
		w.Target = "proxy"
		return n.pause(w, n.c.Proxy)
	case DiskFull:
		return n.diskFull(ctx, w, f)
	case FsyncError, CrashPoint:
		return n.failpoint(ctx, w, f, leader)
	}
	if n.c.net == nil {
		return nil, fmt.Errorf("%s needs root", f.Class)
	}
	return n.partition(w, f, leader)
}

func (n *Nemesis) pause(w *Window, p *Proc) (func(), error) {
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		return nil, err
	}
	w.Verified = waitFor(time.Second, p.Stopped)
	w.Verify = fmt.Sprintf("%s stopped (SIGSTOP, state T)", p.Name)
	return func() {
		_ = p.Signal(syscall.SIGCONT)
		w.HealVerified = waitFor(time.Second, func() bool { return !p.Stopped() })
	}, nil
}

// slow pauses a node in a duty cycle: 200 ms stopped, 300 ms running.
func (n *Nemesis) slow(w *Window, p *Proc) (func(), error) {
	stop := make(chan struct{})
	done := make(chan struct{})
	var seen sync.Once
	stopped := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if p.Signal(syscall.SIGSTOP) == nil {
				time.Sleep(20 * time.Millisecond)
				if p.Stopped() {
					seen.Do(func() { close(stopped) })
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(180 * time.Millisecond):
			}
			_ = p.Signal(syscall.SIGCONT)
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	select {
	case <-stopped:
		w.Verified = true
	case <-time.After(2 * time.Second):
	}
	w.Verify = fmt.Sprintf("%s cycles 200ms stopped / 300ms running", p.Name)
	return func() {
		close(stop)
		<-done
		_ = p.Signal(syscall.SIGCONT)
		w.HealVerified = waitFor(time.Second, func() bool { return !p.Stopped() })
	}, nil
}

// restart heals a kill: the process starts again with its data.
func (n *Nemesis) restart(ctx context.Context, w *Window, p *Proc) {
	if err := n.c.Restart(ctx, p); err != nil {
		w.HealMsg = err.Error()
		return
	}
	w.HealVerified = true
}

func waitFor(d time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if ok() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recover restarts whatever died and waits until every shard has a
// leader and the proxy answers.
func (n *Nemesis) recover(ctx context.Context, w *Window) {
	for _, p := range n.c.Procs() {
		if !p.Running() {
			w.note("%s was down after the heal: restarted", p.Name)
			if err := n.c.Restart(ctx, p); err != nil {
				w.note("restart %s: %v", p.Name, err)
			}
		}
		p.ExpectDeath(false)
	}
	ok := waitFor(30*time.Second, func() bool {
		if ctx.Err() != nil {
			return true
		}
		n.poll.Poll(ctx)
		return n.poll.AllLed() && n.c.cl.healthy(ctx, n.c.ProxyAddr)
	})
	if !ok {
		w.note("the cluster had not recovered 30s after the heal")
	}
	if n.CatchUp && ctx.Err() == nil && !n.caughtUp(ctx, 20*time.Second) {
		w.note("a replica had not caught up 20s after the heal")
	}
}

// caughtUp waits until every replica of every shard has applied at least
// the seq the most advanced replica of that shard had applied when the
// wait began, so that the next fault meets a cluster whose replicas are
// all current (no follower still installing a snapshot, say).
func (n *Nemesis) caughtUp(ctx context.Context, d time.Duration) bool {
	n.poll.Poll(ctx)
	target := map[int]uint64{}
	for _, v := range n.poll.States() {
		target[v.Shard] = max(target[v.Shard], v.AppliedSeq)
	}
	return waitFor(d, func() bool {
		if ctx.Err() != nil {
			return true
		}
		n.poll.Poll(ctx)
		st := n.poll.States()
		for s := 0; s < n.c.Shards; s++ {
			for _, node := range n.c.Nodes {
				v, ok := st[fmt.Sprintf("%s/%d", node.ID, s)]
				if !ok || v.AppliedSeq < target[s] {
					return false
				}
			}
		}
		return true
	})
}

// partition installs bridge rules and verifies them with connection
// probes between the members' namespaces.
func (n *Nemesis) partition(w *Window, f Fault, leader string) (func(), error) {
	nodes := []string{"n1", "n2", "n3"}
	var cuts [][2]string // links cut both ways
	var rules []Rule
	percent := 0
	switch f.Class {
	case IsolateNode, IsolateLeader:
		x := nodes[f.Node]
		if f.Class == IsolateLeader {
			x = leader
		}
		w.Target = x
		for _, o := range append(slices.Clone(nodes), "proxy") {
			if o != x {
				cuts = append(cuts, [2]string{x, o})
			}
		}
	case DeposedLeader:
		w.Target = leader
		for _, o := range nodes {
			if o != leader {
				cuts = append(cuts, [2]string{leader, o})
			}
		}
		w.note("%s keeps its link to the proxy", leader)
	case Halves:
		m := nodes[f.Node]
		w.Target = m
		var major []string
		for _, o := range nodes {
			if o != m {
				major = append(major, o)
				cuts = append(cuts, [2]string{m, o})
			}
		}
		if f.Flip {
			w.note("the proxy is with the minority %s", m)
			for _, o := range major {
				cuts = append(cuts, [2]string{"proxy", o})
			}
		} else {
			w.note("the proxy is with the majority %s", strings.Join(major, ","))
			cuts = append(cuts, [2]string{"proxy", m})
		}
	case Bridge:
		perm := []int{0, 1, 2}
		mid := f.Node
		a, c := perm[(mid+1)%3], perm[(mid+2)%3]
		w.Target = fmt.Sprintf("%s-%s-%s", nodes[a], nodes[mid], nodes[c])
		cuts = append(cuts, [2]string{nodes[a], nodes[c]})
	case LossyLink:
		x := nodes[f.Node]
		w.Target = x
		percent = 30
		for _, o := range append(slices.Clone(nodes), "proxy") {
			if o != x {
				rules = append(rules, Rule{From: x, To: o, Percent: percent}, Rule{From: o, To: x, Percent: percent})
			}
		}
	case ShardLink:
		w.Target = leader
		if err := n.c.net.SetShardLink(leader, n.c.Shards, f.Shard); err != nil {
			return nil, err
		}
		w.Verify = "pending drop counters"
		return func() {
			err := n.c.net.SetShardLink(leader, n.c.Shards, -1)
			w.HealVerified = err == nil
			if err != nil {
				w.HealMsg = err.Error()
			}
		}, nil
	default:
		return nil, fmt.Errorf("unknown fault class %q", f.Class)
	}
	for _, c := range cuts {
		rules = append(rules, Rule{From: c[0], To: c[1]}, Rule{From: c[1], To: c[0]})
	}
	if err := n.c.net.Apply(rules); err != nil {
		return nil, err
	}
	if percent == 0 {
		w.Verified, w.Verify = n.probeCuts(cuts)
	} else {
		w.Verify = "pending drop counters"
	}
	return func() {
		if err := n.c.net.Apply(nil); err != nil {
			w.HealMsg = err.Error()
			return
		}
		w.HealVerified, w.HealMsg = n.probeCuts(nil)
	}, nil
}

// probeCuts checks every pair of members: a cut pair must not connect
// (either way), every other pair must.
func (n *Nemesis) probeCuts(cuts [][2]string) (bool, string) {
	members := []string{"n1", "n2", "n3", "proxy"}
	cut := map[[2]string]bool{}
	for _, c := range cuts {
		cut[c], cut[[2]string{c[1], c[0]}] = true, true
	}
	type res struct {
		from, to  string
		want, got bool
	}
	ch := make(chan res, 16)
	k := 0
	for _, a := range members {
		for _, b := range members {
			if a == b || b == "proxy" && !n.c.Proxy.Running() {
				continue
			}
			if node := n.c.Node(b); node != nil && !node.Running() {
				continue
			}
			k++
			go func() {
				addr := n.c.ProxyAddr
				if node := n.c.Node(b); node != nil {
					addr = node.HTTP
				}
				ch <- res{a, b, !cut[[2]string{a, b}], n.c.net.Probe(a, addr, 400*time.Millisecond)}
			}()
		}
	}
	ok := true
	var bad []string
	for range k {
		r := <-ch
		if r.got != r.want {
			ok = false
			bad = append(bad, fmt.Sprintf("%s->%s connects=%v", r.from, r.to, r.got))
		}
	}
	if ok {
		return true, fmt.Sprintf("%d probes as expected (%d links cut)", k, len(cuts))
	}
	slices.Sort(bad)
	return false, "probes: " + strings.Join(bad, ", ")
}

func (n *Nemesis) diskFull(ctx context.Context, w *Window, f Fault) (func(), error) {
	node := n.c.Nodes[f.Node]
	w.Target = node.ID
	d := n.c.disks[node.ID]
	if d == nil {
		return nil, fmt.Errorf("%s has no loop-mounted disk", node.ID)
	}
	node.ExpectDeath(true)
	left, err := d.Fill()
	if err != nil {
		return func() { _ = d.Drain() }, err
	}
	w.Verified = left == 0
	w.Verify = fmt.Sprintf("%s's filesystem filled (%d bytes left)", node.ID, left)
	return func() {
		if !node.Running() {
			w.note("%s stopped while its disk was full", node.ID)
		}
		if err := d.Drain(); err != nil {
			w.HealMsg = err.Error()
		}
		w.HealVerified = d.Free() > 1<<20
		if !node.Running() {
			n.restart(ctx, w, node.Proc)
		}
	}, nil
}

// failpointBase is the failpoint file's content when nothing is armed:
// frequent snapshots, so that snapshot, restore and the snapshot crash
// point happen within a short run.
const failpointBase = "snapshot-threshold 256\nsnapshot-interval 2s\n"

// failpoint arms an fsync error or a crash point on the leader of the
// fault's shard and waits for the node to stop.
func (n *Nemesis) failpoint(ctx context.Context, w *Window, f Fault, leader string) (func(), error) {
	node := n.c.Node(leader)
	if node == nil {
		node = n.c.Nodes[f.Node]
	}
	w.Target = node.ID
	arm := "fsync-error error"
	if f.Class == CrashPoint {
		arm = "crash-" + f.Variant + " crash"
	}
	node.ExpectDeath(true)
	if err := os.WriteFile(node.FailpointFile, []byte(failpointBase+arm+"\n"), 0o644); err != nil {
		return nil, err
	}
	disarm := func() { _ = os.WriteFile(node.FailpointFile, []byte(failpointBase), 0o644) }
	died := node.WaitExit(f.Hold + 5*time.Second)
	disarm()
	w.Verified = died
	w.Verify = fmt.Sprintf("%s armed %q and stopped", node.ID, arm)
	if !died {
		w.Verify = fmt.Sprintf("%s armed %q but did not stop", node.ID, arm)
	}
	return func() { n.restart(ctx, w, node.Proc) }, nil
}
