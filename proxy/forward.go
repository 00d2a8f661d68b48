package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// call is one request for the leader of one shard.
type call struct {
	shard  int
	method string
	path   string     // escaped path
	query  url.Values // the client's query, without timeout and forward
	body   []byte     // sent again on every attempt
	write  bool       // sent with forward=false; its outcome can be unknown
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
	for attempt := 1; ; attempt++ {
		hint, done := p.attempt(ctx, c, &o)
		if done {
			return o
		}
		if hint != "" {
			hints++
		}
		if attempt == MaxAttempts || ctx.Err() != nil || !p.recover(ctx, c.shard, hint, hints, attempt) {
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
		if !sent && ctx.Err() == nil {
			p.setDown(addr, true)
		}
		return "", false
	}
	retry, hint := p.retryable(resp, c, o)
	if !retry {
		o.resp = resp
		return "", true
	}
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
	// A body that cannot be read or decoded leaves ne empty: the answer
	// still means what its status says, only without a leader hint.
	var ne nodeError
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
	drainClose(resp.Body)
	_ = json.Unmarshal(b, &ne)
	o.err = fmt.Errorf("status %d %s: %s", resp.StatusCode, ne.Error.Code, ne.Error.Message)
	if resp.StatusCode == http.StatusGatewayTimeout && c.write {
		o.unknown = true
	}
	return true, normAddr(ne.Error.LeaderHTTP)
}

// recover prepares the next attempt after a failed one: follow a leader
// hint at once (the first time), or refresh the map and back off. It
// returns false if ctx ended.
func (p *Proxy) recover(ctx context.Context, shard int, hint string, hints, failures int) bool {
	wait := backoff(failures)
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

// backoff is the wait before attempt n+1: exponential with jitter, so
// that clients that failed together do not come back together.
func backoff(n int) time.Duration {
	d := backoffMax
	if n < 16 {
		d = min(backoffBase<<(n-1), backoffMax)
	}
	return d/2 + rand.N(d/2+1)
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
	var wrote atomic.Bool
	trace := &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
		if i.Err == nil {
			wrote.Store(true)
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), c.method,
		baseURL(addr)+c.path+"?"+q.Encode(), body)
	if err != nil {
		return nil, false, err
	}
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

// fail answers a call that got no final answer.
func (p *Proxy) fail(ctx context.Context, w http.ResponseWriter, c *call, o outcome) {
	if clientGone(ctx) {
		p.log.Debug("client left", "shard", c.shard, "path", c.path, "unknown", o.unknown)
		return
	}
	if c.write && o.unknown {
		p.log.Warn("write outcome unknown", "shard", c.shard, "path", c.path, "err", o.err)
		writeError(w, http.StatusGatewayTimeout, codeUnknown,
			"shard %d: the write may or may not have been applied (%v); retry with the same ids", c.shard, o.err)
		return
	}
	p.log.Warn("shard unavailable", "shard", c.shard, "path", c.path, "err", o.err)
	writeError(w, http.StatusServiceUnavailable, codeUnavailable,
		"shard %d: no leader answered within the deadline (%v); nothing was applied, retry", c.shard, o.err)
}

// forwardAny sends a request any node can answer to the first node that
// takes it. The deadline bounds the wait for the answer's headers; an
// event stream (follow=true) then runs until the client leaves or the
// proxy shuts down.
func (p *Proxy) forwardAny(w http.ResponseWriter, r *http.Request, timeout time.Duration) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if r.URL.Query().Get("follow") == "true" {
		stop := context.AfterFunc(p.drain, cancel)
		defer stop()
	}
	timer := time.AfterFunc(timeout, cancel)
	resp, sent, err := p.tryNodes(ctx, r, body)
	timer.Stop()
	if err != nil {
		idempotent := r.Method == http.MethodGet || r.Method == http.MethodHead
		if sent && !idempotent {
			writeError(w, http.StatusGatewayTimeout, codeUnknown,
				"%s %s may or may not have been applied (%v); retry", r.Method, r.URL.Path, err)
			return
		}
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "no node answered within the deadline (%v)", err)
		return
	}
	copyResponse(w, resp)
}

// tryNodes sends r to the known nodes in turn until one answers. A request
// that is not a read moves on only if it was never written: the node that
// got it may have acted on it.
func (p *Proxy) tryNodes(ctx context.Context, r *http.Request, body []byte) (*http.Response, bool, error) {
	var lastErr error
	nodes := p.anyNodes()
	for i, addr := range nodes {
		if i == MaxAttempts || ctx.Err() != nil {
			break
		}
		var b io.Reader
		if body != nil {
			b = bytes.NewReader(body)
		}
		var wrote atomic.Bool
		trace := &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				wrote.Store(true)
			}
		}}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), r.Method,
			baseURL(addr)+r.URL.RequestURI(), b)
		if err != nil {
			return nil, false, err
		}
		copyHeader(req.Header, r.Header)
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			req.Header.Set("X-Forwarded-For", host)
		}
		resp, err := p.transport.RoundTrip(req)
		if err == nil {
			p.setDown(addr, false)
			return resp, true, nil
		}
		lastErr = fmt.Errorf("%s: %w", addr, err)
		if wrote.Load() && r.Method != http.MethodGet && r.Method != http.MethodHead {
			return nil, true, lastErr
		}
		if !wrote.Load() && ctx.Err() == nil {
			p.setDown(addr, true)
		}
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return nil, false, lastErr
}

// clientGone reports whether ctx, a request's context with its deadline,
// ended because the client left rather than because the deadline passed.
func clientGone(ctx context.Context) bool { return errors.Is(ctx.Err(), context.Canceled) }

// hopHeaders are meaningful for one connection only (RFC 9110, 7.6.1).
var hopHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true,
	"Proxy-Authenticate": true, "Proxy-Authorization": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		if !hopHeaders[k] {
			dst[k] = vv
		}
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyResponse passes a node's answer to the client. A body of unknown
// length (a stream) is flushed as it arrives.
func copyResponse(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	if resp.ContentLength >= 0 {
		// A copy error means one side left; the status is already sent.
		_, _ = io.Copy(w, resp.Body)
		return
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	rc := http.NewResponseController(w)
	for {
		n, err := resp.Body.Read(*bp)
		if n > 0 {
			if _, werr := w.Write((*bp)[:n]); werr != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
