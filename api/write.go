package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"tally/api/wire"
	"tally/ledger"
)

// part is the slice of a batch that one shard owns, as indices into the
// request, in request order.
type part struct {
	shard int
	idx   []int
}

func split(n int, shardOf func(i int) int) []part {
	var parts []part
	pos := map[int]int{}
	for i := 0; i < n; i++ {
		s := shardOf(i)
		p, ok := pos[s]
		if !ok {
			p = len(parts)
			pos[s] = p
			parts = append(parts, part{shard: s})
		}
		parts[p].idx = append(parts[p].idx, i)
	}
	return parts
}

// writeBatch runs each shard's part of a batch on that shard's leader,
// concurrently, and merges the results in request order. If any part
// fails the whole request fails (504 when any part committed or may have,
// else the failed part's answer): the client retries the whole batch with
// the same ids, and the parts that did commit answer "exists".
func (s *Server) writeBatch(r *http.Request, parts []part, n int,
	cmd func(idx []int) ledger.Command, body func(idx []int) any) ([]ledger.Result, *apiError) {
	if r.URL.Query().Get("forward") == "false" {
		// The caller routes by itself: refuse the whole batch if any part
		// is not ours, before any part is applied.
		for _, p := range parts {
			if id, http := s.h.Leader(p.shard); id != s.h.NodeID() {
				return nil, &apiError{Status: 421, Code: "not_leader", LeaderHTTP: http,
					Message: fmt.Sprintf("shard %d is led by %q", p.shard, id)}
			}
		}
	}
	out := make([]ledger.Result, n)
	errs := make([]*apiError, len(parts))
	var wg sync.WaitGroup
	for k, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, ae := s.submit(r.Context(), r, p.shard, cmd(p.idx), func() any { return body(p.idx) })
			if ae == nil && len(res) != len(p.idx) {
				ae = &apiError{Status: 500, Code: "internal", Message: fmt.Sprintf("shard %d answered %d results for %d items", p.shard, len(res), len(p.idx))}
			}
			if ae != nil {
				errs[k] = ae
				return
			}
			for j, i := range p.idx {
				out[i] = res[j]
			}
		}()
	}
	wg.Wait()
	var worst *apiError
	applied := 0
	for _, e := range errs {
		switch {
		case e == nil:
			applied++
		case worst == nil || rank(e) > rank(worst):
			worst = e
		}
	}
	if worst != nil && applied > 0 && worst.Status != http.StatusGatewayTimeout {
		// Another shard's part did commit, so the failed part's own answer
		// (a 503 says nothing was applied) would mislead the client.
		worst = &apiError{Status: http.StatusGatewayTimeout, Code: "outcome_unknown", LeaderHTTP: worst.LeaderHTTP,
			Message: fmt.Sprintf("%d of %d shards applied their part of the batch; %s: %s; retry with the same ids",
				applied, len(parts), worst.Code, worst.Message)}
	}
	if worst != nil {
		return nil, worst
	}
	return out, nil
}

// rank orders part failures: a possible commit outranks a definite
// failure, which outranks anything else.
func rank(e *apiError) int {
	switch e.Status {
	case http.StatusGatewayTimeout:
		return 3
	case http.StatusServiceUnavailable:
		return 2
	}
	return 1
}

// submit runs cmd on shard i: here when this node leads it, else on the
// leader, waiting through an election until the deadline.
func (s *Server) submit(ctx context.Context, r *http.Request, i int, cmd ledger.Command, body func() any) ([]ledger.Result, *apiError) {
	for {
		res, err := s.h.Submit(ctx, i, cmd)
		if err == nil {
			return res, nil
		}
		addr, retry, ae := s.next(ctx, r, err)
		if ae != nil {
			return nil, ae
		}
		if retry {
			continue
		}
		b, err := json.Marshal(body())
		if err != nil {
			return nil, &apiError{Status: 500, Code: "internal", Message: err.Error()}
		}
		status, rb, ae := s.forward(ctx, r, addr, b)
		if ae != nil {
			return nil, ae
		}
		if status != http.StatusOK {
			return nil, errorOf(status, rb)
		}
		var env wire.Results
		if err := json.Unmarshal(rb, &env); err != nil {
			return nil, &apiError{Status: 504, Code: "outcome_unknown", Message: "leader's answer unreadable: " + err.Error()}
		}
		return env.Results, nil
	}
}
