package contract

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"tally/edge"
	"tally/shard"
)

// call is one request of the contract script and the status it must get.
type call struct {
	method, target string
	body           string // "" for none
	status         int
	// proxyStatus is the status at the proxy when it differs by design
	// (0: the same as status).
	proxyStatus int
	// refused is set when the OpenAPI document itself must refuse the
	// request, as the server does.
	refused bool
}

// TestContract sends requests to every route, at a node and through the
// proxy of a three-node cluster, and validates each request and answer
// against docs/openapi.yaml: the statuses the server gives must be
// documented for the operation, and the answers must have the
// documented shape. Every route of edge.Routes must be reached.
func TestContract(t *testing.T) {
	c := startCluster(t, 3)
	for _, kind := range []string{"node", "proxy"} {
		t.Run(kind, func(t *testing.T) {
			s := newServer(t, kind, c)
			reached := map[string]bool{}
			for _, cl := range script(t, s, kind) {
				x := s.do(t, cl.method, cl.target, bodyOf(cl.body))
				want := cl.status
				if kind == "proxy" && cl.proxyStatus != 0 {
					want = cl.proxyStatus
				}
				if x.status != want {
					t.Errorf("%s: %s: status %d, want %d: %.300s", kind, x, x.status, want, x.answer)
				}
				if cl.refused && !s.spec.refuses(x) {
					t.Errorf("%s: %s: the server refuses it (%d), the document takes it", kind, x, x.status)
				}
				if rt := routeOf(x); rt != nil {
					reached[rt.String()] = true
				}
			}
			for _, rt := range edge.Routes {
				if !reached[rt.String()] {
					t.Errorf("%s: no request reached %s", kind, rt.String())
				}
			}
		})
	}
}

