// Package nemesis is the fault suite's fault injector: every fault class
// behind one interface, registered once, one file per family (process,
// network, disk, failpoint), and the runner that applies a seeded
// schedule of them to a running cluster.
//
// A class is applied, verified to have taken effect, held, healed and
// verified healed; the next starts once every shard has a leader again.
// The harness implements Cluster and Observer over its processes,
// network, disks and leader poller; this package knows nothing of how
// they are launched.
package nemesis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Fault is one fault class. Its methods are called by the runner, one
// window at a time; a class keeps nothing between calls but what it
// stores in the window.
type Fault interface {
	// Name is the class as written in -faults, schedules and reports.
	Name() string
	// Available returns nil when a run with env can apply the class, or
	// why it cannot (ErrNeedsRoot, ErrNeedsFailpoints).
	Available(env Env) error
	// Traits says how the schedule and the runner treat the class.
	Traits() Traits
	// Inject starts the fault described by w.Fault and returns once it
	// is in force. It sets w.Target. An error means it did not start
	// (or only in part: Heal is still called).
	Inject(ctx context.Context, c Cluster, w *Window) error
	// Verify checks, after the hold and before the heal, that the fault
	// took effect, and sets w.Verified and w.Verify.
	Verify(ctx context.Context, c Cluster, w *Window)
	// Heal undoes the fault and sets w.HealVerified (and w.HealMsg when
	// the heal could not be confirmed).
	Heal(ctx context.Context, c Cluster, w *Window)
}

// Traits are what the schedule and the runner need to know of a class
// besides its actions.
type Traits struct {
	// Leader: the class aims at the leader of the window's shard. Such a
	// fault needs a known leader, stays (a bounded while) until the
	// shard elects another, and a window that changed no leader makes
	// the run unknown.
	Leader bool
	// Variants: the schedule picks one per window (which crash point).
	Variants []string
	// OptIn: the class runs only when -faults names it. Keeping it out
	// of the default set keeps the schedules of old seeds, and the CI
	// profile's time: its window grows with restarts and catch-ups.
	OptIn bool
}

// Env is what a run offers the faults.
type Env struct {
	Root       bool // network namespaces, nftables and loop mounts are available
	Failpoints bool // the tally binary was built with the failpoints tag
}

// Why a class is not available.
var (
	ErrNeedsRoot       = errors.New("needs root (network namespaces, nftables, a loop mount)")
	ErrNeedsFailpoints = errors.New("needs a failpoints build (-tags failpoints)")
)

// registry is every fault class, in the order that seeds map to
// schedules: the CI profile shuffles this order and random profiles draw
// from it by index, so appending keeps old seeds' schedules and
// reordering changes them. Each class is declared in its family's file.
var registry = []Fault{
	killLeader, killFollower, pauseLeader, pauseFollower, slowNode,
	isolateNode, isolateLeader, halves, bridge, shardLink, deposedLeader, lossyLink,
	proxyKill, proxyPause,
	diskFull,
	fsyncError, crashPoint,
	membership, rollingRestart,
	backupFault,
}

// All returns every registered class, in registry order.
func All() []Fault { return append([]Fault(nil), registry...) }

// Names returns the name of every registered class, in registry order.
func Names() []string {
	out := make([]string, len(registry))
	for i, f := range registry {
		out[i] = f.Name()
	}
	return out
}

// Lookup returns the class called name.
func Lookup(name string) (Fault, bool) {
	for _, f := range registry {
		if f.Name() == name {
			return f, true
		}
	}
	return nil, false
}

// Parse reads a comma-separated list of class names (the -faults flag)
// and refuses a name that is not registered. An empty list is nil: all.
func Parse(list string) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	var out []string
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if _, ok := Lookup(name); !ok {
			return nil, fmt.Errorf("unknown fault class %q (known: %s)", name, strings.Join(Names(), ","))
		}
		out = append(out, name)
	}
	return out, nil
}

// Defaults returns the classes a run applies when -faults names none:
// every registered class but the opt-in ones, in registry order.
func Defaults() []string {
	var out []string
	for _, f := range registry {
		if !f.Traits().OptIn {
			out = append(out, f.Name())
		}
	}
	return out
}

// Available returns the classes of want (the defaults when want is
// empty) that a run with env can apply, in the order given.
func Available(want []string, env Env) []string {
	if len(want) == 0 {
		want = Defaults()
	}
	var out []string
	for _, name := range want {
		if f, ok := Lookup(name); ok && f.Available(env) == nil {
			out = append(out, name)
		}
	}
	return out
}

// Unavailable returns the registered classes a run with env cannot
// apply, with the reason of each.
func Unavailable(env Env) map[string]error {
	out := map[string]error{}
	for _, f := range registry {
		if err := f.Available(env); err != nil {
			out[f.Name()] = err
		}
	}
	return out
}

// Partial reports whether a run with env leaves out classes for want of
// root: such a run is never a pass.
func Partial(env Env) bool {
	for _, err := range Unavailable(env) {
		if errors.Is(err, ErrNeedsRoot) {
			return true
		}
	}
	return false
}

