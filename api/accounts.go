package api

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"time"

	"tally/api/wire"
	"tally/edge"
	"tally/ledger"
	"tally/node"
	"tally/shard"
)

// accountService is what the account handlers need of the node.
type accountService interface {
	Shards() int
	Batch(ctx context.Context, n int, parts []edge.Part, cmd func(idx []int) ledger.Command) ([]ledger.Result, error)
	Account(ctx context.Context, q node.AccountQuery) (wire.Account, error)
	World(ctx context.Context, q node.AccountQuery, currency string) (node.World, error)
	CloseAccount(ctx context.Context, i int, id string) (ledger.Result, error)
	History(ctx context.Context, q node.HistoryQuery) ([]ledger.Event, error)
}

func (s *Server) accountRoutes() map[string]handler {
	return map[string]handler{
		"POST /v1/accounts":             s.createAccounts,
		"GET /v1/accounts/{id}":         s.getAccount,
		"POST /v1/accounts/{id}/close":  s.closeAccount,
		"GET /v1/accounts/{id}/history": s.history,
	}
}

func (s *Server) createAccounts(r *http.Request) (any, error) {
	var req wire.AccountsIn
	if err := decodeBatch(r, &req, "accounts", func() any { return new(wire.AccountIn) }); err != nil {
		return nil, err
	}
	n := len(req.Accounts)
	if e := edge.CheckBatch("accounts", n); e != nil {
		return nil, e
	}
	accts, e := edge.Accounts(req.Accounts)
	if e != nil {
		return nil, e
	}
	shards := s.accounts.Shards()
	parts := edge.Split(n, func(i int) int { return shard.Of(accts[i].ID, shards) })
	res, err := s.accounts.Batch(r.Context(), n, parts, func(idx []int) ledger.Command {
		c := ledger.Command{Kind: ledger.CmdOpenAccounts, Accounts: make([]ledger.Account, len(idx))}
		for j, i := range idx {
			c.Accounts[j] = accts[i]
		}
		return c
	})
	if err != nil {
		return nil, err
	}
	return wire.Results{Results: res}, nil
}

// readOpts parses consistency and min_seq.
func readOpts(r *http.Request) (shard.ReadOpts, error) {
	var o shard.ReadOpts
	q := r.URL.Query()
	switch c := q.Get("consistency"); c {
	case "", "linearizable":
	case "stale":
		o.Stale = true
	default:
		return o, edge.Invalid("consistency must be linearizable or stale, not %q", c)
	}
	seq, e := edge.Uint(q, "min_seq")
	if e != nil {
		return o, e
	}
	o.MinSeq = seq
	return o, nil
}

// accountQuery reads the account of the path and its read options. A
// system account (@world) lives on every shard: it takes ?currency, and
// ?shard for one shard's part (world is true without it: every shard).
func (s *Server) accountQuery(r *http.Request) (q node.AccountQuery, currency string, world bool, err error) {
	q.ID = r.PathValue("id")
	if !ledger.ValidID(q.ID) {
		return q, "", false, edge.Invalid("account id %q is not valid", q.ID)
	}
	if q.Opts, err = readOpts(r); err != nil {
		return q, "", false, err
	}
	if !ledger.IsSystem(q.ID) {
		q.Key, q.Shard = q.ID, shard.Of(q.ID, s.accounts.Shards())
		return q, "", false, nil
	}
	currency = r.URL.Query().Get("currency")
	if !ledger.ValidCurrency(currency) {
		return q, "", false, edge.Invalid("system account %s needs ?currency=", q.ID)
	}
	q.Key = ledger.AccountKey(q.ID, currency)
	only, err := shardQuery(r, s.accounts.Shards())
	if err != nil || only == nil {
		return q, currency, err == nil, err
	}
	q.Shard = *only
	return q, currency, false, nil
}

func (s *Server) getAccount(r *http.Request) (any, error) {
	q, currency, world, err := s.accountQuery(r)
	if err != nil {
		return nil, err
	}
	// A time means the same on every shard, so the sum over shards takes
	// it too; a seq names one shard's position and only one shard's read
	// takes it.
	if q.AtTime, err = atTime(r); err != nil {
		return nil, err
	}
	if world {
		return s.accounts.World(r.Context(), q, currency)
	}
	atSeq, e := edge.Uint(r.URL.Query(), "at_seq")
	if e != nil {
		return nil, e
	}
	q.AtSeq = atSeq
	return s.accounts.Account(r.Context(), q)
}

// atTime parses ?at_time=RFC3339, which excludes ?at_seq. A time outside
// what log time can hold (1678 to 2262) is clamped to its nearest end:
// before every event, or after them all.
func atTime(r *http.Request) (*ledger.Time, error) {
	q := r.URL.Query()
	if !q.Has("at_time") {
		return nil, nil
	}
	if q.Has("at_seq") {
		return nil, edge.Invalid("at_seq and at_time exclude each other")
	}
	v := q.Get("at_time")
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return nil, edge.Invalid("at_time must be an RFC 3339 time such as 2026-01-02T15:04:05Z, not %q (a + in an offset is %%2B in a URL)", v)
	}
	var at ledger.Time
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		at = math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		at = math.MaxInt64
	default:
		at = ledger.Time(t.UnixNano())
	}
	return &at, nil
}

func (s *Server) closeAccount(r *http.Request) (any, error) {
	id := r.PathValue("id")
	if !ledger.ValidID(id) || ledger.IsSystem(id) {
		return nil, edge.Invalid("account id %q is not valid", id)
	}
	return s.accounts.CloseAccount(r.Context(), shard.Of(id, s.accounts.Shards()), id)
}

func (s *Server) history(r *http.Request) (any, error) {
	aq, _, world, err := s.accountQuery(r)
	if err != nil {
		return nil, err
	}
	if world {
		return nil, edge.Invalid("history of a system account needs ?shard=")
	}
	q := node.HistoryQuery{Shard: aq.Shard, Key: aq.Key, Opts: aq.Opts}
	after, e := edge.Uint(r.URL.Query(), "after")
	if e != nil {
		return nil, e
	}
	q.After = after
	if q.Limit, err = limitQuery(r); err != nil {
		return nil, err
	}
	switch order := r.URL.Query().Get("order"); order {
	case "", "asc":
	case "desc":
		q.Desc = true
	default:
		return nil, edge.Invalid("order must be asc or desc")
	}
	evs, err := s.accounts.History(r.Context(), q)
	if err != nil {
		return nil, err
	}
	return page(evs, q.Limit), nil
}

// pageLimit is the size of a page asked with ?limit=limit: 100 when not
// given, at most shard.MaxPage.
func pageLimit(limit int) int {
	if limit == 0 {
		return 100
	}
	return min(limit, shard.MaxPage)
}

// page wraps events with the cursor of the next page ("" on the last).
func page(evs []ledger.Event, limit int) wire.Page {
	if evs == nil {
		evs = []ledger.Event{}
	}
	next := ""
	if len(evs) > 0 && len(evs) >= pageLimit(limit) {
		next = fmt.Sprint(evs[len(evs)-1].Seq)
	}
	return wire.Page{Events: evs, Next: next}
}
