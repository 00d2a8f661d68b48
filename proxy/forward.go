package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"

	"tally/edge"
)

// call is one request for the leader of one shard.
type call struct {
	shard  int
	method string
	path   string     // escaped path
	query  url.Values // the client's query, without timeout and forward
	body   []byte     // sent again on every attempt
	write  bool       // sent with forward=false; its outcome can be unknown
	// applied, when not nil, says at any moment whether an attempt may
	// have been applied (one is written and unanswered, or the outcome is
	// unknown), for those who wait on the call from elsewhere.
	applied *atomic.Bool
}

// mayApply records in c.applied whether the call may have been applied.
func (c *call) mayApply(may bool) {
	if c.applied != nil {
		c.applied.Store(may)
	}
}

// outcome is how a call ended.
type outcome struct {
	// resp is the node's final answer (the caller closes its body), or nil
	// when no node gave one within the attempts and the deadline.
	resp *http.Response
	// unknown is set when an attempt of a write may have been applied: a
	// 504, or a connection lost or timed out after the request was written.
	unknown bool
	err     error // why resp is nil
}

// send sends c to its shard's leader, retrying after a leader change, an
// unavailable shard or a lost connection. Retrying a write is safe because
// its ids are idempotency keys. It returns by ctx's deadline.
func (p *Proxy) send(ctx context.Context, c *call) outcome {
	var o outcome
	hints := 0
	waits := newBackoff()
	for {
		hint, done := p.attempt(ctx, c, &o)
		if done {
			return o
		}
		if hint != "" {
			hints++
		}
		wait := waits.NextBackOff()
		if wait == backoff.Stop || ctx.Err() != nil || !p.recover(ctx, c.shard, hint, hints, wait) {
			break
		}
	}
	if o.err == nil {
		o.err = ctx.Err()
	}
	return o
}

// attempt tries c once at its shard's leader. It reports done with the
// final answer in o.resp, or else the leader hint the failure carried.
func (p *Proxy) attempt(ctx context.Context, c *call, o *outcome) (hint string, done bool) {
	addr, err := p.leaderOf(ctx, c.shard)
	if err != nil {
		o.err = err
		return "", false
	}
	resp, sent, err := p.do(ctx, addr, c)
	if err != nil {
		o.err = fmt.Errorf("%s: %w", addr, err)
		o.unknown = o.unknown || (sent && c.write)
		c.mayApply(o.unknown)
		if !sent && ctx.Err() == nil {
			p.setDown(addr, true)
		}
		return "", false
	}
	retry, hint := p.retryable(resp, c, o)
	if !retry {
		c.mayApply(true)
		o.resp = resp
		return "", true
	}
	c.mayApply(o.unknown)
	if hint == addr {
		hint = "" // a node naming itself is no help
	}
	return hint, false
}

// retryable reads an answer that calls for another attempt (421, 503,
// 504) and returns the leader hint it carries. Other answers are final.
func (p *Proxy) retryable(resp *http.Response, c *call, o *outcome) (bool, string) {
	switch resp.StatusCode {
	case http.StatusMisdirectedRequest, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
	default:
		return false, ""
	}
	// A body that cannot be read or decoded has no leader hint; the
	// answer still means what its status says.
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
	drainClose(resp.Body)
	e := edge.ReadError(resp.StatusCode, b)
	o.err = fmt.Errorf("status %d %w", resp.StatusCode, e)
	if resp.StatusCode == http.StatusGatewayTimeout && c.write {
		o.unknown = true
	}
	return true, normAddr(e.LeaderHTTP)
}

// recover prepares the next attempt after a failed one: follow a leader
// hint at once (the first time), or refresh the map and back off for
// wait. It returns false if ctx ended.
func (p *Proxy) recover(ctx context.Context, shard int, hint string, hints int, wait time.Duration) bool {
	if hint != "" {
		p.setLeader(shard, hint)
		if hints == 1 {
			wait = 0
		}
	} else {
		start := time.Now()
		// A failed refresh leaves the old map; the backoff still applies.
		_ = p.refresh(ctx)
		wait -= time.Since(start)
	}
	return sleep(ctx, wait) == nil
}

