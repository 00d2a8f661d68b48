package contract

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"tally/api"
	"tally/node"
	"tally/proxy"
	"tally/shard/shardtest"
)

const (
	specPath = "../../docs/openapi.yaml"
	docPath  = "../../docs/api.md"
	// shards is the cluster's shard count: the default, which the
	// placements shown in docs/api.md assume.
	shards = 4
	// callTimeout bounds one request of a test.
	callTimeout = 30 * time.Second
)

// spec is the loaded OpenAPI document and its router.
type spec struct {
	doc    *openapi3.T
	router routers.Router
	// server is the base URL of the document's first server: requests
	// are validated as if sent there, whichever server answered them,
	// so that the router matches them.
	server string
}

var (
	specOnce   sync.Once
	loadedSpec *spec
	specErr    error
)

// loadSpec loads and validates docs/openapi.yaml once per test binary.
func loadSpec(t testing.TB) *spec {
	t.Helper()
	specOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromFile(specPath)
		if err != nil {
			specErr = fmt.Errorf("load %s: %w", specPath, err)
			return
		}
		if err := doc.Validate(loader.Context); err != nil {
			specErr = fmt.Errorf("%s is not a valid OpenAPI document: %w", specPath, err)
			return
		}
		if len(doc.Servers) == 0 {
			specErr = fmt.Errorf("%s names no server", specPath)
			return
		}
		r, err := gorillamux.NewRouter(doc)
		if err != nil {
			specErr = fmt.Errorf("route %s: %w", specPath, err)
			return
		}
		loadedSpec = &spec{doc: doc, router: r, server: strings.TrimSuffix(doc.Servers[0].URL, "/")}
	})
	if specErr != nil {
		t.Fatal(specErr)
	}
	return loadedSpec
}

// exchange is one request sent and the answer it got.
type exchange struct {
	method, target string // target: path and query
	body           []byte // nil when the request has none
	status         int
	header         http.Header
	answer         []byte
}

func (x *exchange) String() string { return x.method + " " + x.target }

// check validates x against the document and returns what does not
// match. A request the server took (2xx) must be one the document
// accepts; one the server refused may pass the document, which cannot
// state every rule (unknown query parameters, limits). The answer must
// be one the document lists for the operation, with its status. An
// answer to a request that matches no operation (404 not_found, 405
// method_not_allowed) must be the error envelope.
func (s *spec) check(x *exchange) []string {
	req := s.request(x)
	route, params, err := s.router.FindRoute(req)
	if err != nil {
		if errors.Is(err, routers.ErrPathNotFound) && x.status == http.StatusNotFound ||
			errors.Is(err, routers.ErrMethodNotAllowed) && x.status == http.StatusMethodNotAllowed {
			return s.checkError(x)
		}
		return []string{fmt.Sprintf("%s: no operation in the document (%v), answered %d", x, err, x.status)}
	}
	var bad []string
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{MultiError: true}}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil && x.status < 300 {
		bad = append(bad, fmt.Sprintf("%s: the server took it (%d), the document refuses it: %v", x, x.status, err))
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: x.status, Header: x.header,
		Body:    io.NopCloser(bytes.NewReader(x.answer)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		bad = append(bad, fmt.Sprintf("%s: answer %d does not match the document: %v\n%.600s", x, x.status, err, x.answer))
	}
	return bad
}

// request rebuilds x's request, addressed to the document's server.
func (s *spec) request(x *exchange) *http.Request {
	var body io.Reader = http.NoBody
	if x.body != nil {
		body = bytes.NewReader(x.body)
	}
	req := httptest.NewRequest(x.method, s.server+x.target, body)
	if x.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

// checkError validates an answer that no operation describes against the
// document's error envelope.
func (s *spec) checkError(x *exchange) []string {
	ref := s.doc.Components.Schemas["Error"]
	if ref == nil || ref.Value == nil {
		return []string{"the document has no Error schema"}
	}
	if ct := x.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return []string{fmt.Sprintf("%s: answer %d has Content-Type %q, want JSON", x, x.status, ct)}
	}
	v, err := decodeJSON(x.answer)
	if err != nil {
		return []string{fmt.Sprintf("%s: answer %d is not JSON: %v", x, x.status, err)}
	}
	if err := ref.Value.VisitJSON(v, openapi3.VisitAsResponse()); err != nil {
		return []string{fmt.Sprintf("%s: answer %d is not the error envelope: %v", x, x.status, err)}
	}
	return nil
}

// decodeJSON decodes b the way the validator does (numbers as float64).
func decodeJSON(b []byte) (any, error) {
	return openapi3filter.JSONBodyDecoder(bytes.NewReader(b), nil, nil, nil)
}

// server is one API server under test: a node or the proxy.
type server struct {
	name string
	base string // "http://host:port"
	spec *spec
	// c is the cluster behind the server.
	c *shardtest.Cluster
}

// newServer returns a server of kind "node" (node 1 of c) or "proxy" (a
// proxy in front of c).
func newServer(t *testing.T, kind string, c *shardtest.Cluster) *server {
	t.Helper()
	s := &server{name: kind, spec: loadSpec(t), c: c}
	switch kind {
	case "node":
		s.base = "http://" + c.HTTPAddr(1)
	case "proxy":
		s.base = startProxy(t, c)
	default:
		t.Fatalf("no server kind %q", kind)
	}
	return s
}

// startCluster starts nodes nodes serving the node API.
func startCluster(t *testing.T, nodes int) *shardtest.Cluster {
	t.Helper()
	return shardtest.New(t, nodes, shards, shardtest.WithHandler(func(svc *node.Service, log *slog.Logger) http.Handler {
		return api.New(svc, log)
	}))
}

// startProxy starts a proxy in front of c and returns its base URL once
// it knows every shard's leader.
func startProxy(t *testing.T, c *shardtest.Cluster) string {
	t.Helper()
	logs := &logBuffer{}
	addrs := make([]string, c.Nodes())
	for i := range addrs {
		addrs[i] = c.HTTPAddr(i + 1)
	}
	p, err := proxy.New(proxy.Config{Nodes: addrs, RefreshInterval: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(func() {
		srv.Close()
		if err := p.Close(); err != nil {
			t.Errorf("close the proxy: %v", err)
		}
		if t.Failed() {
			t.Logf("proxy logs:\n%s", logs.String())
		}
	})
	waitFor(t, 15*time.Second, "the proxy's /readyz", func() bool {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return srv.URL
}

// do sends a request to s and returns the exchange, failing the test
// when the exchange does not match the OpenAPI document.
func (s *server) do(t testing.TB, method, target string, body []byte) *exchange {
	t.Helper()
	x := s.send(t, method, target, body)
	for _, p := range s.spec.check(x) {
		t.Errorf("%s: %s", s.name, p)
	}
	return x
}

// send sends a request to s without validating it.
func (s *server) send(t testing.TB, method, target string, body []byte) *exchange {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.base+target, rd)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %s %s: %v", s.name, method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: %s %s: read the answer: %v", s.name, method, target, err)
	}
	return &exchange{method: method, target: target, body: body, status: resp.StatusCode, header: resp.Header, answer: b}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logBuffer keeps the proxy's logs for a failed test.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// refuses reports whether the document refuses x's request: no operation
// takes it, or the operation's parameters or body do not.
func (s *spec) refuses(x *exchange) bool {
	req := s.request(x)
	route, params, err := s.router.FindRoute(req)
	if err != nil {
		return true
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route}
	return openapi3filter.ValidateRequest(context.Background(), in) != nil
}
