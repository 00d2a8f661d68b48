// Package cluster runs one Raft group: hashicorp/raft with raft-boltdb/v2
// for the log and stable store (the log in one store shared by the node's
// groups, SharedLog), file snapshots, a transport on a shared
// port, bootstrap and membership, leadership observation and the barrier
// behind linearizable reads. It knows nothing of the ledger: any raft.FSM
// will do.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"tally/internal/failpoint"
)

// Sentinel errors, matched with errors.Is across layers.
var (
	// ErrNotLeader: this replica does not lead the group; nothing was
	// applied. A *NotLeaderError carries the leader, if known.
	ErrNotLeader = errors.New("not the leader")
	// ErrUnavailable: the command was not appended (queue full, no
	// leader, shutting down before enqueue); nothing was applied.
	ErrUnavailable = errors.New("unavailable")
	// ErrOutcomeUnknown: the command may or may not commit (leadership
	// lost after append, deadline passed while waiting).
	ErrOutcomeUnknown = errors.New("outcome unknown")
)

// NotLeaderError names the leader, when one is known.
type NotLeaderError struct {
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "not the leader; no leader known"
	}
	return "not the leader; leader is " + e.LeaderID
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// Timing holds the Raft timeouts.
type Timing struct {
	Heartbeat   time.Duration
	Election    time.Duration
	LeaderLease time.Duration
}

// DefaultTiming is the starting point: 1 s heartbeat and election
// timeouts, a 500 ms lease, which ride out a loaded machine's pauses.
var DefaultTiming = Timing{Heartbeat: time.Second, Election: time.Second, LeaderLease: 500 * time.Millisecond}

// Config describes one group on this node.
type Config struct {
	NodeID  string // this node's id (the Raft ServerID)
	Addr    string // this node's advertised Raft address
	Dir     string // the group's Raft directory (log store and snapshots)
	FSM     raft.FSM
	Applied func() uint64 // the FSM's persisted applied index, for the boot rule
	Layer   raft.StreamLayer
	Logger  *slog.Logger
	Timing  Timing
	// Bootstrap makes this node the only voter of a new group; ignored
	// when the group already has state.
	Bootstrap bool
	// SnapshotThreshold and TrailingLogs default to 4096 entries.
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// Fence is a no-op command that the FSM applies like any other. A new
	// leader applies it as its term's barrier instead of raft.Barrier:
	// Raft hands neither barriers nor no-ops to the FSM, so a read index
	// pointing at one could never be waited for with the FSM's own
	// applied index. Nil uses raft.Barrier.
	Fence []byte
	// Transport and Store override the TCP transport and the bolt store,
	// for in-process tests.
	Transport raft.Transport
	Store     Store
	// Logs, if set, keeps the group's log in the node's shared log store
	// (SharedLog) and raft.db only for the term and the vote; a log an
	// older build left in raft.db is moved over at open.
	Logs      *ShardLog
	Snapshots raft.SnapshotStore
	// WrapSnapshots, if set, wraps the snapshot store: the FSM's snapshots
	// are markers that its wrapper opens as full streams (fsm.SnapshotStore).
	WrapSnapshots func(raft.SnapshotStore) raft.SnapshotStore
}

// Store is a log and stable store; raft-boltdb/v2 by default, kept behind
// an interface so another (raft-wal) can be compared.
type Store interface {
	raft.LogStore
	raft.StableStore
}

// Group is a running Raft group. Its methods are safe for concurrent use.
type Group struct {
	cfg     Config
	r       *raft.Raft
	store   Store
	closer  io.Closer
	trans   raft.Transport
	log     *slog.Logger
	notify  chan bool
	barrier atomic.Uint64 // the term whose barrier this leader has applied
	bmu     sync.Mutex    // serialises barriers
	ver     verifier
	once    sync.Once
}

