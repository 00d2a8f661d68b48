package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tally/api/wire"
	"tally/edge"
	"tally/ledger"
)

const shards = 4

// late bounds how long after its deadline an answer may come. The proxy
// answers at the deadline; the slack absorbs a loaded test machine (a
// starved process can see its timers fire a second late) while still
// telling a deadline kept from one ignored (the default 10s) or a hang.
const late = 3 * time.Second

func TestRoutesToShardLeader(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	_, url := startProxy(t, c)
	for s := range shards {
		leader := c.leaderAddr(s)
		acct := idOn(t, s, shards, 0)
		cases := []struct {
			method, path string
			body         any
		}{
			{"POST", "/v1/accounts", map[string]any{"accounts": []map[string]any{{"id": acct, "currency": "USD"}}}},
			{"POST", "/v1/transfers", transfers(deposit("t-"+acct, acct))},
			{"POST", "/v1/transfers", transfers(ledger.Transfer{ID: "w-" + acct, Debit: acct, Credit: ledger.World, Amount: 1})},
			{"POST", "/v1/accounts/" + acct + "/close", nil},
			{"GET", "/v1/accounts/" + acct + "?consistency=stale", nil},
			{"GET", "/v1/accounts/" + acct + "/history?limit=5", nil},
		}
		for _, tc := range cases {
			t.Run(fmt.Sprintf("shard%d %s %s", s, tc.method, tc.path), func(t *testing.T) {
				before := make([]int, len(c.nodes))
				for i, n := range c.nodes {
					before[i] = len(n.requests())
				}
				r := request(t, tc.method, url+tc.path, tc.body)
				if r.status != http.StatusOK {
					t.Fatalf("status %d: %s", r.status, r.body)
				}
				for i, n := range c.nodes {
					got := n.requests()[before[i]:]
					if n.addr != leader {
						if len(got) != 0 {
							t.Fatalf("node %s (not the leader) got %+v", n.name, got)
						}
						continue
					}
					if len(got) != 1 {
						t.Fatalf("leader %s got %d requests, want 1", n.name, len(got))
					}
					q := got[0].query
					if wantForward := tc.method == "POST"; (q.Get("forward") == "false") != wantForward {
						t.Errorf("forward=%q for %s", q.Get("forward"), tc.method)
					}
					if d, err := time.ParseDuration(q.Get("timeout")); err != nil || d <= 0 || d > edge.DefaultTimeout {
						t.Errorf("node timeout %q", q.Get("timeout"))
					}
					if strings.Contains(tc.path, "?") && q.Get("consistency") == "" && q.Get("limit") == "" {
						t.Errorf("client query lost: %v", q)
					}
				}
			})
		}
	}
}

func TestBatchSplitMergeOrder(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	_, url := startProxy(t, c)
	var ts []ledger.Transfer
	var accts []map[string]any
	want := map[string]int{} // id -> shard
	for k := range 30 {
		s := (k * 7) % shards
		acct := idOn(t, s, shards, k)
		tr := deposit(fmt.Sprintf("t-%02d", k), acct)
		if k%3 == 0 {
			tr = ledger.Transfer{ID: tr.ID, Debit: acct, Credit: ledger.World, Amount: 5}
		}
		ts = append(ts, tr)
		accts = append(accts, map[string]any{"id": acct, "currency": "EUR"})
		want[tr.ID], want[acct] = s, s
	}
	check := func(t *testing.T, r reply, ids []string) {
		t.Helper()
		if r.status != http.StatusOK || len(r.Results) != len(ids) {
			t.Fatalf("status %d, %d results for %d items: %s", r.status, len(r.Results), len(ids), r.body)
		}
		for i, res := range r.Results {
			if res["id"] != ids[i] {
				t.Fatalf("result %d is for %v, want %s", i, res["id"], ids[i])
			}
			if int(res["shard"].(float64)) != want[ids[i]] {
				t.Errorf("result %d from shard %v, want %d", i, res["shard"], want[ids[i]])
			}
		}
	}
	var tids, aids []string
	for i := range ts {
		tids, aids = append(tids, ts[i].ID), append(aids, accts[i]["id"].(string))
	}
	check(t, request(t, "POST", url+"/v1/transfers", transfers(ts...)), tids)
	check(t, request(t, "POST", url+"/v1/accounts", map[string]any{"accounts": accts}), aids)

	// Each leader got only its shards' items, in request order, once per batch.
	for i, reqs := range c.writes() {
		for _, fr := range reqs {
			if fr.status != http.StatusOK {
				t.Errorf("node %d answered %d", i, fr.status)
			}
			all := tids
			if fr.path == "/v1/accounts" {
				all = aids
			}
			last := -1
			for _, id := range fr.ids {
				if c.leaderAddr(want[id]) != c.nodes[i].addr {
					t.Errorf("node %d got %s of shard %d", i, id, want[id])
				}
				at := slices.Index(all, id)
				if at <= last {
					t.Errorf("node %d got %v out of request order", i, fr.ids)
				}
				last = at
			}
		}
	}
	if got := c.totalWrites(); got != 2*shards {
		t.Errorf("%d part requests, want %d (one per shard per batch)", got, 2*shards)
	}
}

