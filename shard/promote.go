package shard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"tally/cluster"
)

// The promotion rule: a node joins each shard as a non-voter, which
// receives the log but does not count towards a commit or vote, and the
// shard's leader promotes it to voter once the Raft index it has applied
// is within PromoteLag entries of the leader's commit index, as the node
// itself reports over the peer seam (hashicorp/raft does not expose a
// follower's match index). Until then the quorum stays that of the old
// voters: a node still copying a snapshot cannot stall commits, nor make
// one more failure cost the shard its majority.
const (
	// PromoteLag is one AppendEntries batch (cluster's MaxAppendEntries):
	// a node that close is caught up but for the entries in flight.
	PromoteLag = cluster.MaxAppendEntries
	// promoteEvery is how often a join waits before asking again.
	promoteEvery = 100 * time.Millisecond
)

// Progress is what a shard's leader knows of a non-voter's catch-up.
type Progress struct {
	Applied uint64 // the Raft index the node reports it has applied
	Commit  uint64 // the leader's commit index when it asked
}

// CaughtUp reports whether p meets the promotion rule.
func (p Progress) CaughtUp() bool { return p.Applied+PromoteLag >= p.Commit }

// promote makes non-voter srv of shard r a voter if it has caught up.
// The node is asked at httpAddr. It must run on r's leader.
func (h *Host) promote(ctx context.Context, r *Replica, srv cluster.Server, httpAddr string) (bool, error) {
	r.promoting.Lock()
	defer r.promoting.Unlock()
	// The configuration may have changed since srv was read.
	if cur, ok := member(r, srv.ID); ok {
		srv = cur
	}
	if srv.Voter {
		return true, nil
	}
	p := Progress{Commit: r.Group.Status().CommitIndex}
	var err error
	if p.Applied, err = h.cfg.Peers.Applied(ctx, httpAddr, r.ID); err != nil {
		return false, fmt.Errorf("ask %s for its progress: %w", srv.ID, err)
	}
	if !p.CaughtUp() {
		return false, nil
	}
	if err := r.Group.AddVoter(ctx, srv.ID, srv.Addr); err != nil {
		return false, h.mapErr(r, err)
	}
	h.promotions.Add(1)
	r.log.Info("promoted to voter", "member", srv.ID, "applied_index", p.Applied, "commit_index", p.Commit)
	return true, nil
}

// promoteAll promotes every non-voter of shard r that has caught up: the
// leader's duty that finishes a join whose own wait ended (a deadline,
// a change of leader).
func (h *Host) promoteAll(ctx context.Context, r *Replica) {
	servers, err := r.Group.Servers()
	if err != nil {
		return
	}
	nodes := r.FSM.Nodes()
	for _, s := range servers {
		if s.Voter || nodes[s.ID] == "" {
			continue
		}
		h.call(ctx, func(c context.Context) error {
			_, err := h.promote(c, r, s, nodes[s.ID])
			return err
		})
	}
}

// waitPromoted promotes node id of shard r as soon as it has caught up,
// until ctx ends.
func (h *Host) waitPromoted(ctx context.Context, r *Replica, id, httpAddr string) error {
	var last error
	for {
		srv, ok := member(r, id)
		if !ok {
			return fmt.Errorf("shard %d: %s is no longer a member", r.ID, id)
		}
		done, err := h.promote(ctx, r, srv, httpAddr)
		if done || errors.Is(err, cluster.ErrNotLeader) {
			return err
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: shard %d: %s is a non-voter still catching up; its leader promotes it once it has (%v)",
				cluster.ErrUnavailable, r.ID, id, last)
		case <-time.After(promoteEvery):
		}
	}
}

// member returns shard r's member id from the latest configuration.
func member(r *Replica, id string) (cluster.Server, bool) {
	servers, err := r.Group.Servers()
	if err != nil {
		return cluster.Server{}, false
	}
	for _, s := range servers {
		if s.ID == id {
			return s, true
		}
	}
	return cluster.Server{}, false
}

// Promotions counts the non-voters this node promoted as a leader.
func (h *Host) Promotions() uint64 { return h.promotions.Load() }