// Open starts the group. It applies the boot rule: the newest snapshot is
// restored at start only when the FSM's own state is behind it, because
// with NoSnapshotRestoreOnStart Raft replays only the entries after the
// snapshot, and a state that lost its last writes would miss the ones in
// between.
func Open(cfg Config) (*Group, error) {
	if cfg.Timing == (Timing{}) {
		cfg.Timing = DefaultTiming
	}
	if cfg.SnapshotThreshold == 0 {
		cfg.SnapshotThreshold = 4096
	}
	if cfg.TrailingLogs == 0 {
		cfg.TrailingLogs = 4096
	}
	if failpoint.Enabled {
		// Fault runs shorten these so that snapshots, their restore and
		// the snapshot crash point happen within minutes.
		if n := failpoint.Int("snapshot-threshold"); n > 0 {
			cfg.SnapshotThreshold, cfg.TrailingLogs = uint64(n), uint64(n)
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("raft dir: %w", err)
	}
	hl := hclogFor(cfg.Logger)
	g := &Group{cfg: cfg, log: cfg.Logger, notify: make(chan bool, 16)}
	if err := g.openStores(hl); err != nil {
		return nil, err
	}
	snaps := g.cfg.Snapshots
	list, err := snaps.List()
	if err != nil {
		g.closeStores()
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	rc := raftConfig(cfg, hl)
	rc.NotifyCh = g.notify
	applied := cfg.Applied()
	rc.NoSnapshotRestoreOnStart = len(list) == 0 || applied >= list[0].Index
	if len(list) > 0 {
		g.log.Info("boot", "applied_index", applied, "snapshot_index", list[0].Index,
			"restore_snapshot", !rc.NoSnapshotRestoreOnStart)
	}
	if cfg.Bootstrap {
		if err := g.bootstrap(rc, snaps); err != nil {
			g.closeStores()
			return nil, err
		}
	}
	r, err := raft.NewRaft(rc, cfg.FSM, g.store, g.store, snaps, g.trans)
	if err != nil {
		g.closeStores()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	g.r = r
	return g, nil
}

func raftConfig(cfg Config, hl hclog.Logger) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.Timing.Heartbeat
	rc.ElectionTimeout = cfg.Timing.Election
	rc.LeaderLeaseTimeout = cfg.Timing.LeaderLease
	// The 50 ms default adds latency when a pipeline has leftovers.
	rc.CommitTimeout = 10 * time.Millisecond
	rc.MaxAppendEntries = MaxAppendEntries
	// Lets the FSM take committed entries in batches (BatchingFSM).
	rc.BatchApplyCh = true
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.SnapshotInterval = 30 * time.Second
	if failpoint.Enabled {
		if d := failpoint.Duration("snapshot-interval"); d > 0 {
			rc.SnapshotInterval = d
		}
	}
	rc.Logger = hl
	return rc
}

func (g *Group) openStores(hl hclog.Logger) error {
	cfg := &g.cfg
	if cfg.Store == nil {
		st, closer, err := openLogStores(cfg.Dir, cfg.Logs, g.log)
		if err != nil {
			return err
		}
		g.store, g.closer = st, closer
	} else {
		g.store = cfg.Store
	}
	if cfg.Snapshots == nil {
		fs, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hl)
		if err != nil {
			g.closeStores()
			return fmt.Errorf("snapshot store: %w", err)
		}
		cfg.Snapshots = fs
	}
	if cfg.WrapSnapshots != nil {
		cfg.Snapshots = cfg.WrapSnapshots(cfg.Snapshots)
	}
	g.trans = cfg.Transport
	if g.trans == nil {
		g.trans = serialTransport{raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: cfg.Layer, MaxPool: 3, Timeout: 10 * time.Second, Logger: hl})}
	}
	return nil
}

// openLogStores opens dir/raft.db. Without a shared log it holds the log,
// the term and the vote; with one, only the term and the vote, and the log
// goes to logs, with raft's LogCache above it either way.
func openLogStores(dir string, logs *ShardLog, log *slog.Logger) (Store, io.Closer, error) {
	path := filepath.Join(dir, "raft.db")
	var old spans
	if logs != nil {
		var err error
		if old, err = legacyLogs(path); err != nil {
			return nil, nil, fmt.Errorf("read old raft log: %w", err)
		}
	}
	// Sync stays on: the same file holds the term and the vote.
	bs, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: boltOptions()})
	if err != nil {
		return nil, nil, fmt.Errorf("open raft log: %w", err)
	}
	var ls raft.LogStore = bs
	if logs != nil {
		if len(old) > 0 {
			n, err := logs.migrate(bs, old)
			if err != nil {
				bs.Close()
				return nil, nil, fmt.Errorf("move raft log to the shared store: %w", err)
			}
			if log != nil {
				log.Info("raft log moved to the shared store", "entries", n, "first", old[0].lo, "last", old[len(old)-1].hi)
			}
		}
		ls = logs
	}
	cache, err := raft.NewLogCache(logCache, ls)
	if err != nil {
		bs.Close()
		return nil, nil, fmt.Errorf("log cache: %w", err)
	}
	return struct {
		raft.LogStore
		raft.StableStore
	}{cache, bs}, bs, nil
}

// logCache is how many recent entries each group keeps in memory for
// followers' appends: enough for a follower a few batches behind. With
// 512, a node of 4 shards under batched load held about 55 MiB of them.
const logCache = 128