func TestSingleShardBatchPassesThrough(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	_, url := startProxy(t, c)
	// Braces co-locate accounts: the chain is on one shard and is sent whole.
	chain := []ledger.Transfer{
		{ID: "c1", Debit: "a{grp}", Credit: "b{grp}", Amount: 1, Linked: true},
		{ID: "c2", Debit: "b{grp}", Credit: "c{grp}", Amount: 1},
	}
	r := request(t, "POST", url+"/v1/transfers", transfers(chain...))
	if r.status != http.StatusOK || len(r.Results) != 2 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if c.totalWrites() != 1 {
		t.Fatalf("%d node writes, want 1", c.totalWrites())
	}
}

func TestRetryOnNotLeader(t *testing.T) {
	for _, hint := range []bool{true, false} {
		t.Run(fmt.Sprintf("hint=%v", hint), func(t *testing.T) {
			c := newFakeCluster(t, 3, shards)
			p, url := startProxy(t, c)
			old, next := c.nodes[1], c.nodes[2]
			if c.leaderAddr(1) != old.addr || p.Leaders()[1] != old.addr {
				t.Fatalf("shard 1 should start on %s", old.name)
			}
			c.setLeader(1, 2) // the proxy's map is now stale
			if !hint {
				old.setHook(func(w http.ResponseWriter, r *http.Request) bool {
					if r.Method != http.MethodPost {
						return false
					}
					old.record(r, nil, http.StatusMisdirectedRequest)
					edge.WriteError(w, edge.Errorf(http.StatusMisdirectedRequest, edge.CodeNotLeader, "not the leader, no idea who is"))
					return true
				})
			}
			acct := idOn(t, 1, shards, 0)
			gets := c.clusterGets()
			r := request(t, "POST", url+"/v1/transfers", transfers(deposit("t-1", acct)))
			if r.status != http.StatusOK || r.Results[0]["node"] != next.name {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			// Without a hint the map must be refreshed. (With one, the
			// background refresher may still run meanwhile, so only the
			// outcome is checked: one refused write, then the hinted node.)
			if refreshed := c.clusterGets() > gets; !hint && !refreshed {
				t.Errorf("no hint, and the map was not refreshed")
			}
			if got := old.requests(); len(got) != 1 || got[0].status != http.StatusMisdirectedRequest {
				t.Fatalf("old leader got %+v, want one refused write", got)
			}
			if got := p.Leaders()[1]; got != next.addr {
				t.Fatalf("map says shard 1 is on %s, want %s", got, next.addr)
			}
		})
	}
}

func TestRetryOnUnavailable(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	_, url := startProxy(t, c)
	var refused atomic.Int32
	n := c.nodes[0]
	n.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPost || refused.Add(1) > 2 {
			return false
		}
		edge.WriteError(w, edge.Errorf(http.StatusServiceUnavailable, edge.CodeUnavailable, "electing"))
		return true
	})
	r := request(t, "POST", url+"/v1/transfers", transfers(deposit("t-1", idOn(t, 0, shards, 0))))
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if refused.Load() != 3 {
		t.Fatalf("%d attempts, want 3", refused.Load())
	}
}

