package api

import (
	"errors"
	"fmt"
	"net/http"

	"tally/api/wire"
	"tally/ledger"
	"tally/shard"
)

func (s *Server) createTransfers(w http.ResponseWriter, r *http.Request) {
	var req wire.TransfersIn
	if ae := decodeBatch(r, &req, "transfers", func() any { return new(ledger.Transfer) }); ae != nil {
		writeError(w, ae)
		return
	}
	ts := req.Transfers
	n := len(ts)
	if n == 0 || n > ledger.MaxBatch {
		writeError(w, badRequest(fmt.Sprintf("transfers must hold 1 to %d items, got %d", ledger.MaxBatch, n)))
		return
	}
	shards := s.h.Shards()
	for i := range ts {
		if p := ledger.CheckTransfer(&ts[i]); p != nil {
			writeError(w, itemError(i, "transfers", p))
			return
		}
		if ts[i].Linked && i+1 < n && ledger.TransferShard(&ts[i], shards) != ledger.TransferShard(&ts[i+1], shards) {
			writeError(w, itemError(i, "transfers", &ledger.Problem{Code: ledger.CrossShardNotSupported,
				Msg: "a linked chain must stay on one shard; place its accounts together with a {tag}"}))
			return
		}
	}
	if p := ledger.CheckChains(ts); p != nil {
		writeError(w, itemError(n-1, "transfers", p))
		return
	}
	parts := split(n, func(i int) int { return ledger.TransferShard(&ts[i], shards) })
	res, ae := s.writeBatch(r, parts, n,
		func(idx []int) ledger.Command {
			c := ledger.Command{Kind: ledger.CmdTransfers, Transfers: make([]ledger.Transfer, len(idx))}
			for j, i := range idx {
				c.Transfers[j] = ts[i]
			}
			return c
		},
		func(idx []int) any {
			b := make([]ledger.Transfer, len(idx))
			for j, i := range idx {
				b[j] = ts[i]
			}
			return wire.TransfersIn{Transfers: b}
		})
	if ae != nil {
		writeError(w, ae)
		return
	}
	s.settle(r.Context(), res)
	writeJSON(w, http.StatusOK, wire.Results{Results: res})
}

// getTransfer looks the id up on ?shard=N, or on every shard: a transfer
// lives on the shard of its debit account (credit, for a deposit), which
// the id alone does not tell.
func (s *Server) getTransfer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !ledger.ValidID(id) {
		writeError(w, badRequest(fmt.Sprintf("transfer id %q is not valid", id)))
		return
	}
	o, ae := readOpts(r)
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
			rec, _, err := s.h.Transfer(r.Context(), sh, id, o)
			if err != nil {
				return s.notFoundAs(err, "transfer_not_found", "transfer "+id+" does not exist")
			}
			v := wire.TransferOf(&rec, sh)
			if in, ok := s.h.SagaInfo(sh, id); ok && v.Saga != nil {
				v.Saga.Attempts, v.Saga.LastError = in.Attempts, in.LastError
			}
			writeJSON(w, http.StatusOK, v)
			return nil
		})
		return
	}
	var failed *recorder
	for i := 0; i < s.h.Shards(); i++ {
		q := r.URL.Query()
		q.Set("shard", fmt.Sprint(i))
		sub := r.Clone(r.Context())
		sub.URL.RawQuery = q.Encode()
		rec := &recorder{header: http.Header{}}
		s.getTransfer(rec, sub)
		switch rec.status {
		case http.StatusOK:
			relay(w, rec.status, rec.body)
			return
		case http.StatusNotFound:
		default:
			failed = rec
		}
	}
	if failed != nil {
		relay(w, failed.status, failed.body)
		return
	}
	writeError(w, notFound("transfer_not_found", "transfer "+id+" does not exist"))
}

// notFoundAs turns a not-found read into its 404 answer.
func (s *Server) notFoundAs(err error, code, msg string) error {
	if errors.Is(err, shard.ErrNotFound) {
		return notFound(code, msg)
	}
	return err
}
