package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"tally/api/wire"
	"tally/ledger"
)

// recorder captures an answer of an inner handler call.
type recorder struct {
	header http.Header
	status int
	body   []byte
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(s int)   { r.status = s }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.body = append(r.body, b...)
	return len(b), nil
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	sh, ae := s.shardParam(r)
	after, ae2 := uintParam(r, "after")
	limit, ae3 := uintParam(r, "limit")
	for _, e := range []*apiError{ae, ae2, ae3} {
		if e != nil {
			writeError(w, e)
			return
		}
	}
	evs, err := s.h.Events(sh, after, int(min(limit, 1<<20)))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, page(evs, limit))
}

func (s *Server) shardState(w http.ResponseWriter, r *http.Request) {
	sh, ae := s.shardParam(r)
	if ae != nil {
		writeError(w, ae)
		return
	}
	st, err := s.h.Status(sh)
	if err != nil {
		s.fail(w, err)
		return
	}
	sum, err := s.h.Summary(sh)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.ShardState{Shard: sh, Node: s.h.NodeID(), AppliedIndex: sum.AppliedIndex,
		AppliedSeq: sum.AppliedSeq, HeadHash: sum.Head.String(), StateHash: sum.StateHash.String(), Accounts: sum.Accounts,
		Pending: sum.Pending, RaftState: st.Raft.State, Term: st.Raft.Term, Leader: st.Raft.LeaderID,
		CommitIndex: st.Raft.CommitIndex})
}

func (s *Server) verify(w http.ResponseWriter, r *http.Request) {
	sh, ae := s.shardParam(r)
	if ae != nil {
		writeError(w, ae)
		return
	}
	rep, err := s.h.Verify(r.Context(), sh)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	writeJSON(w, http.StatusOK, wire.VerifyReport{Shard: sh, Node: s.h.NodeID(), OK: err == nil,
		Events: rep.Events, AppliedSeq: rep.AppliedSeq, HeadHash: rep.Head.String(),
		StateHash: rep.StateHash.String(), Accounts: rep.Accounts, Error: msg})
}

func (s *Server) hashAt(w http.ResponseWriter, r *http.Request) {
	sh, ae := s.shardParam(r)
	seq, ae2 := uintParam(r, "seq")
	for _, e := range []*apiError{ae, ae2} {
		if e != nil {
			writeError(w, e)
			return
		}
	}
	h, err := s.h.HashAt(sh, seq)
	if err != nil {
		if e := s.notFoundAs(err, "not_found", fmt.Sprintf("shard %d has no event %d here", sh, seq)); e != err {
			writeError(w, e.(*apiError))
			return
		}
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.HashAt{Shard: sh, Seq: seq, Hash: h})
}

// local is this node's own view: its replica of every shard.
func (s *Server) local() wire.Cluster {
	var cv wire.Cluster
	nodes := map[string]wire.Node{}
	for i := 0; i < s.h.Shards(); i++ {
		st, err := s.h.Status(i)
		if err != nil {
			continue
		}
		sv := wire.Shard{Shard: i, Leader: st.Raft.LeaderID, LeaderHTTP: st.LeaderHTTP}
		for _, srv := range st.Servers {
			rv := wire.Replica{Node: srv.ID, Raft: srv.Addr, HTTP: st.Nodes[srv.ID], State: "unknown"}
			if srv.ID == s.h.NodeID() {
				rv.State, rv.AppliedSeq = lower(st.Raft.State), st.AppliedSeq
			}
			sv.Replicas = append(sv.Replicas, rv)
			nodes[srv.ID] = wire.Node{ID: srv.ID, HTTP: st.Nodes[srv.ID], Raft: srv.Addr}
		}
		if st.Raft.LeaderID == s.h.NodeID() {
			sv.AppliedSeq = st.AppliedSeq
		}
		cv.Shards = append(cv.Shards, sv)
	}
	for _, n := range nodes {
		cv.Nodes = append(cv.Nodes, n)
	}
	sort.Slice(cv.Nodes, func(i, j int) bool { return cv.Nodes[i].ID < cv.Nodes[j].ID })
	return cv
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func (s *Server) clusterLocal(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.local())
}

// clusterStatus merges every node's own view, asked in parallel with a
// short timeout: a node that does not answer shows as unreachable.
func (s *Server) clusterStatus(w http.ResponseWriter, r *http.Request) {
	cv := s.local()
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
			ctx, cancel := context.WithTimeout(r.Context(), time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTP+"/v1/cluster/local", nil)
			resp, err := s.hc.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			var v wire.Cluster
			if resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&v) == nil {
				mu.Lock()
				views[n.ID] = v
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for i := range cv.Shards {
		sv := &cv.Shards[i]
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
						rv.State, rv.AppliedSeq = orv.State, orv.AppliedSeq
					}
				}
				if o.Leader == rv.Node && rv.State == "leader" {
					sv.Leader, sv.LeaderHTTP, sv.AppliedSeq = o.Leader, o.LeaderHTTP, orv(o, rv.Node)
				}
			}
		}
	}
	writeJSON(w, http.StatusOK, cv)
}