func TestRetryOnConnectionRefused(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	p, url := startProxy(t, c)
	dead := c.nodes[1]
	dead.srv.Close()
	// The cluster elects a new leader for the dead node's shard; the
	// proxy learns of it only through a failed request.
	c.setLeader(1, 0)
	acct := idOn(t, 1, shards, 0)
	r := request(t, "POST", url+"/v1/accounts", map[string]any{"accounts": []map[string]any{{"id": acct, "currency": "USD"}}})
	if r.status != http.StatusOK || r.Results[0]["node"] != c.nodes[0].name {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if got := p.Leaders()[1]; got != c.nodes[0].addr {
		t.Fatalf("map says shard 1 is on %s", got)
	}
	// Requests any node can answer avoid the dead node too.
	for range 2 * len(c.nodes) {
		if r := request(t, "GET", url+"/v1/transfers/t-1", nil); r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	}
}

func TestNoLeader(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	_, url := startProxy(t, c)
	c.setLeader(1, -1)
	c.setLeader(2, -1)
	electing := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPost {
			return false
		}
		edge.WriteError(w, edge.Errorf(http.StatusServiceUnavailable, edge.CodeUnavailable, "no leader"))
		return true
	}
	c.nodes[1].setHook(electing)
	c.nodes[2].setHook(electing)
	a0, a1, a2 := idOn(t, 0, shards, 0), idOn(t, 1, shards, 0), idOn(t, 2, shards, 0)
	cases := []struct {
		name   string
		body   wire.TransfersIn
		status int
		code   string
	}{
		{"one shard", transfers(deposit("t-1", a1)), http.StatusServiceUnavailable, edge.CodeUnavailable},
		{"two leaderless shards", transfers(deposit("t-1", a1), deposit("t-2", a2)), http.StatusServiceUnavailable, edge.CodeUnavailable},
		// Shard 0's part is applied: the batch is not all-or-nothing, so the
		// answer must not say "nothing was applied".
		{"one part applied", transfers(deposit("t-0", a0), deposit("t-1", a1)), http.StatusGatewayTimeout, edge.CodeOutcomeUnknown},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := request(t, "POST", url+"/v1/transfers?timeout=600ms", tc.body)
			r.want(t, tc.status, tc.code)
			if el := time.Since(start); el > 600*time.Millisecond+late {
				t.Fatalf("answered after %v, deadline 600ms", el)
			}
		})
	}
	readyz := request(t, "GET", url+"/readyz", nil)
	readyz.want(t, http.StatusServiceUnavailable, edge.CodeUnavailable)
}

func TestNoNodeReachable(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	for _, n := range c.nodes {
		n.srv.Close()
	}
	p, err := New(Config{Nodes: c.addrs(), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	srv := newServer(t, p)
	start := time.Now()
	r := request(t, "POST", srv+"/v1/transfers?timeout=500ms", transfers(deposit("t-1", "alice")))
	r.want(t, http.StatusServiceUnavailable, edge.CodeUnavailable)
	r = request(t, "GET", srv+"/v1/cluster?timeout=500ms", nil)
	r.want(t, http.StatusServiceUnavailable, edge.CodeUnavailable)
	if el := time.Since(start); el > 2*500*time.Millisecond+late {
		t.Fatalf("answered after %v", el)
	}
}

func TestDeadline(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	_, url := startProxy(t, c)
	leader := c.nodes[0]
	var attempts atomic.Int32
	hang := func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v1/cluster" {
			return false
		}
		attempts.Add(1)
		// A node that takes the write and never answers. The server
		// notices that the proxy gave up only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-c.done:
		}
		return true
	}
	leader.setHook(hang)
	acct := idOn(t, 0, shards, 0)
	for _, tc := range []struct {
		method, path string
		body         any
		status       int
		code         string
	}{
		{"POST", "/v1/transfers?timeout=300ms", transfers(deposit("t-1", acct)), http.StatusGatewayTimeout, edge.CodeOutcomeUnknown},
		{"POST", "/v1/accounts/" + acct + "/close?timeout=300ms", nil, http.StatusGatewayTimeout, edge.CodeOutcomeUnknown},
		// A read has no outcome to be unsure of.
		{"GET", "/v1/accounts/" + acct + "?timeout=300ms", nil, http.StatusServiceUnavailable, edge.CodeUnavailable},
	} {
		start := time.Now()
		r := request(t, tc.method, url+tc.path, tc.body)
		r.want(t, tc.status, tc.code)
		if el := time.Since(start); el < 250*time.Millisecond || el > 300*time.Millisecond+late {
			t.Fatalf("%s %s answered after %v, deadline 300ms", tc.method, tc.path, el)
		}
	}

	// A node that answers 504 is retried with the same ids, and the
	// final answer stays 504.
	attempts.Store(0)
	leader.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v1/cluster" {
			return false
		}
		attempts.Add(1)
		edge.WriteError(w, edge.Errorf(http.StatusGatewayTimeout, edge.CodeOutcomeUnknown, "raft: leadership lost"))
		return true
	})
	r := request(t, "POST", url+"/v1/transfers?timeout=2s", transfers(deposit("t-1", acct)))
	r.want(t, http.StatusGatewayTimeout, edge.CodeOutcomeUnknown)
	if attempts.Load() < 2 {
		t.Fatalf("%d attempts, want a retry", attempts.Load())
	}
}