// script is the requests of TestContract for the server of kind, with
// account and transfer ids and consumer names of its own (the node and
// the proxy share a cluster).
func script(t *testing.T, s *server, kind string) []call {
	t.Helper()
	// Each kind has shards of its own, so that its first account opens
	// its shard's log (at_seq=1 below).
	p, home, away := kind[:1], 1, 2
	if kind == "proxy" {
		home, away = 3, 0
	}
	src, dst, far := idOn(p+"-src", home), idOn(p+"-dst", home), idOn(p+"-far", away)
	h := fmt.Sprint(home)
	eur := p + "-eur"
	sink := p + "-sink"
	leader0 := s.c.WaitLeader(t, 0).NodeID()
	big := `{"transfers": [{"id": "` + p + `-big", "debit": "@world", "credit": "` + src + `", "amount": 1, "reference": "` +
		strings.Repeat("x", edge.MaxBody) + `"}]}`
	tr := func(id, debit, credit string, amount int, more string) string {
		return fmt.Sprintf(`{"id": %q, "debit": %q, "credit": %q, "amount": %d%s}`, id, debit, credit, amount, more)
	}
	return []call{
		// Accounts.
		{method: "POST", target: "/v1/accounts", status: 200, body: fmt.Sprintf(`{"accounts": [{"id": %q, "currency": "USD", "metadata": {"k": "v"}},
			{"id": %q, "currency": "USD", "allow_negative": true}, {"id": %q, "currency": "USD"}, {"id": %q, "currency": "EUR"}]}`, src, dst, far, eur)},
		{method: "POST", target: "/v1/accounts", status: 400, refused: true, body: `{"accounts": [{"id": "x", "currency": "USD", "colour": "red"}]}`},
		{method: "POST", target: "/v1/accounts", status: 400, refused: true, body: `{"accounts": []}`},
		{method: "POST", target: "/v1/accounts", status: 400, refused: true, body: `{"accounts": [{"id": "x", "currency": "usd"}]}`},
		// Transfers: posted, pending, cross-shard, then a post, a void and
		// a rejection.
		{method: "POST", target: "/v1/transfers", status: 200, body: `{"transfers": [` + tr(p+"-d1", "@world", src, 10000, "") + `, ` +
			tr(p+"-t1", src, dst, 100, `, "reference": "r", "metadata": {"k": "v"}`) + `, ` +
			tr(p+"-h1", src, dst, 50, `, "pending": true, "timeout_seconds": 3600`) + `, ` +
			tr(p+"-h2", src, dst, 70, `, "pending": true`) + `, ` + tr(p+"-x1", src, far, 10, "") + `]}`},
		{method: "POST", target: "/v1/transfers", status: 200, body: `{"transfers": [` + tr(p+"-p1", src, dst, 0, `, "post_pending_id": "`+p+`-h1"`) + `, ` +
			tr(p+"-v2", src, dst, 0, `, "void_pending_id": "`+p+`-h2"`) + `, ` + tr(p+"-r1", src, dst, 1<<40, "") + `, ` +
			tr(p+"-l1", src, dst, 1, `, "linked": true`) + `, ` + tr(p+"-l2", dst, src, 1, "") + `]}`},
		{method: "POST", target: "/v1/transfers", status: 400, refused: true, body: `{"transfers": [` + tr(p+"-bad", src, dst, -1, "") + `]}`},
		{method: "POST", target: "/v1/transfers", status: 400, refused: true, body: `{"transfers": [{"id": "x"`},
		{method: "POST", target: "/v1/transfers", status: 413, body: big},
		{method: "POST", target: "/v1/transfers?forward=false&timeout=5s", status: 200, body: `{"transfers": [` + tr(p+"-t2", src, dst, 1, "") + `]}`},
		{method: "GET", target: "/v1/transfers/" + p + "-h1", status: 200},
		{method: "GET", target: "/v1/transfers/" + p + "-x1?shard=" + h + "&consistency=stale", status: 200},
		{method: "GET", target: "/v1/transfers/" + p + "-r1?min_seq=1&shard=" + h, status: 200},
		{method: "GET", target: "/v1/transfers/" + p + "-none", status: 404},
		{method: "GET", target: "/v1/transfers/" + p + "-h1?shard=9", status: 400},
		// Reads of accounts.
		{method: "GET", target: "/v1/accounts/" + src, status: 200},
		{method: "GET", target: "/v1/accounts/" + src + "?consistency=stale&at_seq=1", status: 200},
		{method: "GET", target: "/v1/accounts/" + src + "?min_seq=1&timeout=2s", status: 200},
		{method: "GET", target: "/v1/accounts/" + src + "?min_seq=999999999&timeout=300ms", status: 503},
		{method: "GET", target: "/v1/accounts/" + src + "?consistency=eventual", status: 400, refused: true},
		{method: "GET", target: "/v1/accounts/" + src + "?at_time=1", status: 400, refused: true},
		{method: "GET", target: "/v1/accounts/" + src + "?at_time=2200-01-01T01:00:00%2B01:00", status: 200},
		{method: "GET", target: "/v1/accounts/" + src + "?at_seq=1&at_time=2200-01-01T00:00:00Z", status: 400},
		{method: "GET", target: "/v1/accounts/" + src + "?shard=" + h + "&shard=" + h, status: 400},
		{method: "GET", target: "/v1/accounts/@world?currency=USD", status: 200},
		{method: "GET", target: "/v1/accounts/@world?currency=USD&shard=" + h, status: 200},
		{method: "GET", target: "/v1/accounts/@world", status: 400},
		{method: "GET", target: "/v1/accounts/" + p + "-nobody", status: 404},
		{method: "GET", target: "/v1/accounts/" + src + "/history?limit=2&order=desc", status: 200},
		{method: "GET", target: "/v1/accounts/" + src + "/history?after=1&limit=1&consistency=stale", status: 200},
		{method: "GET", target: "/v1/accounts/" + src + "/history?order=sideways", status: 400, refused: true},
		{method: "GET", target: "/v1/accounts/@world/history?currency=USD&shard=" + h, status: 200},
		// Closing.
		{method: "POST", target: "/v1/accounts/" + eur + "/close", status: 200},
		{method: "POST", target: "/v1/accounts/" + eur + "/close", status: 200},
		{method: "POST", target: "/v1/accounts/" + p + "-nobody/close", status: 404},
		// Sagas and audits.
		{method: "GET", target: "/v1/sagas", status: 200},
		{method: "GET", target: "/v1/sagas?state=aborted&limit=5", status: 200},
		{method: "GET", target: "/v1/sagas?state=stuck&shard=" + h, status: 200},
		{method: "GET", target: "/v1/sagas?state=late", status: 400, refused: true},
		{method: "POST", target: "/v1/sagas/" + p + "-x1/resolve", status: 409, body: `{"note": "contract test"}`},
		{method: "POST", target: "/v1/sagas/" + p + "-x1/resolve", status: 400, refused: true, body: `{"note": "n", "why": "x"}`},
		{method: "GET", target: "/v1/audit", status: 200},
		{method: "GET", target: "/v1/shards/" + h + "/audit", status: 200},
		{method: "GET", target: "/v1/shards/9/audit", status: 404},
		// Shards.
		{method: "GET", target: "/v1/shards/" + h + "/events?after=0&limit=3", status: 200},
		{method: "GET", target: "/v1/shards/" + h + "/events", status: 200},
		{method: "GET", target: "/v1/shards/" + h + "/events?types=TransferPosted&account=" + src + "&currency=USD&limit=2", status: 200},
		{method: "GET", target: "/v1/shards/" + h + "/events?follow=true&timeout=300ms&types=AccountOpened", status: 200},
		{method: "GET", target: "/v1/shards/" + h + "/events?types=Nope", status: 400, refused: true},
		{method: "GET", target: "/v1/events?after=0:1," + h + ":2&currency=USD", status: 200},
		{method: "GET", target: "/v1/events?follow=true&timeout=300ms&limit=5", status: 200},
		{method: "GET", target: "/v1/events?after=0:1,0:2", status: 400},
		{method: "GET", target: "/v1/shards/" + h + "/state", status: 200},
		{method: "GET", target: "/v1/shards/x/state", status: 404, refused: true},
		{method: "GET", target: "/v1/shards/" + h + "/verify", status: 200},
		{method: "GET", target: "/v1/shards/" + h + "/hash?seq=1", status: 200},
		{method: "GET", target: "/v1/shards/" + h + "/hash?seq=-1", status: 400, refused: true},
		// Named consumers: an offset moves forwards only, reset moves it
		// anywhere, delete forgets it.
		{method: "PUT", target: "/v1/consumers/" + sink + "/offsets/" + h, status: 200, body: `{"seq": 2}`},
		{method: "PUT", target: "/v1/consumers/" + sink + "/offsets/" + h, status: 200, body: `{"seq": 2}`},
		{method: "PUT", target: "/v1/consumers/" + sink + "/offsets/" + h, status: 409, body: `{"seq": 1}`},
		{method: "PUT", target: "/v1/consumers/" + sink + "/offsets/" + h, status: 400, body: `{"seq": 999999999}`},
		{method: "PUT", target: "/v1/consumers/" + sink + "/offsets/" + h, status: 400, refused: true, body: `{}`},
		{method: "PUT", target: "/v1/consumers/" + sink + "/offsets/" + h, status: 400, refused: true, body: `{"seq": -1}`},
		{method: "PUT", target: "/v1/consumers/" + sink + "/offsets/" + h, status: 400, refused: true, body: `{"seq": 3, "shard": 0}`},
		{method: "PUT", target: "/v1/consumers/" + sink + "/offsets/9", status: 404, body: `{"seq": 1}`},
		{method: "PUT", target: "/v1/consumers/" + p + "-bad!/offsets/" + h, status: 400, refused: true, body: `{"seq": 1}`},
		{method: "GET", target: "/v1/consumers", status: 200},
		{method: "GET", target: "/v1/consumers/" + sink, status: 200},
		{method: "GET", target: "/v1/consumers/" + p + "-nobody", status: 404},
		{method: "POST", target: "/v1/consumers/" + sink + "/reset", status: 200, body: `{"to": "end"}`},
		{method: "POST", target: "/v1/consumers/" + sink + "/reset", status: 200, body: `{"to": "start"}`},
		{method: "POST", target: "/v1/consumers/" + sink + "/reset", status: 200, body: `{"to": "0:0,` + h + `:1"}`},
		{method: "POST", target: "/v1/consumers/" + p + "-fresh/reset", status: 200, body: `{"to": "` + h + `:1"}`},
		{method: "POST", target: "/v1/consumers/" + sink + "/reset", status: 400, refused: true, body: `{"to": "sideways"}`},
		{method: "POST", target: "/v1/consumers/" + sink + "/reset", status: 400, body: `{"to": "9:1"}`},
		{method: "POST", target: "/v1/consumers/" + sink + "/reset", status: 400, body: `{"to": "` + h + `:999999999"}`},
		{method: "POST", target: "/v1/consumers/" + sink + "/reset", status: 400, refused: true, body: `{}`},
		{method: "POST", target: "/v1/consumers/" + sink + "/reset", status: 400, refused: true, body: `{"to": "end", "from": "start"}`},
		{method: "DELETE", target: "/v1/consumers/" + sink, status: 200},
		{method: "DELETE", target: "/v1/consumers/" + sink, status: 404},
		{method: "GET", target: "/v1/consumers/" + sink, status: 404},
		{method: "DELETE", target: "/v1/consumers/" + p + "-fresh", status: 200},
		// Cluster.
		{method: "GET", target: "/v1/cluster", status: 200},
		{method: "GET", target: "/v1/cluster/local", status: 200},
		{method: "GET", target: "/v1/cluster?timeout=90s", status: 400},
		{method: "GET", target: "/v1/cluster?timeout=soon", status: 400, refused: true},
		{method: "POST", target: "/v1/cluster/join", status: 400, refused: true, body: `{"id": "n9"}`},
		{method: "POST", target: "/v1/cluster/join", status: 404, body: `{"id": "n9", "raft": "n9", "http": "127.0.0.1:1", "shard": 9}`},
		{method: "POST", target: "/v1/cluster/leave", status: 404, body: `{"id": "n9", "shard": 9}`},
		{method: "POST", target: "/v1/cluster/leave", status: 400, refused: true, body: `{}`},
		{method: "POST", target: "/v1/cluster/transfer-leader", status: 200, body: fmt.Sprintf(`{"shard": 0, "to": %q}`, leader0)},
		{method: "POST", target: "/v1/cluster/transfer-leader", status: 404, body: `{"shard": 9}`},
		{method: "POST", target: "/v1/cluster/transfer-leader", status: 400, refused: true, body: `{"to": "n1"}`},
		{method: "GET", target: "/v1/backup", status: 200},
		{method: "GET", target: "/v1/backup?shard=1", status: 400},
		// Between nodes only: the proxy does not take it.
		{method: "POST", target: "/v1/internal/local", status: 200, proxyStatus: 404, body: `{}`},
		{method: "POST", target: "/v1/internal/nothing", status: 404, body: `{}`},
		// Operations.
		{method: "GET", target: "/healthz", status: 200},
		{method: "GET", target: "/readyz", status: 200},
		{method: "GET", target: "/metrics", status: 200},
		{method: "GET", target: "/debug/pprof/", status: 200},
		{method: "GET", target: "/debug/pprof/profile?seconds=1", status: 200},
		{method: "GET", target: "/debug/pprof/trace?seconds=0.2", status: 200},
		// No route.
		{method: "GET", target: "/v1/nothing", status: 404},
		{method: "DELETE", target: "/v1/transfers", status: 405},
		{method: "PUT", target: "/v1/accounts/" + src, status: 405},
	}
}