func orv(v wire.Shard, node string) uint64 {
	for _, r := range v.Replicas {
		if r.Node == node {
			return r.AppliedSeq
		}
	}
	return 0
}

type joinReq struct {
	ID    string `json:"id"`
	Raft  string `json:"raft"`
	HTTP  string `json:"http"`
	Shard *int   `json:"shard,omitempty"`
}

// join adds a node to every shard (or the one named), each on its leader.
func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	var req joinReq
	if ae := decode(r, &req); ae != nil {
		writeError(w, ae)
		return
	}
	if !ledger.ValidID(req.ID) || req.Raft == "" || req.HTTP == "" {
		writeError(w, badRequest("join needs id, raft and http"))
		return
	}
	s.eachShard(w, r, req.Shard, func(i int) any {
		return joinReq{ID: req.ID, Raft: req.Raft, HTTP: req.HTTP, Shard: &i}
	}, func(i int) error { return s.h.Join(r.Context(), i, req.ID, req.Raft, req.HTTP) })
}

type leaveReq struct {
	ID    string `json:"id"`
	Shard *int   `json:"shard,omitempty"`
}

func (s *Server) leave(w http.ResponseWriter, r *http.Request) {
	var req leaveReq
	if ae := decode(r, &req); ae != nil {
		writeError(w, ae)
		return
	}
	if !ledger.ValidID(req.ID) {
		writeError(w, badRequest("leave needs id"))
		return
	}
	s.eachShard(w, r, req.Shard, func(i int) any { return leaveReq{ID: req.ID, Shard: &i} },
		func(i int) error { return s.h.Leave(r.Context(), i, req.ID) })
}

type transferLeaderReq struct {
	Shard *int   `json:"shard"`
	To    string `json:"to,omitempty"`
}

func (s *Server) transferLeader(w http.ResponseWriter, r *http.Request) {
	var req transferLeaderReq
	if ae := decode(r, &req); ae != nil {
		writeError(w, ae)
		return
	}
	if req.Shard == nil {
		writeError(w, badRequest("transfer-leader needs shard"))
		return
	}
	s.eachShard(w, r, req.Shard, func(i int) any { return transferLeaderReq{Shard: &i, To: req.To} },
		func(i int) error {
			done, ae := s.leaderTarget(i, req.To)
			if ae != nil {
				return ae
			}
			if done {
				return nil
			}
			return s.h.TransferLeader(r.Context(), i, req.To)
		})
}

// leaderTarget refuses a leadership transfer of shard i that cannot
// happen, which Raft would fail with an error the API cannot tell from an
// internal one: to a node that is not a voter, or with no other voter to
// take over. A transfer to the node that already leads is done.
func (s *Server) leaderTarget(i int, to string) (done bool, ae *apiError) {
	st, err := s.h.Status(i)
	if err != nil {
		return false, s.toAPI(err)
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
		return false, badRequest(fmt.Sprintf("shard %d has no other voter to take over", i))
	}
	return false, badRequest(fmt.Sprintf("%s is not a voter of shard %d", to, i))
}

// eachShard runs a membership operation on one shard or on all of them,
// each on its leader (here, or forwarded with the shard named).
func (s *Server) eachShard(w http.ResponseWriter, r *http.Request, only *int, body func(i int) any, fn func(i int) error) {
	shards := []int{}
	if only != nil {
		if *only < 0 || *only >= s.h.Shards() {
			writeError(w, notFound("shard_not_found", fmt.Sprintf("shard %d does not exist", *only)))
			return
		}
		shards = append(shards, *only)
	} else {
		for i := 0; i < s.h.Shards(); i++ {
			shards = append(shards, i)
		}
	}
	for _, i := range shards {
		if ae := s.onLeader(r, i, body(i), fn); ae != nil {
			writeError(w, ae)
			return
		}
	}
	writeJSON(w, http.StatusOK, wire.OK{OK: true})
}

func (s *Server) onLeader(r *http.Request, i int, body any, fn func(i int) error) *apiError {
	ctx := r.Context()
	for {
		err := fn(i)
		if err == nil {
			return nil
		}
		addr, retry, ae := s.next(ctx, r, err)
		if ae != nil {
			return ae
		}
		if retry {
			continue
		}
		b, _ := json.Marshal(body)
		status, rb, ae := s.forward(ctx, r, addr, b)
		if ae != nil {
			return ae
		}
		if status != http.StatusOK {
			return errorOf(status, rb)
		}
		return nil
	}
}
