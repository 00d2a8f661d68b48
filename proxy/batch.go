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
	"tally/ledger"
)

// part is the items of a batch that one shard decides, in request order.
type part struct {
	shard int
	idx   []int
}

// partReply is how one part of a batch ended.
type partReply struct {
	o       outcome
	status  int               // the node's final status, 0 without one
	body    []byte            // the node's answer when not merged
	results []json.RawMessage // the part's results when status is 200
	err     error             // why the part has no usable answer
}

func (p *Proxy) createTransfers(w http.ResponseWriter, r *http.Request, q url.Values, timeout time.Duration) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var req wire.TransfersIn
	if e := decodeStrict(body, &req); e != nil {
		writeAPIError(w, http.StatusBadRequest, *e)
		return
	}
	ts := req.Transfers
	if e := checkTransfers(ts); e != nil {
		writeAPIError(w, http.StatusBadRequest, *e)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	n, err := p.shardCount(ctx)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "%v", err)
		return
	}
	shards := make([]int, len(ts))
	for i := range ts {
		shards[i] = ledger.TransferShard(&ts[i], n)
	}
	if e := checkChainShards(ts, shards); e != nil {
		writeAPIError(w, http.StatusBadRequest, *e)
		return
	}
	p.batch(ctx, w, q, "/v1/transfers", body, split(shards), func(pt part) any {
		sub := make([]ledger.Transfer, len(pt.idx))
		for k, i := range pt.idx {
			sub[k] = ts[i]
		}
		return wire.TransfersIn{Transfers: sub}
	})
}

func (p *Proxy) createAccounts(w http.ResponseWriter, r *http.Request, q url.Values, timeout time.Duration) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var req wire.AccountsIn
	if e := decodeStrict(body, &req); e != nil {
		writeAPIError(w, http.StatusBadRequest, *e)
		return
	}
	as := req.Accounts
	if e := checkAccounts(as); e != nil {
		writeAPIError(w, http.StatusBadRequest, *e)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	n, err := p.shardCount(ctx)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "%v", err)
		return
	}
	shards := make([]int, len(as))
	for i := range as {
		shards[i] = ledger.ShardOf(as[i].ID, n)
	}
	p.batch(ctx, w, q, "/v1/accounts", body, split(shards), func(pt part) any {
		sub := make([]wire.AccountIn, len(pt.idx))
		for k, i := range pt.idx {
			sub[k] = as[i]
		}
		return wire.AccountsIn{Accounts: sub}
	})
}

// routeAccount sends a request about one account to its shard's leader.
func (p *Proxy) routeAccount(w http.ResponseWriter, r *http.Request, q url.Values, timeout time.Duration, id string) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	n, err := p.shardCount(ctx)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "%v", err)
		return
	}
	c := p.newCall(ledger.ShardOf(id, n), r.Method, r.URL.EscapedPath(), q, body)
	c.write = r.Method != http.MethodGet
	p.answer(ctx, w, c, p.send(ctx, c))
}

func (p *Proxy) newCall(shard int, method, path string, q url.Values, body []byte) *call {
	q.Del("timeout")
	q.Del("forward")
	return &call{shard: shard, method: method, path: path, query: q, body: body, write: true}
}

// answer passes a call's outcome to the client.
func (p *Proxy) answer(ctx context.Context, w http.ResponseWriter, c *call, o outcome) {
	if o.resp != nil {
		copyResponse(w, o.resp)
		return
	}
	p.fail(ctx, w, c, o)
}

// batch sends a validated batch: as the client sent it when it lives on
// one shard, else split per shard with the parts sent concurrently and
// their results merged in request order. encode builds one part's body.
func (p *Proxy) batch(ctx context.Context, w http.ResponseWriter, q url.Values, path string,
	body []byte, parts []part, encode func(part) any) {
	if len(parts) == 1 {
		c := p.newCall(parts[0].shard, http.MethodPost, path, q, body)
		p.answer(ctx, w, c, p.send(ctx, c))
		return
	}
	replies := make([]partReply, len(parts))
	var wg sync.WaitGroup
	for i, pt := range parts {
		b, err := json.Marshal(encode(pt))
		if err != nil {
			// The items were decoded from JSON a moment ago.
			panic(fmt.Sprintf("proxy: encode part: %v", err))
		}
		c := p.newCall(pt.shard, http.MethodPost, path, cloneQuery(q), b)
		wg.Go(func() { replies[i] = p.sendPart(ctx, c, len(pt.idx)) })
	}
	wg.Wait()
	if clientGone(ctx) {
		p.log.Debug("client left during a split batch", "path", path)
		return
	}
	p.merge(w, path, parts, replies)
}

