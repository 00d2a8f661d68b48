// Package node is a node's service: what a request asks of the cluster,
// whichever node it reaches. It submits commands here when this node
// leads the shard and on the leader otherwise, splits batches by shard and
// merges their results, fans reads out over shards and nodes (cluster
// status, audit, sagas, a transfer whose shard is not known), and waits
// for the sagas a write started. Every call to another node goes through
// the Peer (peer.go).
//
// The package speaks Go values and the API's JSON types (api/wire); the
// HTTP mapping is the api package's, and errors are *edge.Error values or
// errors that Problem maps to one.
package node

import (
	"context"
	"errors"
	"io"
	"time"

	"tally/backup"
	"tally/edge"
	"tally/ledger"
	"tally/shard"
	"tally/stream"
)

// leaderWait is how long a node waits between looks for a shard's leader
// while an election runs.
const leaderWait = 50 * time.Millisecond

// Host is what the service needs of this node's replicas (shard.Host).
// Every method is safe for concurrent use.
type Host interface {
	NodeID() string
	HTTPAddr() string
	RaftAddr() string
	Shards() int
	Leader(i int) (id, http string)
	Submit(ctx context.Context, i int, cmd ledger.Command) ([]ledger.Result, error)
	Account(ctx context.Context, i int, key string, o shard.ReadOpts) (ledger.Account, uint64, error)
	AccountAt(ctx context.Context, i int, key string, seq uint64, o shard.ReadOpts) (ledger.Account, error)
	AccountAtTime(ctx context.Context, i int, key string, t ledger.Time, o shard.ReadOpts) (ledger.Account, uint64, error)
	Transfer(ctx context.Context, i int, id string, o shard.ReadOpts) (ledger.Record, uint64, error)
	History(ctx context.Context, i int, key string, after uint64, limit int, desc bool, o shard.ReadOpts) ([]ledger.Event, error)
	Events(i int, after uint64, limit int) ([]ledger.Event, error)
	Log(i int) (stream.Log, error)
	Status(i int) (shard.ReplicaStatus, error)
	Summary(i int) (shard.Summary, error)
	Snapshots(i int) (*shard.SnapshotStats, error)
	Verify(ctx context.Context, i int) (shard.VerifyReport, error)
	HashAt(i int, seq uint64) (ledger.Hash, error)
	Join(ctx context.Context, i int, id, raftAddr, httpAddr string) error
	Leave(ctx context.Context, i int, id string) error
	TransferLeader(ctx context.Context, i int, to string) error
	WaitTransfer(ctx context.Context, i int, id string) (ledger.Record, error)
	Sagas(ctx context.Context, i int, aborted bool, limit int, o shard.ReadOpts) ([]shard.SagaView, error)
	SagaInfo(i int, id string) (shard.SagaInfo, bool)
	ResolveSaga(ctx context.Context, i int, id, note string) error
	Audit(ctx context.Context, i int) (ledger.ShardBooks, error)
	SetOffset(ctx context.Context, i int, name string, seq uint64) (shard.Offset, error)
	ResetOffset(ctx context.Context, i int, name string, seq uint64, end bool) (shard.Offset, error)
	DeleteConsumer(ctx context.Context, i int, name string) error
	Offsets(ctx context.Context, i int, o shard.ReadOpts) (map[string]uint64, uint64, error)
	Epoch(i int) uint64
	BackupHeader(ctx context.Context, heads []uint64) (backup.Header, error)
	HoldSagas(ctx context.Context, lease time.Duration) []int
	ReleaseSagas()
	WriteBackup(ctx context.Context, hd backup.Header, w io.Writer) (backup.Summary, error)
}

// remote is what the service needs of the Peer.
type remote interface {
	Submit(ctx context.Context, addr string, i int, cmd ledger.Command) ([]ledger.Result, error)
	Call(ctx context.Context, addr, op string, in, out any) error
}

// Service is one node's service. Its methods are safe for concurrent use
// and block until their answer or ctx's deadline.
type Service struct {
	h    Host
	peer remote
	ops  map[string]op
}

// New returns the service of host h, reaching other nodes through peer.
func New(h Host, peer *Peer) *Service {
	s := &Service{h: h, peer: peer}
	s.ops = s.operations()
	return s
}

// Shards is the number of shards of the cluster.
func (s *Service) Shards() int { return s.h.Shards() }

// Host returns the service's host, for what reads this replica alone
// (state, verify, metrics).
func (s *Service) Host() Host { return s.h }

type ctxKey int

const (
	hopsKey ctxKey = iota
	noForwardKey
)

// WithHops marks ctx as a request that other nodes forwarded n times.
func WithHops(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, hopsKey, n)
}

// Hops is how often the request of ctx was forwarded.
func Hops(ctx context.Context) int {
	n, _ := ctx.Value(hopsKey).(int)
	return n
}

// WithoutForwarding marks ctx as a request whose caller routes by itself
// (the proxy): a shard this node does not lead is a not_leader answer.
func WithoutForwarding(ctx context.Context) context.Context {
	return context.WithValue(ctx, noForwardKey, true)
}

func forwarding(ctx context.Context) bool {
	no, _ := ctx.Value(noForwardKey).(bool)
	return !no
}

// onLeader runs local, which tries shard i on this node's replica, and,
// when another node leads shard i, remote on that leader's address. While
// no leader is known it tries again until ctx ends.
func (s *Service) onLeader(ctx context.Context, i int, local func() error, remote func(addr string) error) error {
	for {
		err := local()
		var nl *shard.NotLeaderError
		if !errors.As(err, &nl) {
			return err
		}
		if !forwarding(ctx) {
			e := edge.Errorf(421, edge.CodeNotLeader, "%s", nl.Error())
			e.LeaderHTTP = nl.LeaderHTTP
			return e
		}
		if nl.LeaderHTTP != "" && nl.LeaderID != s.h.NodeID() {
			if Hops(ctx) >= edge.MaxHops {
				return edge.Unavailable("too many forwarding hops: %s", nl.Error())
			}
			return remote(nl.LeaderHTTP)
		}
		select {
		case <-ctx.Done():
			return edge.Unavailable("shard %d: no leader within the deadline", nl.Shard)
		case <-time.After(leaderWait):
		}
	}
}

// checkShard refuses a shard number the cluster does not have.
func (s *Service) checkShard(i int) error {
	if i < 0 || i >= s.h.Shards() {
		return edge.NotFound(edge.CodeShardNotFound, "shard %d does not exist (0 to %d)", i, s.h.Shards()-1)
	}
	return nil
}

// shardsOf is the shard only names, or every shard when only is nil.
func (s *Service) shardsOf(only *int) ([]int, error) {
	if only != nil {
		if err := s.checkShard(*only); err != nil {
			return nil, err
		}
		return []int{*only}, nil
	}
	all := make([]int, s.h.Shards())
	for i := range all {
		all[i] = i
	}
	return all, nil
}
