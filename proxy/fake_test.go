package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tally/api/wire"
	"tally/edge"
	"tally/ledger"
)

// fakeCluster is a set of httptest nodes that speak enough of the node API
// for the proxy: GET /v1/cluster from a shared leader table, writes that
// answer 421 with ?forward=false when the node does not lead the shard, and
// reads that say which node answered.
type fakeCluster struct {
	t      *testing.T
	shards int
	nodes  []*fakeNode
	// done is closed when the test ends, ahead of the servers, to release
	// handlers that hang on purpose.
	done chan struct{}

	mu     sync.Mutex
	leader []int // shard -> node index, -1 for none
	seq    uint64
}

type fakeNode struct {
	c    *fakeCluster
	name string
	srv  *httptest.Server
	addr string
	// hook, when set, sees every request first; true means it answered.
	hook atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]

	clusterGets atomic.Int32

	mu   sync.Mutex
	reqs []fakeReq
}

// fakeReq is a request a node got (GET /v1/cluster is not recorded).
type fakeReq struct {
	method, path string
	query        url.Values
	ids          []string // the items of a batch
	status       int
}

func newFakeCluster(t *testing.T, nodes, shards int) *fakeCluster {
	t.Helper()
	c := &fakeCluster{t: t, shards: shards, leader: make([]int, shards), done: make(chan struct{})}
	for s := range c.leader {
		c.leader[s] = s % nodes
	}
	for i := range nodes {
		n := &fakeNode{c: c, name: fmt.Sprintf("n%d", i)}
		n.srv = httptest.NewServer(n)
		n.addr = n.srv.Listener.Addr().String()
		t.Cleanup(n.srv.Close)
		c.nodes = append(c.nodes, n)
	}
	t.Cleanup(func() { close(c.done) })
	return c
}

func (c *fakeCluster) addrs() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.addr)
	}
	return out
}

func (c *fakeCluster) setLeader(shard, node int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leader[shard] = node
}

func (c *fakeCluster) leaderAddr(shard int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.leader[shard]; l >= 0 {
		return c.nodes[l].addr
	}
	return ""
}

// writes returns the write requests every node got, by node.
func (c *fakeCluster) writes() [][]fakeReq {
	out := make([][]fakeReq, len(c.nodes))
	for i, n := range c.nodes {
		for _, r := range n.requests() {
			if r.method == http.MethodPost {
				out[i] = append(out[i], r)
			}
		}
	}
	return out
}

func (c *fakeCluster) totalWrites() int {
	total := 0
	for _, w := range c.writes() {
		total += len(w)
	}
	return total
}

func (n *fakeNode) requests() []fakeReq {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]fakeReq(nil), n.reqs...)
}

func (n *fakeNode) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	n.hook.Store(&h)
}

func (n *fakeNode) record(r *http.Request, ids []string, status int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.reqs = append(n.reqs, fakeReq{method: r.Method, path: r.URL.Path, query: r.URL.Query(), ids: ids, status: status})
}

func (n *fakeNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := n.hook.Load(); h != nil && (*h)(w, r) {
		return
	}
	p := r.URL.Path
	switch {
	case p == "/v1/cluster":
		n.clusterGets.Add(1)
		n.cluster(w)
	case r.Method == http.MethodPost && p == "/v1/transfers":
		var req wire.TransfersIn
		n.batch(w, r, &req, func() []fakeItem {
			var items []fakeItem
			for i := range req.Transfers {
				items = append(items, fakeItem{req.Transfers[i].ID, ledger.TransferShard(&req.Transfers[i], n.c.shards)})
			}
			return items
		})
	case r.Method == http.MethodPost && p == "/v1/accounts":
		var req wire.AccountsIn
		n.batch(w, r, &req, func() []fakeItem {
			var items []fakeItem
			for _, a := range req.Accounts {
				items = append(items, fakeItem{a.ID, ledger.ShardOf(a.ID, n.c.shards)})
			}
			return items
		})
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/close"):
		id := strings.TrimSuffix(strings.TrimPrefix(p, "/v1/accounts/"), "/close")
		items := []fakeItem{{id, ledger.ShardOf(id, n.c.shards)}}
		if n.refuse(w, r, items) {
			return
		}
		n.record(r, []string{id}, http.StatusOK)
		edge.WriteJSON(w, http.StatusOK, map[string]any{"id": id, "result": "ok", "shard": items[0].shard, "node": n.name})
	case r.Method == http.MethodGet:
		n.record(r, nil, http.StatusOK)
		edge.WriteJSON(w, http.StatusOK, map[string]any{"path": p, "node": n.name})
	default:
		edge.WriteError(w, edge.Errorf(http.StatusNotFound, edge.CodeNotFound, "no route %s %s", r.Method, p))
	}
}

