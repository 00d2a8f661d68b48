package proxy

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"tally/edge"
)

// A node's answer reaches the client through httputil.ReverseProxy, which
// passes the status, the headers without the hop-by-hop ones and the body,
// flushing a body of unknown length (a stream, a profile) as it arrives.
// Which node answers is the proxy's own business: the reverse proxy's
// transport is relayTransport, which sends a routed call to its shard's
// leader with retries (send), and anything else to the first node that
// takes it (tryNodes).

// pass is one client request on its way through the relay. The transport
// finds it in the request's context.
type pass struct {
	// c is a call routed to its shard's leader; nil for a request any
	// node can answer.
	c *call
	// o is how the routed call ended.
	o outcome

	// body is the client's body, sent again to each node tried.
	body []byte
	// answered is called once a node answered; it ends the wait for the
	// answer's headers.
	answered func() bool
	// sent is set when the request reached a node that then did not
	// answer, so a write may have been applied.
	sent bool
}

type passKey struct{}

func passOf(ctx context.Context) *pass { return ctx.Value(passKey{}).(*pass) }

// newRelay makes the proxy's reverse proxy.
func (p *Proxy) newRelay() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		// The transport picks the node; the rewrite only says for whom.
		Rewrite:      func(pr *httputil.ProxyRequest) { pr.SetXForwarded() },
		Transport:    relayTransport{p},
		BufferPool:   relayBuffers{},
		ErrorHandler: p.relayFailed,
		ErrorLog:     slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
}

// pass answers r through the relay. r's context bounds the whole answer.
func (p *Proxy) pass(w http.ResponseWriter, r *http.Request, ps *pass) {
	p.relay.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), passKey{}, ps)))
}

type relayTransport struct{ p *Proxy }

// errNoAnswer stands for a failure that left no error to show.
var errNoAnswer = errors.New("no node answered")

func (t relayTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ps := passOf(req.Context())
	if ps.c != nil {
		ps.o = t.p.send(req.Context(), ps.c)
		if ps.o.resp == nil {
			return nil, cmp.Or(ps.o.err, errNoAnswer)
		}
		return ps.o.resp, nil
	}
	resp, sent, err := t.p.tryNodes(req, ps.body)
	if err != nil {
		ps.sent = sent
		return nil, cmp.Or(err, errNoAnswer)
	}
	ps.answered()
	return resp, nil
}

// relayFailed answers a request that got no answer from any node.
func (p *Proxy) relayFailed(w http.ResponseWriter, r *http.Request, err error) {
	ps := passOf(r.Context())
	if ps.c != nil {
		if ps.o.err == nil {
			ps.o.err = err
		}
		p.fail(r.Context(), w, ps.c, ps.o)
		return
	}
	idempotent := r.Method == http.MethodGet || r.Method == http.MethodHead
	if ps.sent && !idempotent {
		edge.WriteError(w, edge.Errorf(http.StatusGatewayTimeout, edge.CodeOutcomeUnknown,
			"%s %s may or may not have been applied (%v); retry", r.Method, r.URL.Path, err))
		return
	}
	edge.WriteError(w, edge.Unavailable("no node answered within the deadline (%v)", err))
}

// forwardAny sends a request any node can answer to the first node that
// takes it. The deadline bounds the wait for the answer's headers; a long
// answer (a profile, a verify) then runs until it ends or the client
// leaves.
func (p *Proxy) forwardAny(w http.ResponseWriter, r *http.Request, timeout time.Duration) {
	body, e := readBody(w, r)
	if e != nil {
		edge.WriteError(w, e)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	timer := time.AfterFunc(timeout, cancel)
	defer timer.Stop()
	// A stream ends when the proxy shuts down.
	defer context.AfterFunc(p.closing, cancel)()
	p.pass(w, r.WithContext(ctx), &pass{body: body, answered: timer.Stop})
}

// tryNodes sends req to the known nodes in turn until one answers. A
// request that is not a read moves on only if it was never written: the
// node that got it may have acted on it. sent reports such a request.
func (p *Proxy) tryNodes(req *http.Request, body []byte) (resp *http.Response, sent bool, err error) {
	ctx := req.Context()
	var lastErr error
	for i, addr := range p.anyNodes() {
		if i == MaxAttempts || ctx.Err() != nil {
			break
		}
		tctx, wrote := traceWrite(ctx, nil)
		out, err := toNode(req.WithContext(tctx), p.baseURL(addr), body)
		if err != nil {
			return nil, false, err
		}
		resp, err := p.transport.RoundTrip(out)
		if err == nil {
			p.setDown(addr, false)
			return resp, true, nil
		}
		lastErr = fmt.Errorf("%s: %w", addr, err)
		if wrote.Load() && req.Method != http.MethodGet && req.Method != http.MethodHead {
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

// toNode points out, a shallow copy of the relay's outgoing request, at
// the node at base (scheme://host:port), with a fresh copy of body.
func toNode(out *http.Request, base string, body []byte) (*http.Request, error) {
	u, err := url.Parse(base + out.URL.RequestURI())
	if err != nil {
		return nil, err
	}
	out.URL, out.Host = u, "" // the Host header names the node
	out.TransferEncoding = nil
	out.Body, out.GetBody, out.ContentLength = nil, nil, int64(len(body))
	if len(body) > 0 {
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		out.Body, _ = out.GetBody() // it cannot fail
	}
	return out, nil
}

// clientGone reports whether ctx, a request's context with its deadline,
// ended because the client left rather than because the deadline passed.
func clientGone(ctx context.Context) bool { return errors.Is(ctx.Err(), context.Canceled) }

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// relayBuffers lends the relay its copy buffers.
type relayBuffers struct{}

func (relayBuffers) Get() []byte  { return *copyBufs.Get().(*[]byte) }
func (relayBuffers) Put(b []byte) { copyBufs.Put(&b) }
