package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// ReadIndex returns a commit index that a linearizable read must wait for
// the FSM to apply. hashicorp/raft has no ReadIndex, so: a new leader first
// applies a Barrier in its term (its commit index is only trustworthy after
// an entry of its own term commits), then the current commit index is the
// read index. After reading, the caller must call VerifyLeader.
func (g *Group) ReadIndex(ctx context.Context) (uint64, error) {
	if !g.IsLeader() {
		return 0, g.notLeader()
	}
	term := g.r.CurrentTerm()
	if g.barrier.Load() != term {
		if err := g.Barrier(ctx, term); err != nil {
			return 0, err
		}
	}
	return g.r.CommitIndex(), nil
}

// Barrier applies a barrier in the given term, once per term.
func (g *Group) Barrier(ctx context.Context, term uint64) error {
	g.bmu.Lock()
	defer g.bmu.Unlock()
	if g.barrier.Load() == term {
		return nil
	}
	timeout := time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	var f raft.Future
	if g.cfg.Fence != nil {
		f = g.r.Apply(g.cfg.Fence, timeout)
	} else {
		f = g.r.Barrier(timeout)
	}
	if err := wait(ctx, f); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return g.notLeader()
		}
		return fmt.Errorf("%w: barrier: %v", ErrUnavailable, err)
	}
	if g.r.CurrentTerm() == term && g.IsLeader() {
		g.barrier.Store(term)
	}
	return nil
}

// BarrierDone reports whether this leader has applied its term's barrier.
func (g *Group) BarrierDone() bool { return g.IsLeader() && g.barrier.Load() == g.r.CurrentTerm() }

// VerifyLeader confirms with a quorum that this replica still leads. Calls
// that arrive while a check is running share the next check, which starts
// after they arrived, so one round trip serves many reads.
func (g *Group) VerifyLeader(ctx context.Context) error {
	err := g.ver.verify(ctx, g.r)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
		return g.notLeader()
	case ctx.Err() != nil:
		return fmt.Errorf("%w: verify leader: %v", ErrUnavailable, err)
	default:
		return fmt.Errorf("%w: verify leader: %v", ErrUnavailable, err)
	}
}

type verifier struct {
	mu      sync.Mutex
	next    *round // the round new callers join; not started yet
	running bool
}

type round struct {
	done chan struct{}
	err  error
}

func (v *verifier) verify(ctx context.Context, r *raft.Raft) error {
	v.mu.Lock()
	if v.next == nil {
		v.next = &round{done: make(chan struct{})}
	}
	rd := v.next
	if !v.running {
		v.start(r)
	}
	v.mu.Unlock()
	select {
	case <-rd.done:
		return rd.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// start runs the pending round; v.mu is held.
func (v *verifier) start(r *raft.Raft) {
	rd := v.next
	v.next = nil
	v.running = true
	go func() {
		rd.err = r.VerifyLeader().Error()
		close(rd.done)
		v.mu.Lock()
		defer v.mu.Unlock()
		v.running = false
		if v.next != nil {
			v.start(r)
		}
	}()
}

// AddVoter adds (or updates) a voter. It must run on the leader.
func (g *Group) AddVoter(ctx context.Context, id, addr string) error {
	return g.change(ctx, func(timeout time.Duration) raft.Future {
		return g.r.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	})
}

// AddNonvoter adds a server that receives the log but neither votes nor
// counts towards a commit, so that a new node catches up without
// weakening the quorum. A server that is already a voter stays one (only
// its address is updated). It must run on the leader.
func (g *Group) AddNonvoter(ctx context.Context, id, addr string) error {
	return g.change(ctx, func(timeout time.Duration) raft.Future {
		return g.r.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	})
}

// RemoveServer removes a server. It must run on the leader.
func (g *Group) RemoveServer(ctx context.Context, id string) error {
	return g.change(ctx, func(timeout time.Duration) raft.Future {
		return g.r.RemoveServer(raft.ServerID(id), 0, timeout)
	})
}

// TransferLeadership hands leadership to id (any voter when id is empty).
func (g *Group) TransferLeadership(ctx context.Context, id string) error {
	if !g.IsLeader() {
		return g.notLeader()
	}
	var f raft.Future
	if id == "" {
		f = g.r.LeadershipTransfer()
	} else {
		addr, ok := g.serverAddr(id)
		if !ok {
			return fmt.Errorf("transfer leadership: %s is not a member", id)
		}
		f = g.r.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))
	}
	if err := wait(ctx, f); err != nil {
		return fmt.Errorf("transfer leadership: %w", err)
	}
	return nil
}

func (g *Group) change(ctx context.Context, fn func(time.Duration) raft.Future) error {
	if !g.IsLeader() {
		return g.notLeader()
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	err := wait(ctx, fn(timeout))
	if errors.Is(err, raft.ErrNotLeader) {
		return g.notLeader()
	}
	if err != nil {
		return fmt.Errorf("membership change: %w", err)
	}
	return nil
}

// Server is one member of the group's configuration.
type Server struct {
	ID    string
	Addr  string
	Voter bool
}

// Servers returns the latest configuration.
func (g *Group) Servers() ([]Server, error) {
	f := g.r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

func (g *Group) serverAddr(id string) (string, bool) {
	ss, err := g.Servers()
	if err != nil {
		return "", false
	}
	for _, s := range ss {
		if s.ID == id {
			return s.Addr, true
		}
	}
	return "", false
}

// Status is a snapshot of the group's Raft state.
type Status struct {
	State        string
	Term         uint64
	LeaderID     string
	CommitIndex  uint64
	AppliedIndex uint64
	LastContact  time.Duration // since the leader was last heard from (followers)
}

// Status returns the group's Raft state.
func (g *Group) Status() Status {
	id, _ := g.Leader()
	s := Status{State: g.r.State().String(), Term: g.r.CurrentTerm(), LeaderID: id,
		CommitIndex: g.r.CommitIndex(), AppliedIndex: g.r.AppliedIndex()}
	if lc := g.r.LastContact(); !lc.IsZero() {
		s.LastContact = time.Since(lc)
	}
	return s
}
