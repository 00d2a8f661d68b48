package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"tally/api/wire"
	"tally/edge"
	"tally/ledger"
)

// partReply is how one edge.Part of a batch ended.
type partReply struct {
	o       outcome
	status  int               // the node's final status, 0 without one
	body    []byte            // the node's answer when not merged
	results []json.RawMessage // the part's results when status is 200
	err     error             // why the edge.Part has no usable answer
}

// batchKind is what differs between the two batch endpoints.
type batchKind[T any] struct {
	list string // the body's list, as errors name it
	path string
	// decode decodes a body strictly and returns its items.
	decode func(body []byte) ([]T, *edge.Error)
	// check validates every item the way the node does.
	check func(items []T) *edge.Error
	// shard places an item among n shards.
	shard func(item *T, n int) int
	// span refuses what cannot be split by shard; nil when anything can.
	span func(items []T, shards []int) *edge.Error
	// wrap makes a part's body.
	wrap func(items []T) any
	// one sends a batch that lives on one shard; nil when it goes as the
	// client sent it.
	one func(p *Proxy, ctx context.Context, w http.ResponseWriter, r *http.Request, shard int, body []byte, items []T)
}

var transfersBatch = batchKind[ledger.Transfer]{
	list: "transfers",
	path: transfersPath,
	decode: func(body []byte) ([]ledger.Transfer, *edge.Error) {
		var in wire.TransfersIn
		e := edge.DecodeBatch(body, &in, "transfers", func() any { return new(ledger.Transfer) })
		return in.Transfers, e
	},
	check: edge.CheckTransfers,
	shard: ledger.TransferShard,
	span:  edge.CheckChainShards,
	wrap:  func(ts []ledger.Transfer) any { return wire.TransfersIn{Transfers: ts} },
	one:   (*Proxy).sendTransfers,
}

var accountsBatch = batchKind[wire.AccountIn]{
	list: "accounts",
	path: "/v1/accounts",
	decode: func(body []byte) ([]wire.AccountIn, *edge.Error) {
		var in wire.AccountsIn
		e := edge.DecodeBatch(body, &in, "accounts", func() any { return new(wire.AccountIn) })
		return in.Accounts, e
	},
	check: edge.CheckAccounts,
	shard: func(a *wire.AccountIn, n int) int { return ledger.ShardOf(a.ID, n) },
	wrap:  func(as []wire.AccountIn) any { return wire.AccountsIn{Accounts: as} },
}

// createBatch validates a batch whole, then sends it by shard.
func createBatch[T any](p *Proxy, k *batchKind[T], w http.ResponseWriter, r *http.Request, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	body, items, shards, e := validateBatch(ctx, p, k, w, r)
	if e != nil {
		edge.WriteError(w, e)
		return
	}
	ps := edge.Split(len(shards), func(i int) int { return shards[i] })
	switch {
	case len(ps) == 1 && k.one != nil:
		k.one(p, ctx, w, r, ps[0].Shard, body, items)
	case len(ps) == 1:
		// One shard: the batch goes as the client sent it.
		c := p.newCall(ps[0].Shard, http.MethodPost, k.path, r.URL.Query(), body)
		p.pass(w, r.WithContext(ctx), &pass{c: c})
	default:
		p.batch(ctx, w, r.URL.Query(), k.path, ps, func(pt edge.Part) any {
			sub := make([]T, len(pt.Idx))
			for j, i := range pt.Idx {
				sub[j] = items[i]
			}
			return k.wrap(sub)
		})
	}
}

// validateBatch reads, decodes and checks a batch and places its items.
func validateBatch[T any](ctx context.Context, p *Proxy, k *batchKind[T], w http.ResponseWriter, r *http.Request) (
	[]byte, []T, []int, *edge.Error) {
	body, e := readBody(w, r)
	if e != nil {
		return nil, nil, nil, e
	}
	items, e := k.decode(body)
	if e == nil {
		e = edge.CheckBatch(k.list, len(items))
	}
	if e == nil {
		e = k.check(items)
	}
	if e != nil {
		return nil, nil, nil, e
	}
	n, err := p.shardCount(ctx)
	if err != nil {
		return nil, nil, nil, edge.Unavailable("%v", err)
	}
	shards := make([]int, len(items))
	for i := range items {
		shards[i] = k.shard(&items[i], n)
	}
	if k.span != nil {
		e = k.span(items, shards)
	}
	return body, items, shards, e
}