// Cluster is the running cluster as a fault sees it: nodes by id ("n1",
// "n2", "n3"), the proxy by the name "proxy". Safe for concurrent use.
type Cluster interface {
	Shards() int
	// Nodes returns the node ids in a fixed order.
	Nodes() []string
	// Proc returns the process of a node or of the proxy.
	Proc(name string) Proc
	// Healthy reports whether a node or the proxy answers HTTP.
	Healthy(ctx context.Context, name string) bool
	// Restart starts a stopped node or proxy again with its data and
	// waits until it answers.
	Restart(ctx context.Context, name string) error
	// Net is the private network, nil when the run is not root.
	Net() Network
	// Disk is a node's loop-mounted filesystem, nil when it has none.
	Disk(node string) Disk
	// SetFailpoints replaces the content of a node's failpoint file,
	// which a failpoints build reads while it runs.
	SetFailpoints(node, content string) error
	// Members returns each shard's replicas as the cluster reports them
	// (GET /v1/cluster through a node that answers).
	Members(ctx context.Context) ([]ShardMembers, error)
	// Leave removes a node from every shard (POST /v1/cluster/leave,
	// sent to another node).
	Leave(ctx context.Context, node string) error
	// Rejoin stops a node, deletes its data and starts it again with
	// --join: a new member that catches up from nothing. It returns once
	// the node answers.
	Rejoin(ctx context.Context, node string) error
	// Backup runs the real binary's `tally backup FILE --json` through
	// the proxy, from where the clients run, writing the file called name
	// into the run's store. It returns the file's path and what the
	// command printed on standard output.
	Backup(ctx context.Context, name string) (path string, out []byte, err error)
	// InspectBackup runs `tally backup inspect FILE --json` and returns
	// what it printed.
	InspectBackup(ctx context.Context, path string) ([]byte, error)
}

// ShardMembers is one shard's Raft group as the cluster reports it.
type ShardMembers struct {
	Shard    int
	Leader   string
	Replicas []Member
}

// Member is one replica of a shard.
type Member struct {
	Node  string
	Voter bool
	State string // leader, follower, ..., unknown, unreachable
	Lag   uint64 // Raft entries behind the leader's commit index
}

// Proc is one node or proxy process.
type Proc interface {
	// Kill sends SIGKILL and waits (bounded) for the exit.
	Kill() error
	Signal(sig syscall.Signal) error
	Running() bool
	// Stopped reports whether the kernel shows the process stopped.
	Stopped() bool
	// WaitExit waits up to d for the process to end.
	WaitExit(d time.Duration) bool
	// ExpectDeath marks the process as one a fault may crash, so that
	// its exit is not reported as unexpected.
	ExpectDeath(bool)
	// Pid is the running process's id, 0 when it is not running.
	Pid() int
}

// Network is the run's private network: members are the node ids and
// "proxy".
type Network interface {
	// Apply replaces the bridge's drop rules with rules, atomically; nil
	// heals every link.
	Apply(rules []Rule) error
	// CutShard drops every Raft connection of one shard in a node's own
	// namespace; shard < 0 heals it.
	CutShard(node string, shard int) error
	// Probe reports whether a TCP connection from one member to another's
	// HTTP port opens within d.
	Probe(from, to string, d time.Duration) bool
	// BridgeDropped counts the packets the bridge rules dropped so far.
	BridgeDropped() (int64, error)
	// ShardDropped counts the packets a node's shard rules dropped so far.
	ShardDropped(node string) (int64, error)
}

// Rule is one bridge rule: drop packets from one member to another,
// optionally only a percentage of them.
type Rule struct {
	From, To string
	Percent  int // 0 or 100: drop all; otherwise drop this share at random
}

// Disk is a node's small loop-mounted filesystem.
type Disk interface {
	// Fill allocates every free block and reports the bytes left.
	Fill() (int64, error)
	// Drain removes what Fill allocated.
	Drain() error
	// Free reports the bytes available.
	Free() int64
}

// Observer is the runner's view of the shards' leaders and replicas (the
// harness's leader poller).
type Observer interface {
	// Poll refreshes the view now.
	Poll(ctx context.Context)
	// Leader returns a shard's latest known leader and its term.
	Leader(shard int) (string, uint64)
	// AllLed reports whether every shard has a replica that leads.
	AllLed() bool
	// Applied returns the seq a node's replica of a shard has applied.
	Applied(node string, shard int) (uint64, bool)
}

// aim says which member a class acts on in a window.
type aim int

const (
	aimNode         aim = iota // the window's node index
	aimLeader                  // the shard's leader (a follower if it is not a node)
	aimFollower                // a node other than the shard's leader, by the node index
	aimLeaderOrNode            // the shard's leader if known, else the node index
	aimProxy                   // the proxy
)

// target returns the member aimed at in w.
func (a aim) target(c Cluster, w *Window) string {
	nodes := c.Nodes()
	leader := w.LeaderBefore
	isNode := slices.Contains(nodes, leader)
	switch a {
	case aimLeader:
		if isNode {
			return leader
		}
		return follower(nodes, leader, w.Fault.Node)
	case aimFollower:
		return follower(nodes, leader, w.Fault.Node)
	case aimLeaderOrNode:
		if isNode {
			return leader
		}
	case aimProxy:
		return proxy
	}
	return nodes[w.Fault.Node%len(nodes)]
}

// follower returns a node other than leader, chosen by the index i.
func follower(nodes []string, leader string, i int) string {
	var others []string
	for _, n := range nodes {
		if n != leader {
			others = append(others, n)
		}
	}
	return others[i%len(others)]
}
