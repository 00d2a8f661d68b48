package node

import (
	"context"
	"net/http"
	"sync"
	"time"

	"tally/edge"
	"tally/ledger"
)

// sagaWaitMargin is how long before its deadline a request stops waiting
// for a saga and answers in_flight.
const sagaWaitMargin = 250 * time.Millisecond

// Submit runs cmd on shard i: here when this node leads it, else on the
// leader, waiting through an election until ctx's deadline.
func (s *Service) Submit(ctx context.Context, i int, cmd ledger.Command) ([]ledger.Result, error) {
	var res []ledger.Result
	err := s.onLeader(ctx, i,
		func() (err error) { res, err = s.h.Submit(ctx, i, cmd); return err },
		func(addr string) (err error) { res, err = s.peer.Submit(ctx, addr, i, cmd); return err })
	return res, err
}

// Batch runs each part of a batch of n items on its shard, concurrently,
// with the command cmd builds for the part, and merges the results in
// request order. Then it waits, until shortly before ctx's deadline, for
// the sagas the batch started on shards this node leads.
//
// If any part fails the whole batch fails (504 when another part
// committed or may have, else the failed part's answer): the client
// retries the whole batch with the same ids, and the parts that did
// commit answer "exists".
func (s *Service) Batch(ctx context.Context, n int, parts []edge.Part, cmd func(idx []int) ledger.Command) ([]ledger.Result, error) {
	if !forwarding(ctx) {
		// The caller routes by itself: refuse the whole batch if any part
		// is not ours, before any part is applied.
		for _, p := range parts {
			if id, addr := s.h.Leader(p.Shard); id != s.h.NodeID() {
				e := edge.Errorf(http.StatusMisdirectedRequest, edge.CodeNotLeader, "shard %d is led by %q", p.Shard, id)
				e.LeaderHTTP = addr
				return nil, e
			}
		}
	}
	out := make([]ledger.Result, n)
	errs := make([]*edge.Error, len(parts))
	var wg sync.WaitGroup
	for k, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Submit(ctx, p.Shard, cmd(p.Idx))
			if err == nil && len(res) != len(p.Idx) {
				err = edge.Internal("shard %d answered %d results for %d items", p.Shard, len(res), len(p.Idx))
			}
			if err != nil {
				errs[k], _ = Problem(err)
				return
			}
			for j, i := range p.Idx {
				out[i] = res[j]
			}
		}()
	}
	wg.Wait()
	if err := Merge(errs); err != nil {
		return nil, err
	}
	s.settle(ctx, out)
	return out, nil
}

// Merge is the answer to a batch whose parts ended with errs (nil for a
// part that was applied): nil when every part was, else the worst failure;
// a failure after another part committed is 504, since the failed part's
// own answer (a 503 says nothing was applied) would mislead the client.
func Merge(errs []*edge.Error) *edge.Error {
	var worst *edge.Error
	applied := 0
	for _, e := range errs {
		switch {
		case e == nil:
			applied++
		case worst == nil || edge.Rank(e) > edge.Rank(worst):
			worst = e
		}
	}
	if worst != nil && applied > 0 && worst.Status != http.StatusGatewayTimeout {
		e := edge.OutcomeUnknown("%d of %d shards applied their part of the batch; %s: %s",
			applied, len(errs), worst.Code, worst.Message)
		e.LeaderHTTP = worst.LeaderHTTP
		return e
	}
	return worst
}

// settle waits for the sagas among results whose source shard this node
// leads, until they finish or the deadline is near, and updates their
// results: a completed saga answers posted, an aborted one rejected with
// its reason, one still running in_flight (the client polls the
// transfer). Parts forwarded to another leader were settled there.
func (s *Service) settle(ctx context.Context, res []ledger.Result) {
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

// CloseAccount closes account id on its shard i; a missing account is a
// 404.
func (s *Service) CloseAccount(ctx context.Context, i int, id string) (ledger.Result, error) {
	res, err := s.Submit(ctx, i, ledger.Command{Kind: ledger.CmdCloseAccount, AccountID: id})
	if err != nil {
		return ledger.Result{}, err
	}
	if len(res) != 1 {
		return ledger.Result{}, edge.Internal("close answered %d results", len(res))
	}
	if res[0].Result == ledger.AccountNotFound {
		return ledger.Result{}, edge.NotFound(edge.CodeAccountNotFound, "account %s does not exist", id)
	}
	return res[0], nil
}