func TestValidationRejectsWithoutContactingNodes(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	_, url := startProxy(t, c)
	a0, a1 := idOn(t, 0, shards, 0), idOn(t, 1, shards, 0)
	big := make([]ledger.Transfer, ledger.MaxBatch+1)
	for i := range big {
		big[i] = deposit(fmt.Sprintf("t-%d", i), a0)
	}
	idx := func(i int) *int { return &i }
	cases := []struct {
		name, path string
		body       any
		index      *int
		result     string
	}{
		{"malformed", "/v1/transfers", `{"transfers": [`, nil, ""},
		{"empty body", "/v1/transfers", "", nil, ""},
		{"trailing data", "/v1/transfers", `{"transfers": []} {}`, nil, ""},
		{"unknown field", "/v1/transfers", `{"transfers": [{"id": "t", "debit": "a", "credit": "b", "amount": 1, "colour": "red"}]}`, idx(0), "invalid_request"},
		{"unknown top field", "/v1/accounts", `{"accounts": [{"id": "a", "currency": "USD"}], "x": 1}`, nil, ""},
		{"wrong type", "/v1/transfers", `{"transfers": [{"id": "t", "debit": "a", "credit": "b", "amount": "1"}]}`, idx(0), "amount_invalid"},
		{"empty batch", "/v1/transfers", `{"transfers": []}`, nil, ""},
		{"batch too large", "/v1/transfers", transfers(big...), nil, ""},
		{"bad amount", "/v1/transfers", transfers(deposit("t-0", a0), ledger.Transfer{ID: "t-1", Debit: a1, Credit: a0}), idx(1), "amount_invalid"},
		{"bad id", "/v1/transfers", transfers(deposit("t 0", a0)), idx(0), "invalid_id"},
		{"same accounts", "/v1/transfers", transfers(deposit("t-0", a0), ledger.Transfer{ID: "t-1", Debit: a1, Credit: a1, Amount: 1}), idx(1), "accounts_must_be_different"},
		{"open chain", "/v1/transfers", transfers(deposit("t-0", a0), ledger.Transfer{ID: "t-1", Debit: a1, Credit: ledger.World, Amount: 1, Linked: true}), idx(1), "invalid_request"},
		{"reserved account", "/v1/accounts", `{"accounts": [{"id": "ok", "currency": "USD"}, {"id": "@bank", "currency": "USD"}]}`, idx(1), "invalid_id"},
		{"bad currency", "/v1/accounts", `{"accounts": [{"id": "ok", "currency": "usd"}]}`, idx(0), "currency_invalid"},
		{"balance set", "/v1/accounts", `{"accounts": [{"id": "ok", "currency": "USD", "credits_posted": 5}]}`, idx(0), "invalid_request"},
		{"bad timeout", "/v1/transfers?timeout=soon", transfers(deposit("t-0", a0)), nil, ""},
		{"timeout too long", "/v1/transfers?timeout=90s", transfers(deposit("t-0", a0)), nil, ""},
		{"unknown parameter", "/v1/transfers?async=true", transfers(deposit("t-0", a0)), nil, ""},
		{"chain across shards", "/v1/transfers", transfers(
			ledger.Transfer{ID: "t-0", Debit: a0, Credit: ledger.World, Amount: 1, Linked: true},
			deposit("t-1", a1)), idx(1), "cross_shard_not_supported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := request(t, "POST", url+tc.path, tc.body)
			r.want(t, http.StatusBadRequest, edge.CodeInvalid)
			if (r.Error.Index == nil) != (tc.index == nil) || tc.index != nil && *r.Error.Index != *tc.index {
				t.Errorf("index %v, want %v", r.Error.Index, tc.index)
			}
			if r.Error.Result != tc.result {
				t.Errorf("result %q, want %q", r.Error.Result, tc.result)
			}
		})
	}
	if n := c.totalWrites(); n != 0 {
		t.Fatalf("nodes got %d writes for invalid requests", n)
	}
}

