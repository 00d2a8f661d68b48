package node

import (
	"context"
	"errors"
	"math/big"
	"net/http"

	"tally/api/wire"
	"tally/edge"
	"tally/ledger"
	"tally/shard"
)

// AccountQuery asks for account ID (stored under Key) on shard Shard, at
// the shard's seq AtSeq when it is set, or else right after the shard's
// last event at or before log time AtTime when that is set.
type AccountQuery struct {
	Shard  int            `json:"shard"`
	ID     string         `json:"id"`
	Key    string         `json:"key"`
	AtSeq  uint64         `json:"at_seq,omitempty"`
	AtTime *ledger.Time   `json:"at_time,omitempty"`
	Opts   shard.ReadOpts `json:"opts"`
}

// Account reads one account, on the shard's leader unless q.Opts allows
// this replica.
func (s *Service) Account(ctx context.Context, q AccountQuery) (out wire.Account, err error) {
	if err := s.checkShard(q.Shard); err != nil {
		return out, err
	}
	err = s.onLeader(ctx, q.Shard, func() error {
		if q.AtTime != nil {
			a, seq, err := s.h.AccountAtTime(ctx, q.Shard, q.Key, *q.AtTime, q.Opts)
			if err != nil {
				return notFoundAs(err, edge.CodeAccountNotFound, "account %s did not exist at %s", q.ID, fmtTime(*q.AtTime))
			}
			out = wire.AccountOf(&a, q.Shard, seq)
			return nil
		}
		if q.AtSeq > 0 {
			a, err := s.h.AccountAt(ctx, q.Shard, q.Key, q.AtSeq, q.Opts)
			if err != nil {
				return notFoundAs(err, edge.CodeAccountNotFound, "account %s did not exist at seq %d", q.ID, q.AtSeq)
			}
			out = wire.AccountOf(&a, q.Shard, q.AtSeq)
			return nil
		}
		a, seq, err := s.h.Account(ctx, q.Shard, q.Key, q.Opts)
		if err != nil {
			return notFoundAs(err, edge.CodeAccountNotFound, "account %s does not exist", q.ID)
		}
		out = wire.AccountOf(&a, q.Shard, seq)
		return nil
	}, func(addr string) error { return s.peer.Call(ctx, addr, opAccount, q, &out) })
	return out, err
}

// fmtTime is t as RFC 3339, as the API writes times.
func fmtTime(t ledger.Time) string {
	b, _ := t.MarshalText() // never fails
	return string(b)
}

// World is a system account summed over every shard. The sums are big
// integers: each shard's are int64, their total need not be.
type World struct {
	ID             string   `json:"id"`
	Currency       string   `json:"currency"`
	DebitsPosted   *big.Int `json:"debits_posted"`
	CreditsPosted  *big.Int `json:"credits_posted"`
	DebitsPending  *big.Int `json:"debits_pending"`
	CreditsPending *big.Int `json:"credits_pending"`
	Balance        *big.Int `json:"balance"`
	Shard          int      `json:"shard"` // always -1: every shard
}

// World reads system account q.ID in one currency (its Key) on every
// shard, each at q.Opts through its leader, and sums them.
func (s *Service) World(ctx context.Context, q AccountQuery, currency string) (World, error) {
	sum := [4]*big.Int{new(big.Int), new(big.Int), new(big.Int), new(big.Int)}
	for i := 0; i < s.h.Shards(); i++ {
		q.Shard = i
		v, err := s.Account(ctx, q)
		var e *edge.Error
		if errors.As(err, &e) && e.Status == http.StatusNotFound {
			continue
		}
		if err != nil {
			return World{}, err
		}
		for k, x := range []int64{v.DebitsPosted, v.CreditsPosted, v.DebitsPending, v.CreditsPending} {
			sum[k].Add(sum[k], big.NewInt(x))
		}
	}
	return World{ID: q.ID, Currency: currency, DebitsPosted: sum[0], CreditsPosted: sum[1],
		DebitsPending: sum[2], CreditsPending: sum[3], Balance: new(big.Int).Sub(sum[1], sum[0]), Shard: -1}, nil
}

// TransferQuery asks for transfer ID on shard Shard.
type TransferQuery struct {
	Shard int            `json:"shard"`
	ID    string         `json:"id"`
	Opts  shard.ReadOpts `json:"opts"`
}