// sendPart sends one part and reads its answer whole.
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
func (p *Proxy) merge(w http.ResponseWriter, path string, parts []part, replies []partReply) {
	total, all := 0, true
	for i, pr := range replies {
		total += len(parts[i].idx)
		all = all && pr.status == http.StatusOK
	}
	if all {
		writeMerged(w, parts, replies, total)
		return
	}
	for _, pr := range replies {
		if pr.status >= 400 && pr.status < 500 {
			p.log.Warn("part of a split batch refused", "path", path, "status", pr.status)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(pr.status)
			_, _ = w.Write(pr.body) // the client left if this fails
			return
		}
	}
	applied := false
	var failed []error
	for i, pr := range replies {
		// A part with any final answer (200, or a 5xx other than 503) or an
		// unknown outcome may be in the ledger.
		applied = applied || pr.status != 0 || pr.o.unknown
		if pr.status != http.StatusOK {
			if pr.err == nil {
				pr.err = fmt.Errorf("status %d", pr.status)
			}
			failed = append(failed, fmt.Errorf("shard %d: %w", parts[i].shard, pr.err))
		}
	}
	err := errors.Join(failed...)
	if applied {
		p.log.Warn("split batch partly failed", "path", path, "err", err)
		writeError(w, http.StatusGatewayTimeout, codeUnknown,
			"part of the batch failed and other parts may have been applied; retry the whole batch with the same ids: %v", err)
		return
	}
	p.log.Warn("split batch unavailable", "path", path, "err", err)
	writeError(w, http.StatusServiceUnavailable, codeUnavailable,
		"no part of the batch was applied; retry: %v", err)
}

// writeMerged writes the parts' results in request order. The results are
// copied as the nodes encoded them.
func writeMerged(w http.ResponseWriter, parts []part, replies []partReply, total int) {
	merged := make([]json.RawMessage, total)
	size := 0
	for i, pt := range parts {
		for k, idx := range pt.idx {
			merged[idx] = replies[i].results[k]
			size += len(merged[idx]) + 1
		}
	}
	var buf bytes.Buffer
	buf.Grow(size + 16)
	buf.WriteString(`{"results":[`)
	for i, m := range merged {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(m)
	}
	buf.WriteString("]}\n")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes()) // the client left if this fails
}

// split groups item indexes by shard, parts ordered by their first item.
func split(shards []int) []part {
	var parts []part
	for i, s := range shards {
		k := 0
		for k < len(parts) && parts[k].shard != s {
			k++
		}
		if k == len(parts) {
			parts = append(parts, part{shard: s})
		}
		parts[k].idx = append(parts[k].idx, i)
	}
	return parts
}

func cloneQuery(q url.Values) url.Values {
	c := make(url.Values, len(q))
	for k, v := range q {
		c[k] = v
	}
	return c
}

// decodeStrict decodes one JSON object with no unknown fields and nothing
// after it.
func decodeStrict(body []byte, v any) *apiError {
	if len(bytes.TrimSpace(body)) == 0 {
		return &apiError{Code: codeInvalid, Message: "request body is empty"}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &apiError{Code: codeInvalid, Message: "malformed JSON: " + err.Error()}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &apiError{Code: codeInvalid, Message: "malformed JSON: data after the object"}
	}
	return nil
}

func checkBatchSize(list string, n int) *apiError {
	if n < 1 || n > ledger.MaxBatch {
		return &apiError{Code: codeInvalid,
			Message: fmt.Sprintf("%s: a batch holds 1 to %d items, not %d", list, ledger.MaxBatch, n)}
	}
	return nil
}

func checkTransfers(ts []ledger.Transfer) *apiError {
	if e := checkBatchSize("transfers", len(ts)); e != nil {
		return e
	}
	for i := range ts {
		if pr := ledger.CheckTransfer(&ts[i]); pr != nil {
			e := itemError("transfers", i, pr)
			return &e
		}
	}
	if pr := ledger.CheckChains(ts); pr != nil {
		e := itemError("transfers", len(ts)-1, pr)
		return &e
	}
	return nil
}

func checkAccounts(as []wire.AccountIn) *apiError {
	if e := checkBatchSize("accounts", len(as)); e != nil {
		return e
	}
	for i, a := range as {
		acc := ledger.Account{ID: a.ID, Currency: a.Currency, AllowNegative: a.AllowNegative, Metadata: a.Metadata}
		if pr := ledger.CheckAccount(&acc); pr != nil {
			e := itemError("accounts", i, pr)
			return &e
		}
	}
	return nil
}

// checkChainShards rejects a linked chain whose members live on different
// shards: no shard could apply it all or nothing. CheckChains has already
// made sure the last transfer is not linked.
func checkChainShards(ts []ledger.Transfer, shards []int) *apiError {
	for i := 0; i+1 < len(ts); i++ {
		if ts[i].Linked && shards[i+1] != shards[i] {
			e := itemError("transfers", i+1, &ledger.Problem{Code: ledger.CrossShardNotSupported, Msg: fmt.Sprintf(
				"transfer %s is linked to %s but lives on shard %d, not %d: a linked chain must stay on one shard",
				ts[i+1].ID, ts[i].ID, shards[i+1], shards[i])})
			return &e
		}
	}
	return nil
}
