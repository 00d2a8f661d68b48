package api

import (
	"context"
	"net/http"

	"tally/api/wire"
	"tally/edge"
	"tally/ledger"
	"tally/node"
	"tally/shard"
)

// shardService is what the handlers of one shard's replica need of the
// node.
type shardService interface {
	Shards() int
	NodeID() string
	Ready() error
	State(i int) (shard.ReplicaStatus, shard.Summary, error)
	Verify(ctx context.Context, i int) (shard.VerifyReport, error)
	HashAt(i int, seq uint64) (ledger.Hash, error)
}

// clusterService is what the cluster handlers need of the node.
type clusterService interface {
	Shards() int
	Local() wire.Cluster
	Cluster(ctx context.Context) wire.Cluster
	Member(ctx context.Context, q node.MemberQuery, only *int) error
	TransferLeader(ctx context.Context, q node.LeaderQuery) error
}

func (s *Server) shardRoutes() map[string]handler {
	return map[string]handler{
		"GET /v1/shards/{shard}/state":  s.shardState,
		"GET /v1/shards/{shard}/verify": s.verify,
		"GET /v1/shards/{shard}/hash":   s.hashAt,
	}
}

func (s *Server) clusterRoutes() map[string]handler {
	return map[string]handler{
		"GET /v1/cluster":                  s.clusterStatus,
		"GET /v1/cluster/local":            s.clusterLocal,
		"POST /v1/cluster/join":            s.join,
		"POST /v1/cluster/leave":           s.leave,
		"POST /v1/cluster/transfer-leader": s.transferLeader,
	}
}

func (s *Server) shardState(r *http.Request) (any, error) {
	sh, err := shardParam(r, s.shards.Shards())
	if err != nil {
		return nil, err
	}
	st, sum, err := s.shards.State(sh)
	if err != nil {
		return nil, err
	}
	return wire.ShardState{Shard: sh, Node: s.shards.NodeID(), AppliedIndex: sum.AppliedIndex,
		AppliedSeq: sum.AppliedSeq, HeadHash: sum.Head.String(), StateHash: sum.StateHash.String(), Accounts: sum.Accounts,
		Pending: sum.Pending, RaftState: st.Raft.State, Term: st.Raft.Term, Leader: st.Raft.LeaderID,
		CommitIndex: st.Raft.CommitIndex}, nil
}

// verify answers 200 with the replay's report; a replica that does not
// match says so in the report, not with an error status.
func (s *Server) verify(r *http.Request) (any, error) {
	sh, err := shardParam(r, s.shards.Shards())
	if err != nil {
		return nil, err
	}
	rep, err := s.shards.Verify(r.Context(), sh)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	return wire.VerifyReport{Shard: sh, Node: s.shards.NodeID(), OK: err == nil,
		Events: rep.Events, AppliedSeq: rep.AppliedSeq, HeadHash: rep.Head.String(),
		StateHash: rep.StateHash.String(), Accounts: rep.Accounts, Error: msg}, nil
}

func (s *Server) hashAt(r *http.Request) (any, error) {
	sh, err := shardParam(r, s.shards.Shards())
	if err != nil {
		return nil, err
	}
	seq, e := edge.Uint(r.URL.Query(), "seq")
	if e != nil {
		return nil, e
	}
	h, err := s.shards.HashAt(sh, seq)
	if err != nil {
		return nil, err
	}
	return wire.HashAt{Shard: sh, Seq: seq, Hash: h}, nil
}

func (s *Server) clusterLocal(*http.Request) (any, error) { return s.members.Local(), nil }

func (s *Server) clusterStatus(r *http.Request) (any, error) {
	return s.members.Cluster(r.Context()), nil
}

// memberShard checks an optional shard of a membership request.
func (s *Server) memberShard(only *int) error {
	if only != nil && (*only < 0 || *only >= s.members.Shards()) {
		return edge.NotFound(edge.CodeShardNotFound, "shard %d does not exist", *only)
	}
	return nil
}

type joinReq struct {
	ID    string `json:"id"`
	Raft  string `json:"raft"`
	HTTP  string `json:"http"`
	Shard *int   `json:"shard,omitempty"`
}

// join adds a node to every shard (or the one named), each on its leader.
func (s *Server) join(r *http.Request) (any, error) {
	var req joinReq
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if !ledger.ValidID(req.ID) || req.Raft == "" || req.HTTP == "" {
		return nil, edge.Invalid("join needs id, raft and http")
	}
	if err := s.memberShard(req.Shard); err != nil {
		return nil, err
	}
	q := node.MemberQuery{Op: node.MemberJoin, ID: req.ID, Raft: req.Raft, HTTP: req.HTTP}
	if err := s.members.Member(r.Context(), q, req.Shard); err != nil {
		return nil, err
	}
	return wire.OK{OK: true}, nil
}

type leaveReq struct {
	ID    string `json:"id"`
	Shard *int   `json:"shard,omitempty"`
}

func (s *Server) leave(r *http.Request) (any, error) {
	var req leaveReq
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if !ledger.ValidID(req.ID) {
		return nil, edge.Invalid("leave needs id")
	}
	if err := s.memberShard(req.Shard); err != nil {
		return nil, err
	}
	if err := s.members.Member(r.Context(), node.MemberQuery{Op: node.MemberLeave, ID: req.ID}, req.Shard); err != nil {
		return nil, err
	}
	return wire.OK{OK: true}, nil
}

type transferLeaderReq struct {
	Shard *int   `json:"shard"`
	To    string `json:"to,omitempty"`
}

func (s *Server) transferLeader(r *http.Request) (any, error) {
	var req transferLeaderReq
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.Shard == nil {
		return nil, edge.Invalid("transfer-leader needs shard")
	}
	if err := s.memberShard(req.Shard); err != nil {
		return nil, err
	}
	if err := s.members.TransferLeader(r.Context(), node.LeaderQuery{Shard: *req.Shard, To: req.To}); err != nil {
		return nil, err
	}
	return wire.OK{OK: true}, nil
}