func TestBodyTooLarge(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	_, url := startProxy(t, c)
	body := `{"transfers": [{"id": "t", "debit": "a", "credit": "b", "amount": 1, "reference": "` +
		strings.Repeat("x", edge.MaxBody) + `"}]}`
	for _, path := range []string{"/v1/transfers", "/v1/accounts", "/v1/accounts/alice/close"} {
		// With a Content-Length, and without one (chunked), which the
		// proxy can only find out by reading.
		for _, chunked := range []bool{false, true} {
			var rd io.Reader = strings.NewReader(body)
			if chunked {
				rd = struct{ io.Reader }{rd}
			}
			req, err := http.NewRequestWithContext(t.Context(), "POST", url+path, rd)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), edge.CodeTooLarge) {
				t.Fatalf("%s chunked=%v: %d %s", path, chunked, resp.StatusCode, b)
			}
		}
	}
	if n := c.totalWrites(); n != 0 {
		t.Fatalf("nodes got %d writes", n)
	}
}

func TestForwardAnyNode(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	_, url := startProxy(t, c)
	seen := map[string]bool{}
	for _, path := range []string{"/v1/transfers/t-1", "/v1/cluster", "/v1/shards/0/events?after=3", "/metrics", "/v1/accounts/@world?currency=USD"} {
		for range len(c.nodes) {
			r := request(t, "GET", url+path, nil)
			if r.status != http.StatusOK {
				t.Fatalf("GET %s: %d %s", path, r.status, r.body)
			}
			seen[r.Node] = true
		}
	}
	if len(seen) < 2 {
		t.Errorf("requests for any node all went to %v", seen)
	}
	for _, n := range c.nodes {
		for _, fr := range n.requests() {
			if fr.query.Has("forward") {
				t.Errorf("%s got forward=%s", fr.path, fr.query.Get("forward"))
			}
			if fr.path == "/v1/shards/0/events" && fr.query.Get("after") != "3" {
				t.Errorf("query lost: %v", fr.query)
			}
		}
	}
}

func TestStreamPassThrough(t *testing.T) {
	c := newFakeCluster(t, 1, shards)
	_, url := startProxy(t, c)
	release := make(chan struct{})
	c.nodes[0].setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v1/shards/0/events" {
			return false
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		fmt.Fprintln(w, `{"seq":1}`)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		fmt.Fprintln(w, `{"seq":2}`)
		return true
	})
	// The stream outlives the request deadline: the deadline bounds only
	// the wait for the answer to start.
	resp, err := http.Get(url + "/v1/shards/0/events?after=0&timeout=100ms")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64)
	n, err := resp.Body.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), `"seq":1`) {
		t.Fatalf("first event not flushed: %q %v", buf[:n], err)
	}
	time.AfterFunc(300*time.Millisecond, func() { close(release) })
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !strings.Contains(string(rest), `"seq":2`) {
		t.Fatalf("stream cut: %q %v", rest, err)
	}
}

