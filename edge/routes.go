package edge

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"tally/secure"
)

// Route is one endpoint of the API with the query parameters it takes.
type Route struct {
	Method  string
	Pattern string // a net/http ServeMux pattern without the method
	Params  []string
	// Open routes take any query parameter: the profiler's, whose
	// parameters are the Go runtime's.
	Open bool
	// Role is what a caller must hold (Guard). When unset it follows the
	// method: read for GET, write for the others, so a new route is never
	// open by mistake.
	Role secure.Role
	// Public routes need no credential at all: health probes.
	Public bool
	// Long answers run past the request's deadline, for as long as they
	// take to send (a backup, a profile): no write deadline for the
	// whole answer, StreamWriteTimeout per write.
	Long bool
}

// Unbounded reports whether the answer to a request with query q may run
// past its deadline: a Long route, or an event stream that follows the
// log.
func (rt *Route) Unbounded(q url.Values) bool {
	return rt.Long || q.Get("follow") == "true"
}

// Needs returns the role a caller must hold for the route.
func (rt *Route) Needs() secure.Role {
	switch {
	case rt.Public:
		return secure.RoleNone
	case rt.Role != secure.RoleNone:
		return rt.Role
	case rt.Method == http.MethodGet:
		return secure.RoleRead
	}
	return secure.RoleWrite
}

// Parameters every API route takes: the deadline, and forward=false by
// which a caller that routes by itself (the proxy) asks a node to answer
// not_leader instead of forwarding.
var common = []string{"timeout", "forward"}

var (
	reads   = []string{"consistency", "min_seq"}
	account = append([]string{"currency", "shard"}, reads...)
	// stream are the parameters of both event streams.
	stream = []string{"follow", "limit", "types", "account", "currency"}
)

// InternalPrefix is where a node takes the calls of other nodes
// (node.Peer): POST InternalPrefix+op. Clients never reach it: the proxy
// answers 404 there.
const InternalPrefix = "/v1/internal/"

// IsInternal reports whether path is under InternalPrefix.
func IsInternal(path string) bool { return strings.HasPrefix(path, InternalPrefix) }

// op marks the routes that change the cluster's shape or undo what
// clients did: membership, saga resolution, consumer resets, profiles.
const op = secure.RoleOperator

// Routes is every endpoint that a node serves; the proxy serves the same
// set (it routes some itself and passes the others to a node). Adding an
// endpoint starts here.
var Routes = []Route{
	{Method: "POST", Pattern: "/v1/accounts"},
	{Method: "GET", Pattern: "/v1/accounts/{id}", Params: append([]string{"at_seq", "at_time"}, account...)},
	{Method: "POST", Pattern: "/v1/accounts/{id}/close"},
	{Method: "GET", Pattern: "/v1/accounts/{id}/history", Params: append([]string{"after", "limit", "order"}, account...)},
	{Method: "POST", Pattern: "/v1/transfers"},
	{Method: "GET", Pattern: "/v1/transfers/{id}", Params: append([]string{"shard"}, reads...)},
	{Method: "GET", Pattern: "/v1/sagas", Params: []string{"state", "limit", "shard"}},
	{Method: "POST", Pattern: "/v1/sagas/{id}/resolve", Role: op},
	{Method: "GET", Pattern: "/v1/audit"},
	{Method: "GET", Pattern: "/v1/shards/{shard}/audit"},
	{Method: "GET", Pattern: "/v1/shards/{shard}/events", Params: append([]string{"after", "min_seq"}, stream...)},
	{Method: "GET", Pattern: "/v1/events", Params: append([]string{"after"}, stream...)},
	{Method: "GET", Pattern: "/v1/shards/{shard}/state"},
	{Method: "GET", Pattern: "/v1/shards/{shard}/verify"},
	{Method: "GET", Pattern: "/v1/shards/{shard}/hash", Params: []string{"seq"}},
	{Method: "GET", Pattern: "/v1/consumers"},
	{Method: "GET", Pattern: "/v1/consumers/{name}"},
	{Method: "DELETE", Pattern: "/v1/consumers/{name}", Role: op},
	{Method: "PUT", Pattern: "/v1/consumers/{name}/offsets/{shard}"},
	{Method: "POST", Pattern: "/v1/consumers/{name}/reset", Role: op},
	{Method: "GET", Pattern: "/v1/cluster"},
	{Method: "GET", Pattern: "/v1/cluster/local"},
	{Method: "POST", Pattern: "/v1/cluster/join", Role: op},
	{Method: "POST", Pattern: "/v1/cluster/leave", Role: op},
	{Method: "POST", Pattern: "/v1/cluster/transfer-leader", Role: op},
	{Method: "GET", Pattern: "/v1/backup", Role: op, Long: true},
	{Method: "POST", Pattern: InternalPrefix + "{op}", Params: []string{"shard"}, Role: secure.RoleNode},
	{Method: "GET", Pattern: "/healthz", Public: true},
	{Method: "GET", Pattern: "/readyz", Public: true},
	{Method: "GET", Pattern: "/metrics"},
	{Method: "GET", Pattern: "/debug/pprof/", Open: true, Role: op, Long: true},
	{Method: "GET", Pattern: "/debug/pprof/profile", Open: true, Role: op, Long: true},
	{Method: "GET", Pattern: "/debug/pprof/trace", Open: true, Role: op, Long: true},
}

