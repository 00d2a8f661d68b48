package node

import (
	"context"
	"time"
)

// appliedTimeout bounds an opApplied call.
const appliedTimeout = time.Second

// opApplied asks a node how far its replica of one shard has applied:
// how a shard's leader sees a non-voter's catch-up (shard.Peers).
const opApplied = "applied"

// AppliedQuery names the shard of an opApplied call.
type AppliedQuery struct {
	Shard int `json:"shard"`
}

// AppliedAnswer is a replica's applied Raft index.
type AppliedAnswer struct {
	Node         string `json:"node"`
	Shard        int    `json:"shard"`
	AppliedIndex uint64 `json:"applied_index"`
}

// Applied returns the Raft index that the node at addr has applied on
// shard i.
func (p *Peer) Applied(ctx context.Context, addr string, i int) (uint64, error) {
	// A non-voter that does not answer soon is not caught up; the
	// leader's duty loop that asks must not wait on it.
	ctx, cancel := context.WithTimeout(ctx, appliedTimeout)
	defer cancel()
	var out AppliedAnswer
	if err := p.Call(ctx, addr, opApplied, AppliedQuery{Shard: i}, &out); err != nil {
		return 0, err
	}
	return out.AppliedIndex, nil
}

// appliedOn answers opApplied from this node's replica.
func (s *Service) appliedOn(_ context.Context, q AppliedQuery) (AppliedAnswer, error) {
	if err := s.checkShard(q.Shard); err != nil {
		return AppliedAnswer{}, err
	}
	st, err := s.h.Status(q.Shard)
	if err != nil {
		return AppliedAnswer{}, err
	}
	return AppliedAnswer{Node: st.Node, Shard: q.Shard, AppliedIndex: st.Raft.AppliedIndex}, nil
}
