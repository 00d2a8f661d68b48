package node

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"tally/api/wire"
	"tally/edge"

	"golang.org/x/sync/errgroup"
)

// statusTimeout bounds the wait for another node's view in Cluster.
const statusTimeout = time.Second

// Local is this node's own view: its replica of every shard.
func (s *Service) Local() wire.Cluster {
	var cv wire.Cluster
	nodes := map[string]wire.Node{}
	for i := 0; i < s.h.Shards(); i++ {
		st, err := s.h.Status(i)
		if err != nil {
			continue
		}
		sv := wire.Shard{Shard: i, Leader: st.Raft.LeaderID, LeaderHTTP: st.LeaderHTTP}
		for _, srv := range st.Servers {
			rv := wire.Replica{Node: srv.ID, Raft: srv.Addr, HTTP: st.Nodes[srv.ID], Suffrage: wire.Nonvoter, State: "unknown"}
			if srv.Voter {
				rv.Suffrage = wire.Voter
			}
			if srv.ID == s.h.NodeID() {
				rv.State, rv.AppliedSeq, rv.AppliedIndex = strings.ToLower(st.Raft.State), st.AppliedSeq, st.Raft.AppliedIndex
			}
			sv.Replicas = append(sv.Replicas, rv)
			// A joining node's address reaches the shards one by one: a
			// shard that does not know it yet must not blank what another
			// knows, or the node would not be asked and show unreachable.
			if n, ok := nodes[srv.ID]; !ok || n.HTTP == "" {
				nodes[srv.ID] = wire.Node{ID: srv.ID, HTTP: st.Nodes[srv.ID], Raft: srv.Addr}
			}
		}
		if st.Raft.LeaderID == s.h.NodeID() {
			sv.AppliedSeq, sv.CommitIndex = st.AppliedSeq, st.Raft.CommitIndex
		}
		lags(&sv)
		cv.Shards = append(cv.Shards, sv)
	}
	for _, n := range nodes {
		cv.Nodes = append(cv.Nodes, n)
	}
	sort.Slice(cv.Nodes, func(i, j int) bool { return cv.Nodes[i].ID < cv.Nodes[j].ID })
	return cv
}

