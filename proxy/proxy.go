package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/http/pprof"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"tally/edge"
)

// Limits and defaults. The limits a client sees before its request is
// routed (body size, deadline, batch size) are the edge's, shared with the
// nodes.
const (
	// MaxAttempts bounds the tries of one request (or one part of a
	// batch). The deadline is the usual bound: with the backoff below,
	// 16 attempts span about 6 to 12 seconds, enough to ride out a Raft
	// election (which can take several seconds with split votes) within
	// the default deadline.
	MaxAttempts = 16
	// DefaultRefreshInterval is how often the leader map is refreshed
	// when nothing fails.
	DefaultRefreshInterval = time.Second
	// ShutdownTimeout bounds how long Serve waits for requests in flight
	// once it is told to stop.
	ShutdownTimeout = 15 * time.Second

	// maxReplyBytes bounds a node's answer that the proxy reads whole
	// (a part of a batch: about 100 bytes per result, 8,190 results).
	maxReplyBytes = 64 << 20
	// maxErrorBytes bounds a node's error answer that the proxy reads.
	maxErrorBytes = 64 << 10
	// refreshTimeout bounds one round of GET /v1/cluster.
	refreshTimeout = 2 * time.Second
	// minRefreshGap spaces refreshes, so that a burst of failing requests
	// does not turn into a burst of GET /v1/cluster.
	minRefreshGap = 50 * time.Millisecond
	// backoffBase and backoffMax shape the wait between attempts: 50ms,
	// 100ms, ... up to 1s, each with jitter down to half.
	backoffBase = 50 * time.Millisecond
	backoffMax  = time.Second
)

// Config configures a Proxy.
type Config struct {
	// Nodes are the HTTP addresses (host:port, or a URL with a scheme) of
	// the nodes to ask for the cluster's layout. More nodes are learned
	// from GET /v1/cluster.
	Nodes []string
	// RefreshInterval is how often the leader map is refreshed;
	// DefaultRefreshInterval when zero.
	RefreshInterval time.Duration
	// Logger receives the proxy's logs; slog.Default() when nil.
	Logger *slog.Logger
	// Transport sends requests to nodes. When nil the proxy makes its own,
	// sized for many concurrent clients, and closes its idle connections
	// on Close.
	Transport http.RoundTripper
	// TLS, when set, is how the proxy's own transport reaches nodes that
	// serve TLS (https), checking them against the cluster's CA.
	TLS *tls.Config
	// Guard admits client requests, as a node does; nil admits all.
	Guard *edge.Guard
	// Token is the proxy's own bearer token (role read), for what it asks
	// nodes on its own account: the leader map. A client's request carries
	// the client's own credential through, never this one; transfers are
	// merged only among requests with the same credential.
	Token string
}

// Proxy routes client requests to shard leaders. It is an http.Handler.
//
// New starts one goroutine that refreshes the leader map; Close stops it.
// ServeHTTP is safe for concurrent use by any number of goroutines; every
// call returns by the request's deadline.
type Proxy struct {
	log       *slog.Logger
	guard     *edge.Guard
	token     string
	scheme    string // of node URLs: http, or https with TLS
	seeds     []string
	interval  time.Duration
	transport http.RoundTripper
	ownRT     *http.Transport // closed on Close when the proxy made it

	table  atomic.Pointer[table]
	health sync.Map      // node address -> *atomic.Bool (true when down)
	next   atomic.Uint64 // rotates the choice of "any node"

	relay *httputil.ReverseProxy // passes node answers to clients
	lanes sync.Map               // laneKey -> *lane: transfer requests waiting to be merged

	// refreshes coalesces concurrent refreshes into one round. refreshMu
	// guards the fields below it and orders wg.Add against Close.
	refreshes   singleflight.Group
	refreshMu   sync.Mutex
	lastRefresh time.Time
	refreshOK   bool

	ctx    context.Context // lives until Close
	cancel context.CancelFunc
	// closing ends the streams passing through when Serve shuts down: a
	// stream has no natural end, and shutdown waits for every request.
	closing     context.Context
	stopStreams context.CancelFunc
	wg          sync.WaitGroup
	closeOnce   sync.Once
}

// New makes a proxy for the cluster reachable at cfg.Nodes and starts
// refreshing its leader map in the background. It does not wait for the
// first map: requests that arrive before it wait for it, within their
// deadline.
func New(cfg Config) (*Proxy, error) {
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("proxy: no nodes given")
	}
	p := &Proxy{log: cfg.Logger, interval: cfg.RefreshInterval, transport: cfg.Transport,
		guard: cfg.Guard, token: cfg.Token, scheme: "http"}
	if p.guard == nil {
		p.guard = &edge.Guard{}
	}
	if cfg.TLS != nil {
		p.scheme = "https"
	}
	p.closing, p.stopStreams = context.WithCancel(context.Background())
	if p.log == nil {
		p.log = slog.Default()
	}
	p.log = p.log.With("component", "proxy")
	if p.interval <= 0 {
		p.interval = DefaultRefreshInterval
	}
	for _, n := range cfg.Nodes {
		n = strings.TrimSuffix(strings.TrimSpace(n), "/")
		if n == "" {
			return nil, fmt.Errorf("proxy: empty node address in %q", cfg.Nodes)
		}
		p.seeds = append(p.seeds, n)
	}
	if p.transport == nil {
		p.ownRT = newTransport(cfg.TLS)
		p.transport = p.ownRT
	}
	p.relay = p.newRelay()
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.refreshLoop()
	return p, nil
}

