package api

import (
	"context"
	"net/http"

	"tally/api/wire"
	"tally/edge"
	"tally/ledger"
	"tally/shard"
)

// transferService is what the transfer handlers need of the node.
type transferService interface {
	Shards() int
	Batch(ctx context.Context, n int, parts []edge.Part, cmd func(idx []int) ledger.Command) ([]ledger.Result, error)
	Transfer(ctx context.Context, id string, only *int, o shard.ReadOpts) (wire.Transfer, error)
}

func (s *Server) transferRoutes() map[string]handler {
	return map[string]handler{
		"POST /v1/transfers":     s.createTransfers,
		"GET /v1/transfers/{id}": s.getTransfer,
	}
}

func (s *Server) createTransfers(r *http.Request) (any, error) {
	var req wire.TransfersIn
	if err := decodeBatch(r, &req, "transfers", func() any { return new(ledger.Transfer) }); err != nil {
		return nil, err
	}
	ts := req.Transfers
	n := len(ts)
	if e := edge.CheckBatch("transfers", n); e != nil {
		return nil, e
	}
	if e := edge.CheckTransfers(ts); e != nil {
		return nil, e
	}
	shards := s.transfers.Shards()
	place := make([]int, n)
	for i := range ts {
		place[i] = ledger.TransferShard(&ts[i], shards)
	}
	if e := edge.CheckChainShards(ts, place); e != nil {
		return nil, e
	}
	parts := edge.Split(n, func(i int) int { return place[i] })
	res, err := s.transfers.Batch(r.Context(), n, parts, func(idx []int) ledger.Command {
		c := ledger.Command{Kind: ledger.CmdTransfers, Transfers: make([]ledger.Transfer, len(idx))}
		for j, i := range idx {
			c.Transfers[j] = ts[i]
		}
		return c
	})
	if err != nil {
		return nil, err
	}
	return wire.Results{Results: res}, nil
}

// getTransfer looks the id up on ?shard=N, or on every shard.
func (s *Server) getTransfer(r *http.Request) (any, error) {
	id := r.PathValue("id")
	if !ledger.ValidID(id) {
		return nil, edge.Invalid("transfer id %q is not valid", id)
	}
	o, err := readOpts(r)
	if err != nil {
		return nil, err
	}
	only, err := shardQuery(r, s.transfers.Shards())
	if err != nil {
		return nil, err
	}
	return s.transfers.Transfer(r.Context(), id, only, o)
}