// Cluster merges every node's own view, asked in parallel with a short
// timeout: a replica on a node that does not answer shows as
// unreachable.
func (s *Service) Cluster(ctx context.Context) wire.Cluster {
	cv := s.Local()
	views := map[string]wire.Cluster{s.h.NodeID(): cv}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range cv.Nodes {
		if n.ID == s.h.NodeID() || n.HTTP == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(ctx, statusTimeout)
			defer cancel()
			var v wire.Cluster
			if s.peer.Call(c, n.HTTP, opLocal, struct{}{}, &v) == nil {
				mu.Lock()
				views[n.ID] = v
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for i := range cv.Shards {
		merge(&cv.Shards[i], views)
	}
	return cv
}

// merge fills shard view sv's replicas from each node's own view.
func merge(sv *wire.Shard, views map[string]wire.Cluster) {
	for j := range sv.Replicas {
		rv := &sv.Replicas[j]
		v, ok := views[rv.Node]
		if !ok {
			rv.State = "unreachable"
			continue
		}
		for _, o := range v.Shards {
			if o.Shard != sv.Shard {
				continue
			}
			for _, orv := range o.Replicas {
				if orv.Node == rv.Node {
					rv.State, rv.AppliedSeq, rv.AppliedIndex = orv.State, orv.AppliedSeq, orv.AppliedIndex
				}
			}
			if o.Leader == rv.Node && rv.State == "leader" {
				sv.Leader, sv.LeaderHTTP, sv.AppliedSeq, sv.CommitIndex = o.Leader, o.LeaderHTTP, rv.AppliedSeq, o.CommitIndex
			}
		}
	}
	lags(sv)
}

// lags sets each replica's lag behind the leader's commit index, for the
// replicas whose applied index is known: a joining node's catch-up, and
// what its promotion waits for (shard.PromoteLag).
func lags(sv *wire.Shard) {
	for j := range sv.Replicas {
		rv := &sv.Replicas[j]
		rv.Lag = 0
		if sv.CommitIndex > rv.AppliedIndex && rv.State != "unknown" && rv.State != "unreachable" {
			rv.Lag = sv.CommitIndex - rv.AppliedIndex
		}
	}
}

// Membership operations on one shard.
const (
	MemberJoin  = "join"
	MemberLeave = "leave"
)

// MemberQuery adds node ID (at Raft and HTTP) to shard Shard, or removes
// it, on the shard's leader.
type MemberQuery struct {
	Op    string `json:"op"`
	Shard int    `json:"shard"`
	ID    string `json:"id"`
	Raft  string `json:"raft,omitempty"`
	HTTP  string `json:"http,omitempty"`
}

// Member runs a membership change on shard only, or on every shard: a
// join on all at once, since each waits until the node has caught up on
// its shard, and a leave in turn.
func (s *Service) Member(ctx context.Context, q MemberQuery, only *int) error {
	shards, err := s.shardsOf(only)
	if err != nil {
		return err
	}
	if q.Op == MemberJoin {
		g, gctx := errgroup.WithContext(ctx)
		for _, i := range shards {
			g.Go(func() error {
				q := q
				q.Shard = i
				_, err := s.memberOn(gctx, q)
				return err
			})
		}
		return g.Wait()
	}
	for _, i := range shards {
		q.Shard = i
		if _, err := s.memberOn(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) memberOn(ctx context.Context, q MemberQuery) (out wire.OK, err error) {
	if err := s.checkShard(q.Shard); err != nil {
		return out, err
	}
	local := func() error { return s.h.Join(ctx, q.Shard, q.ID, q.Raft, q.HTTP) }
	switch q.Op {
	case MemberJoin:
	case MemberLeave:
		local = func() error { return s.h.Leave(ctx, q.Shard, q.ID) }
	default:
		return out, edge.Invalid("membership operation %q is not join or leave", q.Op)
	}
	err = s.onLeader(ctx, q.Shard, local, func(addr string) error { return s.peer.Call(ctx, addr, opMember, q, &out) })
	return wire.OK{OK: err == nil}, err
}

// LeaderQuery hands shard Shard's leadership to node To (any voter when
// empty).
type LeaderQuery struct {
	Shard int    `json:"shard"`
	To    string `json:"to,omitempty"`
}

// TransferLeader hands shard q.Shard's leadership over, on its leader.
func (s *Service) TransferLeader(ctx context.Context, q LeaderQuery) error {
	_, err := s.leaderTransferOn(ctx, q)
	return err
}

func (s *Service) leaderTransferOn(ctx context.Context, q LeaderQuery) (out wire.OK, err error) {
	if err := s.checkShard(q.Shard); err != nil {
		return out, err
	}
	err = s.onLeader(ctx, q.Shard, func() error {
		done, err := s.leaderTarget(q.Shard, q.To)
		if err != nil || done {
			return err
		}
		return s.h.TransferLeader(ctx, q.Shard, q.To)
	}, func(addr string) error { return s.peer.Call(ctx, addr, opLeaderTransfer, q, &out) })
	return wire.OK{OK: err == nil}, err
}

// leaderTarget refuses a leadership transfer of shard i that cannot
// happen, which Raft would fail with an error that cannot be told from an
// internal one: to a node that is not a voter, or with no other voter to
// take over. A transfer to the node that already leads is done.
func (s *Service) leaderTarget(i int, to string) (done bool, err error) {
	st, err := s.h.Status(i)
	if err != nil {
		return false, err
	}
	leader := st.Raft.LeaderID
	if to != "" && to == leader {
		return true, nil
	}
	for _, srv := range st.Servers {
		if srv.Voter && srv.ID != leader && (to == "" || srv.ID == to) {
			return false, nil
		}
	}
	if to == "" {
		return false, edge.Invalid("shard %d has no other voter to take over", i)
	}
	return false, edge.Invalid("%s is not a voter of shard %d", to, i)
}

// Ready is nil when every shard has a known leader.
func (s *Service) Ready() error {
	for i := 0; i < s.h.Shards(); i++ {
		if id, addr := s.h.Leader(i); id == "" || addr == "" {
			return edge.Unavailable("shard %d has no known leader", i)
		}
	}
	return nil
}
