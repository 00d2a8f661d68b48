package api

import (
	"context"
	"net/http"

	"tally/api/wire"
	"tally/edge"
	"tally/ledger"
	"tally/node"
)

// sagaService is what the saga and audit handlers need of the node.
type sagaService interface {
	Shards() int
	Sagas(ctx context.Context, state string, limit int, only *int) ([]wire.Saga, error)
	ResolveSaga(ctx context.Context, id string, only *int, note string) (int, error)
	ShardBooks(ctx context.Context, i int) (ledger.ShardBooks, error)
	Audit(ctx context.Context) (ledger.AuditReport, error)
}

func (s *Server) sagaRoutes() map[string]handler {
	return map[string]handler{
		"GET /v1/sagas":                s.listSagas,
		"POST /v1/sagas/{id}/resolve":  s.resolveSaga,
		"GET /v1/audit":                s.audit,
		"GET /v1/shards/{shard}/audit": s.shardAudit,
	}
}

// listSagas lists sagas by state: in_flight (default), stuck (in flight
// for longer than 30 s) or aborted; on ?shard=N or all shards.
func (s *Server) listSagas(r *http.Request) (any, error) {
	state := r.URL.Query().Get("state")
	switch state {
	case "":
		state = node.SagasInFlight
	case node.SagasInFlight, node.SagasStuck, node.SagasAborted:
	default:
		return nil, edge.Invalid("state must be in_flight, stuck or aborted")
	}
	limit, err := limitQuery(r)
	if err != nil {
		return nil, err
	}
	only, err := shardQuery(r, s.sagas.Shards())
	if err != nil {
		return nil, err
	}
	all, err := s.sagas.Sagas(r.Context(), state, limit, only)
	if err != nil {
		return nil, err
	}
	return wire.Sagas{Sagas: all}, nil
}

type resolveReq struct {
	Shard *int   `json:"shard,omitempty"`
	Note  string `json:"note"`
}

// resolveSaga gives a saga up on its source shard's leader.
func (s *Server) resolveSaga(r *http.Request) (any, error) {
	id := r.PathValue("id")
	var req resolveReq
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if !ledger.ValidID(id) || len(req.Note) > ledger.MaxReferenceLen {
		return nil, edge.Invalid("resolve needs a valid saga id and a note of at most %d bytes", ledger.MaxReferenceLen)
	}
	if req.Shard != nil && (*req.Shard < 0 || *req.Shard >= s.sagas.Shards()) {
		return nil, edge.Invalid("shard out of range")
	}
	sh, err := s.sagas.ResolveSaga(r.Context(), id, req.Shard, req.Note)
	if err != nil {
		return nil, err
	}
	return map[string]any{"ok": true, "id": id, "shard": sh}, nil
}

// shardAudit reads one shard's books through its leader.
func (s *Server) shardAudit(r *http.Request) (any, error) {
	sh, err := shardParam(r, s.sagas.Shards())
	if err != nil {
		return nil, err
	}
	return s.sagas.ShardBooks(r.Context(), sh)
}

// audit reads every shard's books twice and checks them.
func (s *Server) audit(r *http.Request) (any, error) {
	rep, err := s.sagas.Audit(r.Context())
	if err != nil {
		return nil, err
	}
	s.metrics.audited(rep.OK)
	return rep, nil
}
