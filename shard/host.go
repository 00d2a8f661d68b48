// Package shard places accounts on shards and hosts every shard's Raft
// group in one process: each replica is a cluster.Group over an fsm.FSM
// with a leader-side batcher. The API talks to the Host.
package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"tally/cluster"
	"tally/fsm"
	"tally/ledger"
)

// DefaultShards is the shard count of a new cluster.
const DefaultShards = 4

// MaxShards bounds the shard count (one byte selects a group on the Raft
// port; 2 cores serve 4 to 8 well).
const MaxShards = 64

// Of returns the shard that owns account id.
func Of(id string, shards int) int { return ledger.ShardOf(id, shards) }

// Config describes the node.
type Config struct {
	NodeID    string
	RaftAddr  string // advertised and bound Raft address, shared by all shards
	HTTPAddr  string // advertised HTTP address
	Dir       string
	Shards    int // used when the node has no state yet
	Bootstrap bool
	Timing    cluster.Timing
	Logger    *slog.Logger
	// RaftTLS secures the Raft port with mutual TLS; nil: plaintext.
	RaftTLS *cluster.TLS
	// Transports, when set, gives each shard an in-memory transport
	// instead of TCP (in-process tests).
	Transports func(shard int) raft.Transport
	// Peers carries the calls this host makes to other nodes (saga steps
	// on another shard's leader, health probes). Required.
	Peers Peers
}

// Peers is what a host needs of other nodes; node.Peer implements it.
// Its methods are safe for concurrent use.
type Peers interface {
	// Submit runs cmd on shard i at the node at addr (that shard's
	// leader, or a node that knows it).
	Submit(ctx context.Context, addr string, i int, cmd ledger.Command) ([]ledger.Result, error)
	// Healthy reports whether the node at addr answers, within a short
	// bound.
	Healthy(ctx context.Context, addr string) bool
	// Applied returns the Raft index that the node at addr has applied
	// on shard i: how a leader sees a non-voter's catch-up.
	Applied(ctx context.Context, addr string, i int) (uint64, error)
}

// Host runs one replica of every shard. Its methods are safe for
// concurrent use.
type Host struct {
	cfg      Config
	log      *slog.Logger
	mux      *cluster.Mux
	logs     *cluster.SharedLog // every shard's Raft log, one store
	replicas []*Replica
	gate     sagaGate // held by a backup taking a cut (gate.go)
	stop     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
	// promotions counts the non-voters promoted while this node led.
	promotions atomic.Uint64
}

// Replica is this node's replica of one shard.
type Replica struct {
	ID    int
	FSM   *fsm.FSM
	Group *cluster.Group
	b     *batcher
	saga  *driver
	log   *slog.Logger
	// promoting serialises promotions: a join's own wait and the leader's
	// duty loop may both find the same non-voter caught up, and only one
	// may make it a voter.
	promoting sync.Mutex
}

type nodeFile struct {
	Shards int `json:"shards"`
}

// fence is an entry with no commands: applying it changes nothing but the
// applied index, which is what a term's barrier needs.
var fence = (&ledger.Entry{}).Encode(fsm.AppendHeader(nil, fsm.KindLedger))

// Open starts every shard's replica. The shard count is read from the data
// directory when the node has state, else taken from cfg.Shards and saved.
func Open(cfg Config) (*Host, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n, err := shardCount(cfg.Dir, cfg.Shards)
	if err != nil {
		return nil, err
	}
	cfg.Shards = n
	if cfg.Peers == nil {
		return nil, errors.New("shard: Config.Peers is required")
	}
	h := &Host{cfg: cfg, log: cfg.Logger, stop: make(chan struct{})}
	if cfg.Transports == nil {
		if h.mux, err = cluster.Listen(cfg.RaftAddr, cfg.RaftTLS, h.log); err != nil {
			return nil, err
		}
	}
	if h.logs, err = cluster.OpenSharedLog(filepath.Join(cfg.Dir, "raft-log.db"), n); err != nil {
		h.Close()
		return nil, err
	}
	for i := 0; i < n; i++ {
		r, err := h.openReplica(i)
		if err != nil {
			h.Close()
			return nil, err
		}
		h.replicas = append(h.replicas, r)
	}
	for _, r := range h.replicas {
		h.wg.Add(1)
		go h.lead(r)
	}
	return h, nil
}

func shardCount(dir string, want int) (int, error) {
	path := filepath.Join(dir, "node.json")
	b, err := os.ReadFile(path)
	if err == nil {
		var nf nodeFile
		if err := json.Unmarshal(b, &nf); err != nil || nf.Shards < 1 || nf.Shards > MaxShards {
			return 0, fmt.Errorf("read %s: bad shard count (%v)", path, err)
		}
		return nf.Shards, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	if want == 0 {
		want = DefaultShards
	}
	if want < 1 || want > MaxShards {
		return 0, fmt.Errorf("shards must be 1 to %d, got %d", MaxShards, want)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("data dir: %w", err)
	}
	b, _ = json.Marshal(nodeFile{Shards: want})
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return 0, fmt.Errorf("write %s: %w", path, err)
	}
	return want, nil
}