// TestNotLeader asks a node that does not lead a shard, with
// ?forward=false, for an account on it: 421 not_leader naming the
// leader, as documented. The proxy routes such a request to the leader.
func TestNotLeader(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.Num(c.WaitLeader(t, 1))
	other := leader%c.Nodes() + 1
	s := newServer(t, "node", c)
	s.base = "http://" + c.HTTPAddr(other)
	id := idOn("nl", 1)
	s.do(t, "POST", "/v1/accounts", []byte(fmt.Sprintf(`{"accounts": [{"id": %q, "currency": "USD"}]}`, id)))
	x := s.do(t, "GET", "/v1/accounts/"+id+"?forward=false", nil)
	var e struct {
		Error edge.Error `json:"error"`
	}
	if err := json.Unmarshal(x.answer, &e); x.status != http.StatusMisdirectedRequest || err != nil ||
		e.Error.Code != edge.CodeNotLeader || e.Error.LeaderHTTP != c.HTTPAddr(leader) {
		t.Fatalf("node %d: %d %s, want 421 not_leader naming %s", other, x.status, x.answer, c.HTTPAddr(leader))
	}
	ps := newServer(t, "proxy", c)
	if x := ps.do(t, "GET", "/v1/accounts/"+id+"?forward=false", nil); x.status != http.StatusOK {
		t.Fatalf("proxy: %d %s, want 200", x.status, x.answer)
	}
}

// idOn returns the first id prefix-N that lives on shard sh.
func idOn(prefix string, sh int) string {
	for i := 0; ; i++ {
		if id := fmt.Sprintf("%s-%d", prefix, i); shard.Of(id, shards) == sh {
			return id
		}
	}
}

func bodyOf(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// routeOf returns the edge route that x's request took, or nil.
func routeOf(x *exchange) *edge.Route {
	req, err := http.NewRequest(x.method, "http://h"+x.target, nil)
	if err != nil {
		return nil
	}
	return edge.Lookup(req)
}
