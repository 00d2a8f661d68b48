package shard

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"tally/cluster"
	"tally/fsm"
)

// Join adds node id to shard i as a non-voter, records its HTTP address,
// and waits until it has caught up to promote it to voter (the rule is in
// promote.go). This node must lead shard i. When ctx ends first the node
// stays a non-voter, the error wraps cluster.ErrUnavailable, and this
// shard's leader promotes it later. Joining again is harmless: a voter
// stays a voter, and nothing is proposed that is already so.
func (h *Host) Join(ctx context.Context, i int, id, raftAddr, httpAddr string) error {
	r, err := h.Replica(i)
	if err != nil {
		return err
	}
	if !r.Group.IsLeader() {
		return h.notLeader(r)
	}
	if srv, ok := member(r, id); !ok || srv.Addr != raftAddr {
		if err := r.Group.AddNonvoter(ctx, id, raftAddr); err != nil {
			return h.mapErr(r, fmt.Errorf("shard %d: add %s: %w", i, id, err))
		}
		r.log.Info("added non-voter", "node", id, "raft", raftAddr)
	}
	if r.FSM.Nodes()[id] != httpAddr {
		if _, err := r.Group.Apply(ctx, fsm.EncodeNode(id, httpAddr)); err != nil {
			return h.mapErr(r, fmt.Errorf("shard %d: record %s: %w", i, id, err))
		}
	}
	return h.waitPromoted(ctx, r, id, httpAddr)
}

// Leave removes node id from shard i. This node must lead shard i. When
// id is this node, it first hands the shard's leadership to another
// voter and answers with a *NotLeaderError naming it, so that the caller
// removes this node there: a leader that removed itself would leave the
// shard without one for an election timeout.
func (h *Host) Leave(ctx context.Context, i int, id string) error {
	r, err := h.Replica(i)
	if err != nil {
		return err
	}
	if !r.Group.IsLeader() {
		return h.notLeader(r)
	}
	if id == h.cfg.NodeID {
		if err := r.Group.TransferLeadership(ctx, ""); err != nil {
			return h.mapErr(r, fmt.Errorf("shard %d: hand off before leaving: %w", i, err))
		}
		r.log.Info("handed off leadership before leaving")
		return h.notLeader(r)
	}
	if _, err := r.Group.Apply(ctx, fsm.EncodeNode(id, "")); err != nil {
		return h.mapErr(r, fmt.Errorf("shard %d: forget %s: %w", i, id, err))
	}
	if err := r.Group.RemoveServer(ctx, id); err != nil {
		return h.mapErr(r, fmt.Errorf("shard %d: remove %s: %w", i, id, err))
	}
	return nil
}

// TransferLeader hands shard i's leadership to node `to` (any voter when
// empty). This node must lead shard i.
func (h *Host) TransferLeader(ctx context.Context, i int, to string) error {
	r, err := h.Replica(i)
	if err != nil {
		return err
	}
	return h.mapErr(r, r.Group.TransferLeadership(ctx, to))
}

// Handoff hands the leadership of every shard this node leads to another
// voter, all shards at once, before the node stops: the shards then elect
// no one after a timeout and lose no writes in flight to a leader that
// vanished (a request already here is forwarded to the new leader). A
// shard that cannot hand off (no other voter caught up) is left to its
// election timeout; its error is returned with the others.
func (h *Host) Handoff(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(h.replicas))
	for i, r := range h.replicas {
		if !r.Group.IsLeader() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Group.TransferLeadership(ctx, ""); err != nil {
				errs[i] = fmt.Errorf("shard %d: %w", i, err)
				return
			}
			r.log.Info("handed off leadership")
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ReplicaStatus is this node's view of one shard.
type ReplicaStatus struct {
	Shard        int
	Node         string
	Raft         cluster.Status
	LeaderHTTP   string
	AppliedIndex uint64
	AppliedSeq   uint64
	Servers      []cluster.Server
	Nodes        map[string]string // node directory: id -> HTTP address
}

// Status returns this node's view of shard i.
func (h *Host) Status(i int) (ReplicaStatus, error) {
	r, err := h.Replica(i)
	if err != nil {
		return ReplicaStatus{}, err
	}
	st := r.Group.Status()
	idx, seq := r.FSM.Applied()
	servers, err := r.Group.Servers()
	if err != nil {
		return ReplicaStatus{}, err
	}
	nodes := r.FSM.Nodes()
	return ReplicaStatus{Shard: i, Node: h.cfg.NodeID, Raft: st, LeaderHTTP: nodes[st.LeaderID],
		AppliedIndex: idx, AppliedSeq: seq, Servers: servers, Nodes: nodes}, nil
}