func (h *Host) openReplica(i int) (*Replica, error) {
	log := h.log.With("shard", i)
	dir := filepath.Join(h.cfg.Dir, fmt.Sprintf("shard-%d", i))
	f, err := fsm.Open(fsm.Options{Dir: filepath.Join(dir, "state"), Shard: i, Shards: h.cfg.Shards, Logger: log})
	if err != nil {
		return nil, err
	}
	gc := cluster.Config{NodeID: h.cfg.NodeID, Addr: h.cfg.RaftAddr, Dir: filepath.Join(dir, "raft"),
		FSM: f, Applied: func() uint64 { idx, _ := f.Applied(); return idx },
		Logger: log, Timing: h.cfg.Timing, Bootstrap: h.cfg.Bootstrap, Fence: fence,
		WrapSnapshots: f.SnapshotStore, Logs: h.logs.Shard(i)}
	if h.cfg.Transports != nil {
		gc.Transport = h.cfg.Transports(i)
	} else {
		gc.Layer = h.mux.Layer(byte(i))
	}
	g, err := cluster.Open(gc)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("shard %d: %w", i, err)
	}
	r := &Replica{ID: i, FSM: f, Group: g, b: newBatcher(g, log), log: log}
	r.saga = newDriver(h, r)
	return r, nil
}

// NodeID returns this node's id.
func (h *Host) NodeID() string { return h.cfg.NodeID }

// HTTPAddr returns this node's advertised HTTP address.
func (h *Host) HTTPAddr() string { return h.cfg.HTTPAddr }

// RaftAddr returns this node's Raft address.
func (h *Host) RaftAddr() string { return h.cfg.RaftAddr }

// Shards returns the number of shards.
func (h *Host) Shards() int { return len(h.replicas) }

// Replica returns this node's replica of shard i.
func (h *Host) Replica(i int) (*Replica, error) {
	if i < 0 || i >= len(h.replicas) {
		return nil, fmt.Errorf("shard %d: %w", i, ErrNoShard)
	}
	return h.replicas[i], nil
}

// LogStats returns the counters of the node's shared Raft log store.
func (h *Host) LogStats() cluster.LogStats { return h.logs.Stats() }

// ErrNoShard is returned for a shard number out of range.
var ErrNoShard = errors.New("no such shard")

// Close stops every replica. It is idempotent.
func (h *Host) Close() error {
	var errs []error
	h.once.Do(func() {
		close(h.stop)
		for _, r := range h.replicas {
			r.b.close()
		}
		for _, r := range h.replicas {
			if err := r.Group.Close(); err != nil {
				errs = append(errs, err)
			}
			if err := r.FSM.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		h.wg.Wait()
		// After the groups: Raft writes its log until it shuts down.
		if h.logs != nil {
			if err := h.logs.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if h.mux != nil {
			h.mux.Close()
		}
	})
	return errors.Join(errs...)
}

// Submit runs a command on shard i's leader, which must be this node, and
// returns its results. Errors wrap cluster.ErrNotLeader (nothing applied;
// *NotLeaderError says where to go), cluster.ErrUnavailable (nothing
// applied) or cluster.ErrOutcomeUnknown.
func (h *Host) Submit(ctx context.Context, i int, cmd ledger.Command) ([]ledger.Result, error) {
	r, err := h.Replica(i)
	if err != nil {
		return nil, err
	}
	if !r.Group.IsLeader() {
		return nil, h.notLeader(r)
	}
	if cmd.Kind == ledger.CmdTransfers {
		done, err := h.gate.pass(ctx, func() bool { return h.startsSaga(&cmd) })
		if err != nil {
			return nil, fmt.Errorf("shard %d: %w", i, err)
		}
		defer done()
	}
	res, err := r.b.submit(ctx, cmd)
	if err != nil {
		var nl *cluster.NotLeaderError
		if errors.As(err, &nl) {
			return nil, h.notLeader(r)
		}
		return nil, fmt.Errorf("shard %d: %w", i, err)
	}
	return res, nil
}

// NotLeaderError says which node leads a shard, with its HTTP address
// from the node directory.
type NotLeaderError struct {
	Shard      int
	LeaderID   string
	LeaderHTTP string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return fmt.Sprintf("shard %d: no leader known", e.Shard)
	}
	return fmt.Sprintf("shard %d: not the leader; leader is %s at %s", e.Shard, e.LeaderID, e.LeaderHTTP)
}

// Is makes errors.Is(err, cluster.ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == cluster.ErrNotLeader }

func (h *Host) notLeader(r *Replica) error {
	id, _ := r.Group.Leader()
	return &NotLeaderError{Shard: r.ID, LeaderID: id, LeaderHTTP: r.FSM.Nodes()[id]}
}

// Leader returns shard i's leader id and HTTP address, if known.
func (h *Host) Leader(i int) (id, http string) {
	r, err := h.Replica(i)
	if err != nil {
		return "", ""
	}
	id, _ = r.Group.Leader()
	return id, r.FSM.Nodes()[id]
}