// newBackoff returns the waits between the attempts of one call: at most
// MaxAttempts-1 of them, exponential with jitter so that clients that
// failed together do not come back together. The n-th wait is drawn
// from [d/2, d] with d = backoffBase·2^(n-1) up to backoffMax. The library
// draws from centre·(1±factor), so the centre is 3/4·d and the factor 1/3.
// The deadline, not elapsed time, ends the retries.
func newBackoff() backoff.BackOff {
	return backoff.WithMaxRetries(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(backoffBase*3/4),
		backoff.WithMaxInterval(backoffMax*3/4),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(1.0/3),
		backoff.WithMaxElapsedTime(0),
	), MaxAttempts-1)
}

// do makes one attempt of c at addr. sent reports whether the request was
// written to the connection, after which a failed write may still have
// been applied.
func (p *Proxy) do(ctx context.Context, addr string, c *call) (resp *http.Response, sent bool, err error) {
	dl, _ := ctx.Deadline()
	to := nodeTimeout(time.Until(dl))
	if to <= 0 {
		return nil, false, context.DeadlineExceeded
	}
	q := make(url.Values, len(c.query)+2)
	for k, v := range c.query {
		q[k] = v
	}
	q.Set("timeout", to.String())
	if c.write {
		q.Set("forward", "false")
	}
	var body io.Reader
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	tctx, wrote := traceWrite(ctx, c.applied)
	req, err := http.NewRequestWithContext(tctx, c.method,
		p.baseURL(addr)+c.path+"?"+q.Encode(), body)
	if err != nil {
		return nil, false, err
	}
	p.authorize(req)
	if c.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	// Marks the request idempotent (it is: its ids are idempotency keys)
	// so the transport may resend it on a keep-alive connection the node
	// had closed. A nil value is not sent on the wire.
	req.Header["Idempotency-Key"] = nil
	resp, err = p.transport.RoundTrip(req)
	return resp, wrote.Load(), err
}

// traceWrite returns ctx with a trace that records whether a request was
// written whole to a connection: from then on the node may act on it. It
// sets also too, when not nil.
func traceWrite(ctx context.Context, also *atomic.Bool) (context.Context, *atomic.Bool) {
	wrote := new(atomic.Bool)
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
		if i.Err == nil {
			wrote.Store(true)
			if also != nil {
				also.Store(true)
			}
		}
	}}), wrote
}

// fail answers a call that got no final answer.
func (p *Proxy) fail(ctx context.Context, w http.ResponseWriter, c *call, o outcome) {
	if clientGone(ctx) {
		p.log.Debug("client left", "shard", c.shard, "path", c.path, "unknown", o.unknown)
		return
	}
	if c.write && o.unknown {
		p.log.Warn("write outcome unknown", "shard", c.shard, "path", c.path, "err", o.err)
		edge.WriteError(w, edge.OutcomeUnknown("shard %d: the write may or may not have been applied (%v)", c.shard, o.err))
		return
	}
	p.log.Warn("shard unavailable", "shard", c.shard, "path", c.path, "err", o.err)
	edge.WriteError(w, edge.Unavailable(
		"shard %d: no leader answered within the deadline (%v); nothing was applied, retry", c.shard, o.err))
}

// nodeTimeout is the ?timeout= the proxy passes to a node when remaining
// is left of the request's deadline: a little less, so that the node's own
// answer (503, 504, in_flight) arrives before the proxy must give up.
func nodeTimeout(remaining time.Duration) time.Duration {
	margin := min(max(remaining/20, 10*time.Millisecond), 250*time.Millisecond)
	d := (remaining - margin).Truncate(time.Millisecond)
	if d < time.Millisecond {
		return 0
	}
	return d
}