// routes finds the Route of a request by its pattern.
var routes = func() *http.ServeMux {
	m := http.NewServeMux()
	for i := range Routes {
		rt := &Routes[i]
		m.Handle(rt.Method+" "+rt.Pattern, routeHandler{rt})
	}
	return m
}()

type routeHandler struct{ *Route }

func (routeHandler) ServeHTTP(http.ResponseWriter, *http.Request) {}

// Lookup returns the route of r, or nil when no route takes r's method
// and path.
func Lookup(r *http.Request) *Route {
	h, pattern := routes.Handler(r)
	if rh, ok := h.(routeHandler); ok && pattern != "" {
		return rh.Route
	}
	return nil
}

// Allowed returns the methods that have a route for r's path, sorted; none
// when the path has no route at all.
func Allowed(r *http.Request) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host}
		if Lookup(probe) != nil {
			out = append(out, m)
		}
	}
	return out
}

// NoRoute is the answer to a request that no route takes: 405 naming the
// methods the path has, else 404.
func NoRoute(w http.ResponseWriter, r *http.Request) {
	if allow := Allowed(r); len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		WriteError(w, Errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed,
			"%s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allow, " or ")))
		return
	}
	WriteError(w, NotFound(CodeNotFound, "no route for %s %s", r.Method, r.URL.Path))
}

// CheckQuery refuses a query parameter that the route does not take, or
// one given twice: a parameter the server ignored would silently answer
// another question than the one asked.
func (rt *Route) CheckQuery(q url.Values) *Error {
	if rt.Open {
		return nil
	}
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !slices.Contains(rt.Params, k) && !slices.Contains(common, k) {
			return Invalid("unknown query parameter %q for %s %s", k, rt.Method, rt.Pattern)
		}
		if len(q[k]) > 1 {
			return Invalid("query parameter %q is given %d times", k, len(q[k]))
		}
	}
	return nil
}

// Timeout reads ?timeout=: a positive Go duration up to MaxTimeout,
// DefaultTimeout when absent.
func Timeout(q url.Values) (time.Duration, *Error) {
	v := q.Get("timeout")
	if v == "" {
		return DefaultTimeout, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 || d > MaxTimeout {
		return 0, Invalid("timeout %q must be a duration such as 10s, up to %s", v, MaxTimeout)
	}
	return d, nil
}

// Uint reads an optional non-negative integer query parameter (0 when
// absent).
func Uint(q url.Values, name string) (uint64, *Error) {
	v := q.Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, Invalid("%s must be a non-negative integer, not %q", name, v)
	}
	return n, nil
}

// Check runs the checks every request passes before its handler: a known
// route, known query parameters, a valid deadline. It returns the route
// and the deadline, or the answer to give.
func Check(r *http.Request) (*Route, time.Duration, *Error) {
	rt := Lookup(r)
	if rt == nil {
		return nil, 0, nil // the handler's NoRoute answers
	}
	q := r.URL.Query()
	if e := rt.CheckQuery(q); e != nil {
		return rt, 0, e
	}
	d, e := Timeout(q)
	return rt, d, e
}

// String names a route for errors and metrics.
func (rt *Route) String() string { return fmt.Sprintf("%s %s", rt.Method, rt.Pattern) }