type fakeItem struct {
	id    string
	shard int
}

func (n *fakeNode) cluster(w http.ResponseWriter) {
	var out wire.Cluster
	for s := range n.c.shards {
		out.Shards = append(out.Shards, wire.Shard{Shard: s, LeaderHTTP: n.c.leaderAddr(s)})
	}
	for _, o := range n.c.nodes {
		out.Nodes = append(out.Nodes, wire.Node{ID: o.name, HTTP: o.addr})
	}
	edge.WriteJSON(w, http.StatusOK, out)
}

func (n *fakeNode) batch(w http.ResponseWriter, r *http.Request, req any, items func() []fakeItem) {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(req); err != nil {
		n.record(r, nil, http.StatusBadRequest)
		edge.WriteError(w, edge.Errorf(http.StatusBadRequest, edge.CodeInvalid, "%v", err))
		return
	}
	its := items()
	if n.refuse(w, r, its) {
		return
	}
	var ids []string
	var results []map[string]any
	for _, it := range its {
		n.c.mu.Lock()
		n.c.seq++
		seq := n.c.seq
		n.c.mu.Unlock()
		ids = append(ids, it.id)
		results = append(results, map[string]any{"id": it.id, "result": "ok", "status": "posted",
			"shard": it.shard, "seq": seq, "node": n.name})
	}
	n.record(r, ids, http.StatusOK)
	edge.WriteJSON(w, http.StatusOK, map[string]any{"results": results})
}

// refuse answers 421 not_leader with the leader's address when
// forward=false and this node does not lead every item's shard.
func (n *fakeNode) refuse(w http.ResponseWriter, r *http.Request, items []fakeItem) bool {
	if r.URL.Query().Get("forward") != "false" {
		return false
	}
	for _, it := range items {
		if l := n.c.leaderAddr(it.shard); l != n.addr {
			n.record(r, nil, http.StatusMisdirectedRequest)
			edge.WriteJSON(w, http.StatusMisdirectedRequest, map[string]any{"error": map[string]any{
				"code": edge.CodeNotLeader, "message": "not the leader", "leader_http": l}})
			return true
		}
	}
	return false
}

// idOn returns an account id on shard s, distinct for each k.
func idOn(t *testing.T, s, shards, k int) string {
	t.Helper()
	found := 0
	for i := range 100000 {
		id := fmt.Sprintf("acct-%d", i)
		if ledger.ShardOf(id, shards) == s {
			if found == k {
				return id
			}
			found++
		}
	}
	t.Fatalf("no id on shard %d", s)
	return ""
}

// startProxy makes a proxy in front of c and waits for its first map. It
// refreshes only after failures, so tests decide when the map changes.
func startProxy(t *testing.T, c *fakeCluster) (*Proxy, string) {
	t.Helper()
	p, err := New(Config{
		Nodes:           c.addrs(),
		RefreshInterval: time.Hour,
		Logger:          slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := p.Refresh(ctx); err != nil {
		t.Fatalf("first refresh: %v", err)
	}
	return p, srv.URL
}

// reply is a decoded answer of the proxy.
type reply struct {
	status  int
	body    []byte
	Results []map[string]any `json:"results"`
	Error   struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Index   *int   `json:"index"`
		Result  string `json:"result"`
	} `json:"error"`
	Node string `json:"node"`
}

func request(t *testing.T, method, u string, body any) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	var r reply
	r.status = resp.StatusCode
	if r.body, err = io.ReadAll(resp.Body); err != nil {
		t.Fatalf("read answer: %v", err)
	}
	if err := json.Unmarshal(r.body, &r); err != nil {
		t.Fatalf("%s %s: answer %d is not JSON: %q", method, u, r.status, r.body)
	}
	return r
}

func (r reply) want(t *testing.T, status int, code string) {
	t.Helper()
	if r.status != status || r.Error.Code != code {
		t.Fatalf("answer %d %q, want %d %q: %s", r.status, r.Error.Code, status, code, r.body)
	}
}

// waitFor polls cond until it holds or five seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func deposit(id, to string) ledger.Transfer {
	return ledger.Transfer{ID: id, Debit: ledger.World, Credit: to, Amount: 100}
}

func transfers(ts ...ledger.Transfer) wire.TransfersIn { return wire.TransfersIn{Transfers: ts} }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newServer serves p on a test server and returns its URL.
func newServer(t *testing.T, p *Proxy) string {
	t.Helper()
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv.URL
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func (c *fakeCluster) clusterGets() int {
	total := 0
	for _, n := range c.nodes {
		total += int(n.clusterGets.Load())
	}
	return total
}