// routeAccount sends a request about one account to its shard's leader.
func (p *Proxy) routeAccount(w http.ResponseWriter, r *http.Request, timeout time.Duration, id string) {
	body, e := readBody(w, r)
	if e != nil {
		edge.WriteError(w, e)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	n, err := p.shardCount(ctx)
	if err != nil {
		edge.WriteError(w, edge.Unavailable("%v", err))
		return
	}
	c := p.newCall(ledger.ShardOf(id, n), r.Method, r.URL.EscapedPath(), r.URL.Query(), body)
	c.write = r.Method != http.MethodGet
	p.pass(w, r.WithContext(ctx), &pass{c: c})
}

func (p *Proxy) newCall(shard int, method, path string, q url.Values, body []byte) *call {
	q.Del("timeout")
	q.Del("forward")
	return &call{shard: shard, method: method, path: path, query: q, body: body, write: true}
}

// batch sends a validated batch that spans shards: split per shard, with
// the parts sent concurrently and their results merged in request order.
// encode builds one part's body.
func (p *Proxy) batch(ctx context.Context, w http.ResponseWriter, q url.Values, path string,
	parts []edge.Part, encode func(edge.Part) any) {
	replies := make([]partReply, len(parts))
	var wg sync.WaitGroup
	for i, pt := range parts {
		b, err := json.Marshal(encode(pt))
		if err != nil {
			// The items were decoded from JSON a moment ago.
			panic(fmt.Sprintf("proxy: encode part: %v", err))
		}
		c := p.newCall(pt.Shard, http.MethodPost, path, cloneQuery(q), b)
		wg.Go(func() { replies[i] = p.sendPart(ctx, c, len(pt.Idx)) })
	}
	wg.Wait()
	if clientGone(ctx) {
		p.log.Debug("client left during a split batch", "path", path)
		return
	}
	p.merge(w, path, parts, replies)
}

// sendPart sends one edge.Part and reads its answer whole.
func (p *Proxy) sendPart(ctx context.Context, c *call, n int) partReply {
	pr := partReply{o: p.send(ctx, c)}
	if pr.o.resp == nil {
		pr.err = pr.o.err
		return pr
	}
	resp := pr.o.resp
	defer drainClose(resp.Body)
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		// The node answered, so it may have applied the part.
		pr.o.unknown = true
		pr.err = fmt.Errorf("read answer: %w", err)
		return pr
	}
	pr.status, pr.body = resp.StatusCode, b
	if resp.StatusCode != http.StatusOK {
		return pr
	}
	var res struct {
		Results []json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal(b, &res); err != nil || len(res.Results) != n {
		pr.status, pr.o.unknown = 0, true
		pr.err = fmt.Errorf("answer holds %d results for %d items (%v)", len(res.Results), n, err)
		return pr
	}
	pr.results = res.Results
	return pr
}

// merge answers a split batch; see "Partially successful batches" in the
// package documentation for why it answers what it does.
func (p *Proxy) merge(w http.ResponseWriter, path string, parts []edge.Part, replies []partReply) {
	total, all := 0, true
	for i, pr := range replies {
		total += len(parts[i].Idx)
		all = all && pr.status == http.StatusOK
	}
	if all {
		writeMerged(w, parts, replies, total)
		return
	}
	for _, pr := range replies {
		if pr.status >= 400 && pr.status < 500 {
			p.log.Warn("edge.Part of a split batch refused", "path", path, "status", pr.status)
			edge.Relay(w, pr.status, pr.body)
			return
		}
	}
	applied := false
	var failed []error
	for i, pr := range replies {
		// A edge.Part with any final answer (200, or a 5xx other than 503) or an
		// unknown outcome may be in the ledger.
		applied = applied || pr.status != 0 || pr.o.unknown
		if pr.status != http.StatusOK {
			if pr.err == nil {
				pr.err = fmt.Errorf("status %d", pr.status)
			}
			failed = append(failed, fmt.Errorf("shard %d: %w", parts[i].Shard, pr.err))
		}
	}
	err := errors.Join(failed...)
	if applied {
		p.log.Warn("split batch partly failed", "path", path, "err", err)
		edge.WriteError(w, edge.Errorf(http.StatusGatewayTimeout, edge.CodeOutcomeUnknown,
			"edge.Part of the batch failed and other parts may have been applied; retry the whole batch with the same ids: %v", err))
		return
	}
	p.log.Warn("split batch unavailable", "path", path, "err", err)
	edge.WriteError(w, edge.Unavailable("no edge.Part of the batch was applied; retry: %v", err))
}

// writeMerged writes the parts' results in request order. The results are
// copied as the nodes encoded them.
func writeMerged(w http.ResponseWriter, parts []edge.Part, replies []partReply, total int) {
	merged := make([]json.RawMessage, total)
	for i, pt := range parts {
		for k, idx := range pt.Idx {
			merged[idx] = replies[i].results[k]
		}
	}
	writeResults(w, merged)
}

// writeResults writes a 200 with results, copied as a node encoded them,
// in the shape a node writes: {"results":[...]} and a newline.
func writeResults(w http.ResponseWriter, results []json.RawMessage) {
	size := 0
	for _, m := range results {
		size += len(m) + 1
	}
	var buf bytes.Buffer
	buf.Grow(size + 16)
	buf.WriteString(`{"results":[`)
	for i, m := range results {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(m)
	}
	buf.WriteString("]}\n")
	edge.Relay(w, http.StatusOK, buf.Bytes())
}

func cloneQuery(q url.Values) url.Values {
	c := make(url.Values, len(q))
	for k, v := range q {
		c[k] = v
	}
	return c
}
