package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"tally/api/wire"
	"tally/ledger"
	"tally/shard"
)

// sagaWaitMargin is how long before its deadline a request stops waiting
// for a saga and answers in_flight.
const sagaWaitMargin = 250 * time.Millisecond

// settle waits for the sagas among results whose source shard this node
// leads, until they finish or the deadline is near, and updates their
// results: a completed saga answers posted, an aborted one rejected with
// its reason, one still running in_flight (poll GET /v1/transfers/{id}).
// Parts forwarded to another leader were settled there.
func (s *Server) settle(ctx context.Context, res []ledger.Result) {
	d, ok := ctx.Deadline()
	if !ok {
		return
	}
	wctx, cancel := context.WithDeadline(ctx, d.Add(-sagaWaitMargin))
	defer cancel()
	for i := range res {
		r := &res[i]
		if r.Status != ledger.StatusInFlight {
			continue
		}
		if id, _ := s.h.Leader(r.Shard); id != s.h.NodeID() {
			continue
		}
		rec, err := s.h.WaitTransfer(wctx, r.Shard, r.ID)
		if err != nil || rec.Status == ledger.StatusInFlight {
			continue
		}
		r.Status = rec.Status
		if r.Result == ledger.OK {
			r.Result = rec.Result
		} else if r.Result == ledger.Exists {
			r.Original = rec.Result
		}
		if rec.ResolvedSeq != 0 {
			r.Seq = rec.ResolvedSeq
		}
	}
}

// internalCommand takes one encoded saga command for a shard this node
// leads. The proxy never routes here: it is for nodes only.
func (s *Server) internalCommand(w http.ResponseWriter, r *http.Request) {
	n, ae := uintParam(r, "shard")
	if ae != nil || n >= uint64(s.h.Shards()) {
		writeError(w, notFound("shard_not_found", "no such shard"))
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, decodeError(err))
		return
	}
	e, err := ledger.DecodeEntry(body)
	if err != nil || len(e.Commands) != 1 {
		writeError(w, badRequest(fmt.Sprintf("want one encoded command: %v", err)))
		return
	}
	cmd := e.Commands[0]
	if cmd.Kind != ledger.CmdSagaCredit && cmd.Kind != ledger.CmdSagaFence {
		writeError(w, badRequest(fmt.Sprintf("command kind %d is not taken here", cmd.Kind)))
		return
	}
	res, ae := s.submit(r.Context(), r, int(n), cmd, func() any { return nil })
	if ae != nil {
		writeError(w, ae)
		return
	}
	writeJSON(w, http.StatusOK, wire.Results{Results: res})
}

// sagaOf is one saga in GET /v1/sagas, with what the saga driver knows
// of it.
func sagaOf(v shard.SagaView, sh int) wire.Saga {
	rec := v.Record
	out := wire.SagaOf(&rec, sh, v.Age)
	if v.Info != nil {
		out.Attempts, out.LastError = v.Info.Attempts, v.Info.LastError
	}
	out.Stuck = rec.Open() && v.Age > shard.StuckAfter
	return out
}

// sagas lists sagas by state: in_flight (default), stuck (in flight for
// longer than 30 s) or aborted; on ?shard=N or all shards.
func (s *Server) sagas(w http.ResponseWriter, r *http.Request) {
	state := r.URL.Query().Get("state")
	if state == "" {
		state = "in_flight"
	}
	if state != "in_flight" && state != "stuck" && state != "aborted" {
		writeError(w, badRequest("state must be in_flight, stuck or aborted"))
		return
	}
	limit, ae := uintParam(r, "limit")
	if ae != nil {
		writeError(w, ae)
		return
	}
	if r.URL.Query().Get("shard") != "" {
		n, ae := uintParam(r, "shard")
		if ae != nil || n >= uint64(s.h.Shards()) {
			writeError(w, badRequest("shard out of range"))
			return
		}
		sh := int(n)
		s.read(w, r, sh, func() error {
			vs, err := s.h.Sagas(r.Context(), sh, state == "aborted", int(min(limit, 1<<20)), shard.ReadOpts{})
			if err != nil {
				return err
			}
			out := []wire.Saga{}
			for _, v := range vs {
				sv := sagaOf(v, sh)
				if state != "stuck" || sv.Stuck {
					out = append(out, sv)
				}
			}
			writeJSON(w, http.StatusOK, wire.Sagas{Sagas: out})
			return nil
		})
		return
	}
	all := []wire.Saga{}
	for i := 0; i < s.h.Shards(); i++ {
		var part wire.Sagas
		q := r.URL.Query()
		q.Set("shard", fmt.Sprint(i))
		if rec, ok := s.inner(w, subRequest(r, r.URL.Path, q, nil), s.sagas); !ok {
			return
		} else if err := jsonUnmarshal(rec.body, &part); err != nil {
			writeError(w, &apiError{Status: 500, Code: "internal", Message: err.Error()})
			return
		}
		all = append(all, part.Sagas...)
	}
	writeJSON(w, http.StatusOK, wire.Sagas{Sagas: all})
}