// newTransport is the shared client side of every node connection.
func newTransport(tc *tls.Config) *http.Transport {
	return &http.Transport{
		TLSClientConfig: tc,
		// Never route node traffic through an HTTP_PROXY from the
		// environment: nodes are on the cluster's own network.
		Proxy: nil,
		DialContext: (&net.Dialer{
			// A node that does not accept within a second is treated as
			// down, so the request can move on to the new leader.
			Timeout:   time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		// Many concurrent clients become many concurrent requests to a
		// few nodes: keep enough idle connections per node that a burst
		// does not dial again.
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		// Bodies are passed through as the nodes encode them.
		DisableCompression: true,
		// HTTP/1.1 to nodes, with TLS or without: many connections
		// spread the load better than one multiplexed HTTP/2 connection.
		ForceAttemptHTTP2: false,
		WriteBufferSize:   32 << 10,
		ReadBufferSize:    32 << 10,
	}
}

// Close stops the refresher and closes idle node connections. It does not
// wait for requests in flight (Serve does). Safe to call more than once and
// from any goroutine.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		// Cancel under refreshMu so that no refresh starts a goroutine
		// (wg.Add) once Wait may have begun.
		p.refreshMu.Lock()
		p.cancel()
		p.refreshMu.Unlock()
		p.wg.Wait()
		if p.ownRT != nil {
			p.ownRT.CloseIdleConnections()
		}
	})
	return nil
}

// Serve answers requests on ln until ctx is done, then shuts down
// gracefully: it stops accepting and waits up to ShutdownTimeout for
// requests in flight. It returns nil after a clean shutdown. It does not
// Close the proxy.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	srv := edge.NewServer(p, p.log)
	srv.RegisterOnShutdown(p.stopStreams)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	p.log.Info("proxy listening", "addr", ln.Addr().String(), "nodes", p.seeds)
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	p.log.Info("proxy shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		// Requests still running past the grace period are cut off; their
		// clients see a lost connection and retry with the same ids.
		err = errors.Join(fmt.Errorf("shutdown: %w", err), srv.Close())
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// ServeHTTP routes one client request. See the package documentation.
// Before anything is routed, the request passes the edge's checks, the
// same a node makes: a known route, known query parameters, a valid
// deadline.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := r.Header.Get("Authorization"); h != "" {
		r = r.WithContext(withCredential(r.Context(), h))
	}
	if edge.IsInternal(r.URL.Path) {
		// Saga steps between nodes: never taken from clients.
		edge.WriteError(w, edge.NotFound(edge.CodeNotFound, "no route for %s %s", r.Method, r.URL.Path))
		return
	}
	rt, timeout, e := edge.Check(r)
	if rt != nil && e == nil {
		e = p.guard.Admit(r, rt)
	}
	if rt != nil && e == nil && !rt.Unbounded(r.URL.Query()) {
		edge.LimitWrite(w, timeout+edge.WriteSlack)
	}
	switch {
	case rt == nil:
		edge.NoRoute(w, r)
		return
	case e != nil:
		edge.WriteError(w, e)
		return
	}
	// Each pattern has one route (one method), so the pattern names it.
	switch rt.Pattern {
	case "/healthz":
		edge.WriteJSON(w, http.StatusOK, map[string]bool{"ok": true})
	case "/readyz":
		p.readyz(w)
	case "/debug/pprof/profile":
		// The proxy's own profile (go tool pprof http://PROXY/debug/pprof/profile);
		// other /debug/pprof paths go to a node like any other request.
		pprof.Profile(w, r)
	case "/v1/transfers":
		createBatch(p, &transfersBatch, w, r, timeout)
	case "/v1/accounts":
		createBatch(p, &accountsBatch, w, r, timeout)
	case "/v1/accounts/{id}", "/v1/accounts/{id}/history", "/v1/accounts/{id}/close":
		// System accounts live on every shard, so their requests go to any
		// node, which sums over shards.
		if id, ok := accountOf(r); ok && !strings.HasPrefix(id, "@") {
			p.routeAccount(w, r, timeout, id)
			return
		}
		p.forwardAny(w, r, timeout)
	default:
		p.forwardAny(w, r, timeout)
	}
}

// accountOf returns the {id} of a request on an account route: the third
// segment of the escaped path, unescaped, as the route matched it.
func accountOf(r *http.Request) (string, bool) {
	seg := strings.SplitN(r.URL.EscapedPath(), "/", 5) // "", "v1", "accounts", id, ...
	if len(seg) < 4 {
		return "", false
	}
	id, err := url.PathUnescape(seg[3])
	return id, err == nil && id != ""
}

func (p *Proxy) readyz(w http.ResponseWriter) {
	t := p.table.Load()
	if t == nil {
		edge.WriteError(w, edge.Unavailable("no cluster layout yet"))
		return
	}
	for s, l := range t.leaders {
		if l == "" {
			edge.WriteError(w, edge.Unavailable("shard %d has no known leader", s))
			return
		}
	}
	edge.WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "shards": len(t.leaders)})
}

// readBody reads a request body whole, at most edge.MaxBody bytes; nil when
// there is none. A body over the limit also closes the connection after
// the answer, so the rest of it is never read.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *edge.Error) {
	r.Body = http.MaxBytesReader(w, r.Body, edge.MaxBody)
	b, e := edge.Read(r)
	if len(b) == 0 {
		b = nil
	}
	return b, e
}