// Transfer reads transfer id on shard only, or looks for it on every
// shard when only is nil: a transfer lives on the shard of its debit
// account (credit, for a deposit), which the id alone does not tell.
func (s *Service) Transfer(ctx context.Context, id string, only *int, o shard.ReadOpts) (wire.Transfer, error) {
	shards, err := s.shardsOf(only)
	if err != nil {
		return wire.Transfer{}, err
	}
	var failed error
	for _, i := range shards {
		v, err := s.transferOn(ctx, TransferQuery{Shard: i, ID: id, Opts: o})
		var e *edge.Error
		switch {
		case err == nil:
			return v, nil
		case errors.As(err, &e) && e.Code == edge.CodeTransferNotFound:
		default:
			failed = err
		}
	}
	if failed != nil {
		return wire.Transfer{}, failed
	}
	return wire.Transfer{}, edge.NotFound(edge.CodeTransferNotFound, "transfer %s does not exist", id)
}

func (s *Service) transferOn(ctx context.Context, q TransferQuery) (out wire.Transfer, err error) {
	if err := s.checkShard(q.Shard); err != nil {
		return out, err
	}
	err = s.onLeader(ctx, q.Shard, func() error {
		rec, _, err := s.h.Transfer(ctx, q.Shard, q.ID, q.Opts)
		if err != nil {
			return notFoundAs(err, edge.CodeTransferNotFound, "transfer %s does not exist", q.ID)
		}
		out = wire.TransferOf(&rec, q.Shard)
		if in, ok := s.h.SagaInfo(q.Shard, q.ID); ok && out.Saga != nil {
			out.Saga.Attempts, out.Saga.LastError = in.Attempts, in.LastError
		}
		return nil
	}, func(addr string) error { return s.peer.Call(ctx, addr, opTransfer, q, &out) })
	return out, err
}

// HistoryQuery asks for the events of the account stored under Key on
// shard Shard, after seq After, at most Limit, newest first when Desc.
type HistoryQuery struct {
	Shard int            `json:"shard"`
	Key   string         `json:"key"`
	After uint64         `json:"after,omitempty"`
	Limit int            `json:"limit,omitempty"`
	Desc  bool           `json:"desc,omitempty"`
	Opts  shard.ReadOpts `json:"opts"`
}

// History reads one page of an account's events.
func (s *Service) History(ctx context.Context, q HistoryQuery) (evs []ledger.Event, err error) {
	if err := s.checkShard(q.Shard); err != nil {
		return nil, err
	}
	err = s.onLeader(ctx, q.Shard, func() (err error) {
		evs, err = s.h.History(ctx, q.Shard, q.Key, q.After, q.Limit, q.Desc, q.Opts)
		return err
	}, func(addr string) error { return s.peer.Call(ctx, addr, opHistory, q, &evs) })
	return evs, err
}

// Events reads a page of shard i's log from this replica: only applied,
// hence committed, events are ever read.
func (s *Service) Events(i int, after uint64, limit int) ([]ledger.Event, error) {
	if err := s.checkShard(i); err != nil {
		return nil, err
	}
	return s.h.Events(i, after, limit)
}

// State is this replica's view of shard i: its Raft state and a digest of
// its committed state.
func (s *Service) State(i int) (shard.ReplicaStatus, shard.Summary, error) {
	if err := s.checkShard(i); err != nil {
		return shard.ReplicaStatus{}, shard.Summary{}, err
	}
	st, err := s.h.Status(i)
	if err != nil {
		return st, shard.Summary{}, err
	}
	sum, err := s.h.Summary(i)
	return st, sum, err
}

// Verify replays this replica's log of shard i and compares it with the
// stored state; the report's error says what differs.
func (s *Service) Verify(ctx context.Context, i int) (shard.VerifyReport, error) {
	if err := s.checkShard(i); err != nil {
		return shard.VerifyReport{}, err
	}
	return s.h.Verify(ctx, i)
}

// HashAt is the hash of this replica's event seq of shard i.
func (s *Service) HashAt(i int, seq uint64) (ledger.Hash, error) {
	if err := s.checkShard(i); err != nil {
		return ledger.Hash{}, err
	}
	h, err := s.h.HashAt(i, seq)
	return h, notFoundAs(err, edge.CodeNotFound, "shard %d has no event %d here", i, seq)
}

// NodeID is this node's id.
func (s *Service) NodeID() string { return s.h.NodeID() }