// subRequest makes a GET of path with query q and path values pv, for a
// handler called from another: if that handler forwards it to a leader,
// the leader sees the right request.
func subRequest(r *http.Request, path string, q url.Values, pv map[string]string) *http.Request {
	sub := r.Clone(r.Context())
	sub.Method, sub.Body, sub.ContentLength = http.MethodGet, http.NoBody, 0
	sub.URL.Path, sub.URL.RawQuery = path, q.Encode()
	for k, v := range pv {
		sub.SetPathValue(k, v)
	}
	return sub
}

// inner runs handler h on sub and returns its answer; on a failure it
// relays the answer and returns false.
func (s *Server) inner(w http.ResponseWriter, sub *http.Request, h http.HandlerFunc) (*recorder, bool) {
	rec := &recorder{header: http.Header{}}
	h(rec, sub)
	if rec.status != http.StatusOK {
		relay(w, rec.status, rec.body)
		return nil, false
	}
	return rec, true
}

type resolveReq struct {
	Shard *int   `json:"shard,omitempty"`
	Note  string `json:"note"`
}

// resolveSaga asks the source shard's leader to give a saga up (fence the
// destination; abort, or complete if it was already credited).
func (s *Server) resolveSaga(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req resolveReq
	if ae := decode(r, &req); ae != nil {
		writeError(w, ae)
		return
	}
	if !ledger.ValidID(id) || len(req.Note) > ledger.MaxReferenceLen {
		writeError(w, badRequest("resolve needs a valid saga id and a note of at most 256 bytes"))
		return
	}
	if req.Shard == nil {
		rec, ok := s.inner(w, subRequest(r, "/v1/transfers/"+id, url.Values{}, map[string]string{"id": id}), s.getTransfer)
		if !ok {
			return
		}
		var v wire.Transfer
		if err := jsonUnmarshal(rec.body, &v); err != nil {
			writeError(w, &apiError{Status: 500, Code: "internal", Message: err.Error()})
			return
		}
		req.Shard = &v.Shard
	}
	if *req.Shard < 0 || *req.Shard >= s.h.Shards() {
		writeError(w, badRequest("shard out of range"))
		return
	}
	if ae := s.onLeader(r, *req.Shard, req, func(i int) error { return s.h.ResolveSaga(r.Context(), i, id, req.Note) }); ae != nil {
		writeError(w, ae)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "id": id, "shard": *req.Shard})
}

// shardAudit reads one shard's books through its leader.
func (s *Server) shardAudit(w http.ResponseWriter, r *http.Request) {
	sh, ae := s.shardParam(r)
	if ae != nil {
		writeError(w, ae)
		return
	}
	s.read(w, r, sh, func() error {
		b, err := s.h.Audit(r.Context(), sh)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, b)
		return nil
	})
}

// audit reads every shard's books twice and checks them (ledger.CheckAudit).
func (s *Server) audit(w http.ResponseWriter, r *http.Request) {
	var rounds [2][]ledger.ShardBooks
	for k := range rounds {
		for i := 0; i < s.h.Shards(); i++ {
			sh := fmt.Sprint(i)
			rec, ok := s.inner(w, subRequest(r, "/v1/shards/"+sh+"/audit", url.Values{}, map[string]string{"shard": sh}), s.shardAudit)
			if !ok {
				return
			}
			var b ledger.ShardBooks
			if err := jsonUnmarshal(rec.body, &b); err != nil {
				writeError(w, &apiError{Status: 500, Code: "internal", Message: err.Error()})
				return
			}
			rounds[k] = append(rounds[k], b)
		}
	}
	rep := ledger.CheckAudit(rounds[0], rounds[1])
	s.metrics.audited(rep.OK)
	writeJSON(w, http.StatusOK, rep)
}
