package api

import (
	"fmt"
	"math/big"
	"net/http"

	"tally/api/wire"
	"tally/ledger"
	"tally/shard"
)

func (s *Server) createAccounts(w http.ResponseWriter, r *http.Request) {
	var req wire.AccountsIn
	if ae := decodeBatch(r, &req, "accounts", func() any { return new(wire.AccountIn) }); ae != nil {
		writeError(w, ae)
		return
	}
	n := len(req.Accounts)
	if n == 0 || n > ledger.MaxBatch {
		writeError(w, badRequest(fmt.Sprintf("accounts must hold 1 to %d items, got %d", ledger.MaxBatch, n)))
		return
	}
	accts := make([]ledger.Account, n)
	for i, a := range req.Accounts {
		accts[i] = ledger.Account{ID: a.ID, Currency: a.Currency, AllowNegative: a.AllowNegative, Metadata: a.Metadata}
		if p := ledger.CheckAccount(&accts[i]); p != nil {
			writeError(w, itemError(i, "accounts", p))
			return
		}
	}
	shards := s.h.Shards()
	parts := split(n, func(i int) int { return shard.Of(accts[i].ID, shards) })
	res, ae := s.writeBatch(r, parts, n,
		func(idx []int) ledger.Command {
			c := ledger.Command{Kind: ledger.CmdOpenAccounts, Accounts: make([]ledger.Account, len(idx))}
			for j, i := range idx {
				c.Accounts[j] = accts[i]
			}
			return c
		},
		func(idx []int) any {
			b := make([]wire.AccountIn, len(idx))
			for j, i := range idx {
				b[j] = req.Accounts[i]
			}
			return wire.AccountsIn{Accounts: b}
		})
	if ae != nil {
		writeError(w, ae)
		return
	}
	writeJSON(w, http.StatusOK, wire.Results{Results: res})
}

// readOpts parses consistency and min_seq.
func readOpts(r *http.Request) (shard.ReadOpts, *apiError) {
	var o shard.ReadOpts
	switch c := r.URL.Query().Get("consistency"); c {
	case "", "linearizable":
	case "stale":
		o.Stale = true
	default:
		return o, badRequest(fmt.Sprintf("consistency must be linearizable or stale, not %q", c))
	}
	seq, ae := uintParam(r, "min_seq")
	o.MinSeq = seq
	return o, ae
}

// accountShard finds the shard of the account in the path. @world lives
// on every shard: it takes ?currency and ?shard (all shards: -1).
func (s *Server) accountShard(r *http.Request) (id, key string, sh int, ae *apiError) {
	id = r.PathValue("id")
	if !ledger.ValidID(id) {
		return "", "", 0, badRequest(fmt.Sprintf("account id %q is not valid", id))
	}
	if !ledger.IsSystem(id) {
		return id, id, shard.Of(id, s.h.Shards()), nil
	}
	cur := r.URL.Query().Get("currency")
	if !ledger.ValidCurrency(cur) {
		return "", "", 0, badRequest(fmt.Sprintf("system account %s needs ?currency=", id))
	}
	sh = -1
	if v := r.URL.Query().Get("shard"); v != "" {
		n, ae := uintParam(r, "shard")
		if ae != nil || n >= uint64(s.h.Shards()) {
			return "", "", 0, badRequest("shard out of range")
		}
		sh = int(n)
	}
	return id, ledger.AccountKey(id, cur), sh, nil
}

func (s *Server) getAccount(w http.ResponseWriter, r *http.Request) {
	id, key, sh, ae := s.accountShard(r)
	if ae == nil && sh < 0 {
		s.sumWorld(w, r, key)
		return
	}
	o, ae2 := readOpts(r)
	if ae == nil {
		ae = ae2
	}
	if ae != nil {
		writeError(w, ae)
		return
	}
	atSeq, ae := uintParam(r, "at_seq")
	if ae != nil {
		writeError(w, ae)
		return
	}
	s.read(w, r, sh, func() error {
		if atSeq > 0 {
			a, err := s.h.AccountAt(r.Context(), sh, key, atSeq, o)
			if err != nil {
				return s.notFoundAs(err, "account_not_found", fmt.Sprintf("account %s did not exist at seq %d", id, atSeq))
			}
			writeJSON(w, http.StatusOK, wire.AccountOf(&a, sh, atSeq))
			return nil
		}
		a, seq, err := s.h.Account(r.Context(), sh, key, o)
		if err != nil {
			return s.notFoundAs(err, "account_not_found", "account "+id+" does not exist")
		}
		writeJSON(w, http.StatusOK, wire.AccountOf(&a, sh, seq))
		return nil
	})
}

