package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Limits and defaults.
const (
	// MaxBodyBytes is the largest request body accepted (docs/api.md).
	MaxBodyBytes = 4 << 20
	// DefaultTimeout is a request's deadline without ?timeout=.
	DefaultTimeout = 10 * time.Second
	// MaxTimeout caps ?timeout=.
	MaxTimeout = 60 * time.Second
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
}

// Proxy routes client requests to shard leaders. It is an http.Handler.
//
// New starts one goroutine that refreshes the leader map; Close stops it.
// ServeHTTP is safe for concurrent use by any number of goroutines; every
// call returns by the request's deadline.
type Proxy struct {
	log       *slog.Logger
	seeds     []string
	interval  time.Duration
	transport http.RoundTripper
	ownRT     *http.Transport // closed on Close when the proxy made it

	table  atomic.Pointer[table]
	health sync.Map      // node address -> *atomic.Bool (true when down)
	next   atomic.Uint64 // rotates the choice of "any node"

	refreshMu   sync.Mutex
	refreshing  *refreshCall
	lastRefresh time.Time
	refreshOK   bool

	ctx       context.Context // lives until Close
	cancel    context.CancelFunc
	drain     context.Context // done when Serve starts shutting down
	stopDrain context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New makes a proxy for the cluster reachable at cfg.Nodes and starts
// refreshing its leader map in the background. It does not wait for the
// first map: requests that arrive before it wait for it, within their
// deadline.
func New(cfg Config) (*Proxy, error) {
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("proxy: no nodes given")
	}
	p := &Proxy{log: cfg.Logger, interval: cfg.RefreshInterval, transport: cfg.Transport}
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
		p.ownRT = newTransport()
		p.transport = p.ownRT
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.drain, p.stopDrain = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.refreshLoop()
	return p, nil
}

// newTransport is the shared client side of every node connection.
func newTransport() *http.Transport {
	return &http.Transport{
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
		// Nodes speak HTTP/1.1 without TLS.
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
		p.stopDrain()
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
// gracefully: it stops accepting, ends event streams (follow=true), and
// waits up to ShutdownTimeout for requests in flight. It returns nil after
// a clean shutdown. It does not Close the proxy.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(p.stopDrain)
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
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
		return
	case "/readyz":
		p.readyz(w)
		return
	case "/debug/pprof/profile":
		// The proxy's own profile (go tool pprof http://PROXY/debug/pprof/profile);
		// other /debug/pprof paths go to a node like any other request.
		pprof.Profile(w, r)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/v1/internal/") {
		// Saga steps between nodes: never taken from clients.
		writeError(w, http.StatusNotFound, "not_found", "no route for %s %s", r.Method, r.URL.Path)
		return
	}
	q := r.URL.Query()
	timeout, err := requestTimeout(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeInvalid, "%v", err)
		return
	}
	if r.Method == http.MethodPost && r.URL.Path == "/v1/transfers" {
		p.createTransfers(w, r, q, timeout)
		return
	}
	if r.Method == http.MethodPost && r.URL.Path == "/v1/accounts" {
		p.createAccounts(w, r, q, timeout)
		return
	}
	if id, ok := accountRoute(r.Method, r.URL.Path); ok {
		p.routeAccount(w, r, q, timeout, id)
		return
	}
	p.forwardAny(w, r, timeout)
}

// accountRoute reports whether a request about one account goes to the
// leader of the account's shard, and which account. System accounts live
// on every shard, so their requests go to any node, which sums over shards.
func accountRoute(method, path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/v1/accounts/")
	if !ok {
		return "", false
	}
	id, sub, _ := strings.Cut(rest, "/")
	if id == "" || strings.HasPrefix(id, "@") {
		return "", false
	}
	switch {
	case method == http.MethodGet && (sub == "" || sub == "history"):
	case method == http.MethodPost && sub == "close":
	default:
		return "", false
	}
	if sub == "" && strings.HasSuffix(path, "/") {
		return "", false
	}
	return id, true
}

func (p *Proxy) readyz(w http.ResponseWriter) {
	t := p.table.Load()
	if t == nil {
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "no cluster layout yet")
		return
	}
	for s, l := range t.leaders {
		if l == "" {
			writeError(w, http.StatusServiceUnavailable, codeUnavailable, "shard %d has no known leader", s)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "shards": len(t.leaders)})
}

// readBody reads a request body of at most MaxBodyBytes. On failure it has
// answered the client and returns false.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true
	}
	if r.ContentLength > MaxBodyBytes {
		writeError(w, http.StatusRequestEntityTooLarge, codeTooLarge, "request body is larger than %d bytes", MaxBodyBytes)
		return nil, false
	}
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	var buf []byte
	if r.ContentLength > 0 {
		buf = make([]byte, 0, r.ContentLength+1)
	} else {
		buf = make([]byte, 0, 4096)
	}
	buf, err := readAll(body, buf)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, codeTooLarge, "request body is larger than %d bytes", MaxBodyBytes)
		} else {
			writeError(w, http.StatusBadRequest, codeInvalid, "read request body: %v", err)
		}
		return nil, false
	}
	return buf, true
}

// readAll is io.ReadAll into a caller-sized buffer, so a body whose length
// is announced is read with one allocation.
func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}