// serialTransport is hashicorp/raft's NetworkTransport without its
// heartbeat fast path. With the fast path, a heartbeat is handled on its
// connection's goroutine, and one from a newer leader raises the term and
// demotes the node while the node's main loop may still be dispatching a
// batch as leader: that batch is written with the new term at the indexes
// where the new leader writes its own entries, both logs hold different
// entries with the same index and term, and the replicas diverge
// (hashicorp/raft#695). The fault suite caught it when a paused leader
// woke up (test/README.md). Without a heartbeat handler every RPC,
// heartbeats included, runs on the main loop. Every other method,
// RequestPreVote included, is the NetworkTransport's own, so pre-vote
// stays on.
type serialTransport struct{ *raft.NetworkTransport }

// SetHeartbeatHandler ignores the handler: see serialTransport.
func (serialTransport) SetHeartbeatHandler(func(raft.RPC)) {}

func (g *Group) closeStores() {
	if g.closer != nil {
		g.closer.Close()
	}
	if c, ok := g.trans.(io.Closer); ok && g.cfg.Transport == nil {
		c.Close()
	}
}

func (g *Group) bootstrap(rc *raft.Config, snaps raft.SnapshotStore) error {
	has, err := raft.HasExistingState(g.store, g.store, snaps)
	if err != nil {
		return fmt.Errorf("check raft state: %w", err)
	}
	if has {
		return nil
	}
	conf := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: raft.ServerAddress(g.cfg.Addr)}}}
	if err := raft.BootstrapCluster(rc, g.store, g.store, snaps, g.trans, conf); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	return nil
}

// LeaderChanges delivers true when this node becomes leader and false
// when it stops being leader. Only one goroutine may receive from it.
func (g *Group) LeaderChanges() <-chan bool { return g.notify }

// Raft returns the underlying Raft, for status and tests.
func (g *Group) Raft() *raft.Raft { return g.r }

// IsLeader reports whether this replica believes it leads the group.
func (g *Group) IsLeader() bool { return g.r.State() == raft.Leader }

// Leader returns the leader's id and Raft address, if known.
func (g *Group) Leader() (id, addr string) {
	a, i := g.r.LeaderWithID()
	return string(i), string(a)
}

func (g *Group) notLeader() error {
	id, addr := g.Leader()
	return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
}

// Apply proposes data and waits for this replica's FSM to apply it,
// returning the FSM's response. Errors say whether the command may have
// been applied: ErrNotLeader and ErrUnavailable mean it was not;
// ErrOutcomeUnknown means it may commit later.
func (g *Group) Apply(ctx context.Context, data []byte) (interface{}, error) {
	if !g.IsLeader() {
		return nil, g.notLeader()
	}
	timeout := time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	return g.Propose(data, timeout).Wait(ctx)
}

// wait waits for a future or the context, whichever ends first. When the
// context ends first the future is left to finish on its own.
func wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close shuts the group down. It is idempotent.
func (g *Group) Close() error {
	var err error
	g.once.Do(func() {
		if g.r != nil {
			err = g.r.Shutdown().Error()
		}
		g.closeStores()
	})
	return err
}

// hclogFor bridges hashicorp/raft's hclog to slog, once per group.
func hclogFor(l *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Info,
		Output: slogWriter{l}, DisableTime: true})
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	switch {
	case strings.Contains(msg, "[ERROR]"):
		level = slog.LevelError
	case strings.Contains(msg, "[WARN]"):
		level = slog.LevelWarn
	case strings.Contains(msg, "[DEBUG]"), strings.Contains(msg, "[TRACE]"):
		level = slog.LevelDebug
	}
	w.l.Log(context.Background(), level, msg)
	return len(p), nil
}

// Proposal is a command handed to Raft, not yet known to be applied.
type Proposal struct {
	g *Group
	f raft.ApplyFuture
}

// Propose hands data to Raft without waiting. Proposals made one after
// another from one goroutine enter the log in that order.
func (g *Group) Propose(data []byte, timeout time.Duration) *Proposal {
	return &Proposal{g: g, f: g.r.Apply(data, timeout)}
}

// Wait waits for the proposal to be applied on this replica and returns
// the FSM's response, with the errors of Apply.
func (p *Proposal) Wait(ctx context.Context) (interface{}, error) {
	err := wait(ctx, p.f)
	switch {
	case err == nil:
		return p.f.Response(), nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return nil, p.g.notLeader()
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	default:
		return nil, fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
	}
}

// MaxAppendEntries is how many entries one AppendEntries carries: a
// follower within this many entries of the commit index is caught up but
// for one batch in flight.
const MaxAppendEntries = 128