// sumWorld answers a read of @world in one currency: the sum over every
// shard, each read at the requested consistency through its leader.
func (s *Server) sumWorld(w http.ResponseWriter, r *http.Request, key string) {
	sum := [4]*big.Int{new(big.Int), new(big.Int), new(big.Int), new(big.Int)}
	for i := 0; i < s.h.Shards(); i++ {
		q := r.URL.Query()
		q.Set("shard", fmt.Sprint(i))
		sub := r.Clone(r.Context())
		sub.URL.RawQuery = q.Encode()
		rec := &recorder{header: http.Header{}}
		s.getAccount(rec, sub)
		if rec.status == http.StatusNotFound {
			continue
		}
		if rec.status != http.StatusOK {
			relay(w, rec.status, rec.body)
			return
		}
		var v wire.Account
		if err := jsonUnmarshal(rec.body, &v); err != nil {
			writeError(w, &apiError{Status: 500, Code: "internal", Message: err.Error()})
			return
		}
		for k, x := range []int64{v.DebitsPosted, v.CreditsPosted, v.DebitsPending, v.CreditsPending} {
			sum[k].Add(sum[k], big.NewInt(x))
		}
	}
	bal := new(big.Int).Sub(sum[1], sum[0])
	writeJSON(w, http.StatusOK, map[string]any{"id": ledger.World, "currency": key[len(ledger.World)+1:],
		"debits_posted": sum[0], "credits_posted": sum[1], "debits_pending": sum[2], "credits_pending": sum[3],
		"balance": bal, "shard": -1})
}

func (s *Server) closeAccount(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !ledger.ValidID(id) || ledger.IsSystem(id) {
		writeError(w, badRequest(fmt.Sprintf("account id %q is not valid", id)))
		return
	}
	sh := shard.Of(id, s.h.Shards())
	res, ae := s.submit(r.Context(), r, sh, ledger.Command{Kind: ledger.CmdCloseAccount, AccountID: id}, func() any { return nil })
	if ae != nil {
		writeError(w, ae)
		return
	}
	if len(res) != 1 {
		writeError(w, &apiError{Status: 500, Code: "internal", Message: "close answered no result"})
		return
	}
	if res[0].Result == ledger.AccountNotFound {
		writeError(w, notFound("account_not_found", "account "+id+" does not exist"))
		return
	}
	writeJSON(w, http.StatusOK, res[0])
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	_, key, sh, ae := s.accountShard(r)
	if ae == nil && sh < 0 {
		ae = badRequest("history of a system account needs ?shard=")
	}
	o, ae2 := readOpts(r)
	after, ae3 := uintParam(r, "after")
	limit, ae4 := uintParam(r, "limit")
	order := r.URL.Query().Get("order")
	for _, e := range []*apiError{ae, ae2, ae3, ae4} {
		if e != nil {
			writeError(w, e)
			return
		}
	}
	if order != "" && order != "asc" && order != "desc" {
		writeError(w, badRequest("order must be asc or desc"))
		return
	}
	s.read(w, r, sh, func() error {
		evs, err := s.h.History(r.Context(), sh, key, after, int(min(limit, 1<<20)), order == "desc", o)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, page(evs, limit))
		return nil
	})
}

// page wraps events with the cursor of the next page ("" on the last).
func page(evs []ledger.Event, limit uint64) wire.Page {
	if evs == nil {
		evs = []ledger.Event{}
	}
	next := ""
	want := limit
	if want == 0 {
		want = 100
	}
	if len(evs) > 0 && uint64(len(evs)) >= min(want, 1000) {
		next = fmt.Sprint(evs[len(evs)-1].Seq)
	}
	return wire.Page{Events: evs, Next: next}
}