func TestHealthAndClose(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	p, url := startProxy(t, c)
	if r := request(t, "GET", url+"/healthz", nil); r.status != http.StatusOK {
		t.Fatalf("healthz %d", r.status)
	}
	if r := request(t, "GET", url+"/readyz", nil); r.status != http.StatusOK {
		t.Fatalf("readyz %d: %s", r.status, r.body)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

func TestServeShutsDown(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	p, err := New(Config{Nodes: c.addrs(), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ln := listen(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	waitFor(t, "the proxy to answer", func() bool {
		resp, err := http.Get("http://" + ln.Addr().String() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

func TestNodeTimeout(t *testing.T) {
	if d := nodeTimeout(10 * time.Second); d >= 10*time.Second || d < 9*time.Second {
		t.Errorf("node timeout for 10s: %v", d)
	}
	if d := nodeTimeout(5 * time.Millisecond); d != 0 {
		t.Errorf("node timeout for 5ms: %v", d)
	}
}

// nodeEdge answers as a node's edge does before any handler runs.
var nodeEdge = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	rt, _, e := edge.Check(r)
	switch {
	case rt == nil:
		edge.NoRoute(w, r)
	case e != nil:
		edge.WriteError(w, e)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
})

// TestEdgeAnswersAsANode checks that the proxy refuses what a node's edge
// refuses, with the same answer, before any node is asked.
func TestEdgeAnswersAsANode(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	_, url := startProxy(t, c)
	for _, tc := range []struct {
		method, target string
		status         int
		code           string
		in             string // the message names it
		allow          string
	}{
		{"GET", "/v1/accounts/alice?as_of=2024-01-01", 400, edge.CodeInvalid, `"as_of"`, ""},
		{"POST", "/v1/transfers?dry_run=true", 400, edge.CodeInvalid, `"dry_run"`, ""},
		{"GET", "/v1/shards/0/events?from=start", 400, edge.CodeInvalid, `"from"`, ""},
		{"GET", "/v1/cluster?timeout=5s&timeout=6s", 400, edge.CodeInvalid, `"timeout"`, ""},
		{"GET", "/v1/cluster?timeout=90s", 400, edge.CodeInvalid, "timeout", ""},
		{"POST", "/v1/transfers?timeout=90s", 400, edge.CodeInvalid, "timeout", ""},
		{"GET", "/v1/accounts/alice?timeout=90s", 400, edge.CodeInvalid, "timeout", ""},
		{"GET", "/v2/nothing", 404, edge.CodeNotFound, "/v2/nothing", ""},
		{"GET", "/v1/accounts/alice/", 404, edge.CodeNotFound, "/v1/accounts/alice/", ""},
		{"DELETE", "/v1/transfers", 405, edge.CodeMethodNotAllowed, "DELETE", "POST"},
		{"GET", "/v1/transfers", 405, edge.CodeMethodNotAllowed, "GET", "POST"},
		{"POST", "/v1/accounts/alice", 405, edge.CodeMethodNotAllowed, "POST", "GET"},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tc.method, url+tc.target, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			e := edge.ReadError(resp.StatusCode, body)
			if e.Status != tc.status || e.Code != tc.code || !strings.Contains(e.Message, tc.in) {
				t.Fatalf("answer %d %s %q, want %d %s naming %s", e.Status, e.Code, e.Message, tc.status, tc.code, tc.in)
			}
			if got := resp.Header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			node := httptest.NewRecorder()
			nodeEdge.ServeHTTP(node, httptest.NewRequest(tc.method, tc.target, nil))
			if node.Code != resp.StatusCode || node.Body.String() != string(body) || node.Header().Get("Allow") != tc.allow {
				t.Errorf("a node answers %d Allow %q %s\nthe proxy %d Allow %q %s",
					node.Code, node.Header().Get("Allow"), node.Body, resp.StatusCode, resp.Header.Get("Allow"), body)
			}
		})
	}
	for _, n := range c.nodes {
		if got := n.requests(); len(got) != 0 {
			t.Errorf("node %s got %+v for refused requests", n.name, got)
		}
	}
}
