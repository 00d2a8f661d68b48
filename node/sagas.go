package node

import (
	"context"

	"tally/api/wire"
	"tally/ledger"
	"tally/shard"
)

// Saga states that GET /v1/sagas lists.
const (
	SagasInFlight = "in_flight"
	SagasStuck    = "stuck" // in flight for longer than shard.StuckAfter
	SagasAborted  = "aborted"
)

// SagasQuery lists the sagas of shard Shard in State, at most Limit.
type SagasQuery struct {
	Shard int    `json:"shard"`
	State string `json:"state"`
	Limit int    `json:"limit,omitempty"`
}

// Sagas lists sagas in state on shard only, or on every shard, each read
// on its source shard's leader (which alone knows the driver's attempts).
func (s *Service) Sagas(ctx context.Context, state string, limit int, only *int) ([]wire.Saga, error) {
	shards, err := s.shardsOf(only)
	if err != nil {
		return nil, err
	}
	all := []wire.Saga{}
	for _, i := range shards {
		part, err := s.sagasOn(ctx, SagasQuery{Shard: i, State: state, Limit: limit})
		if err != nil {
			return nil, err
		}
		all = append(all, part...)
	}
	return all, nil
}

func (s *Service) sagasOn(ctx context.Context, q SagasQuery) (out []wire.Saga, err error) {
	if err := s.checkShard(q.Shard); err != nil {
		return nil, err
	}
	err = s.onLeader(ctx, q.Shard, func() error {
		vs, err := s.h.Sagas(ctx, q.Shard, q.State == SagasAborted, q.Limit, shard.ReadOpts{})
		if err != nil {
			return err
		}
		out = []wire.Saga{}
		for _, v := range vs {
			sv := sagaOf(v, q.Shard)
			if q.State != SagasStuck || sv.Stuck {
				out = append(out, sv)
			}
		}
		return nil
	}, func(addr string) error { return s.peer.Call(ctx, addr, opSagas, q, &out) })
	return out, err
}

// sagaOf is one saga with what the saga driver knows of it.
func sagaOf(v shard.SagaView, sh int) wire.Saga {
	rec := v.Record
	out := wire.SagaOf(&rec, sh, v.Age)
	if v.Info != nil {
		out.Attempts, out.LastError = v.Info.Attempts, v.Info.LastError
	}
	out.Stuck = rec.Open() && v.Age > shard.StuckAfter
	return out
}

// ResolveQuery gives saga ID on its source shard Shard up, recording Note.
type ResolveQuery struct {
	Shard int    `json:"shard"`
	ID    string `json:"id"`
	Note  string `json:"note"`
}

// ResolveSaga asks the source shard's leader to give saga id up (fence
// the destination; abort, or complete if it was already credited). When
// only is nil the source shard is found by reading the transfer. It
// returns the source shard.
func (s *Service) ResolveSaga(ctx context.Context, id string, only *int, note string) (int, error) {
	if only == nil {
		t, err := s.Transfer(ctx, id, nil, shard.ReadOpts{})
		if err != nil {
			return 0, err
		}
		only = &t.Shard
	}
	_, err := s.resolveOn(ctx, ResolveQuery{Shard: *only, ID: id, Note: note})
	return *only, err
}

func (s *Service) resolveOn(ctx context.Context, q ResolveQuery) (out wire.OK, err error) {
	if err := s.checkShard(q.Shard); err != nil {
		return out, err
	}
	err = s.onLeader(ctx, q.Shard,
		func() error { return s.h.ResolveSaga(ctx, q.Shard, q.ID, q.Note) },
		func(addr string) error { return s.peer.Call(ctx, addr, opResolve, q, &out) })
	return wire.OK{OK: err == nil}, err
}

// AuditQuery reads the books of shard Shard.
type AuditQuery struct {
	Shard int `json:"shard"`
}

// ShardBooks reads shard i's books through its leader.
func (s *Service) ShardBooks(ctx context.Context, i int) (ledger.ShardBooks, error) {
	return s.auditOn(ctx, AuditQuery{Shard: i})
}

func (s *Service) auditOn(ctx context.Context, q AuditQuery) (b ledger.ShardBooks, err error) {
	if err := s.checkShard(q.Shard); err != nil {
		return b, err
	}
	err = s.onLeader(ctx, q.Shard, func() (err error) {
		b, err = s.h.Audit(ctx, q.Shard)
		return err
	}, func(addr string) error { return s.peer.Call(ctx, addr, opAudit, q, &b) })
	return b, err
}

// Audit reads every shard's books twice and checks them
// (ledger.CheckAudit): twice, so that money in flight between shards
// during the first round is told from money created or destroyed.
func (s *Service) Audit(ctx context.Context) (ledger.AuditReport, error) {
	var rounds [2][]ledger.ShardBooks
	for k := range rounds {
		for i := 0; i < s.h.Shards(); i++ {
			b, err := s.ShardBooks(ctx, i)
			if err != nil {
				return ledger.AuditReport{}, err
			}
			rounds[k] = append(rounds[k], b)
		}
	}
	return ledger.CheckAudit(rounds[0], rounds[1]), nil
}
