package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tally/api/wire"
	"tally/edge"
	"tally/ledger"
)

// gate is a hook on a shard's leader that holds the first transfers
// request until it is opened, and records the transfers of every
// transfers request the node gets.
type gate struct {
	open chan struct{}
	held atomic.Int32
	// answer, when set, answers a request instead of the fake node.
	answer func(w http.ResponseWriter, r *http.Request, ts []ledger.Transfer) bool

	mu     sync.Mutex
	bodies [][]ledger.Transfer
}

func newGate(c *fakeCluster, n *fakeNode) *gate {
	g := &gate{open: make(chan struct{})}
	n.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/transfers" {
			return false
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return false
		}
		var in wire.TransfersIn
		if err := json.Unmarshal(b, &in); err != nil {
			c.t.Errorf("node got %q: %v", b, err)
		}
		g.mu.Lock()
		g.bodies = append(g.bodies, in.Transfers)
		g.mu.Unlock()
		if g.held.Add(1) == 1 {
			select {
			case <-g.open:
			case <-c.done:
			}
		}
		if g.answer != nil && g.answer(w, r, in.Transfers) {
			return true
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		return false
	})
	return g
}

func (g *gate) requests() [][]ledger.Transfer {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.bodies)
}

// waiting is how many requests wait in shard's lane.
func waiting(p *Proxy, shard int) int {
	l := p.lane(shard, "")
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue)
}

// holdLane sends one transfer to shard and waits until the node holds
// it, so that the requests sent next wait in the lane.
func holdLane(t *testing.T, g *gate, url, acct string) <-chan reply {
	t.Helper()
	first := make(chan reply, 1)
	go func() { first <- request(t, "POST", url+"/v1/transfers", transfers(deposit("first", acct))) }()
	waitFor(t, "the first request to reach the node", func() bool { return g.held.Load() >= 1 })
	return first
}

// sendAll sends bodies concurrently, each to url, and returns the answers
// in the same order once they all came.
func sendAll(t *testing.T, url string, bodies []any) []reply {
	t.Helper()
	out := make([]reply, len(bodies))
	var wg sync.WaitGroup
	for i, b := range bodies {
		wg.Go(func() { out[i] = request(t, "POST", url, b) })
	}
	wg.Wait()
	return out
}

// chainOf is client k's request: a linked chain of three deposits.
func chainOf(k int, acct string) []ledger.Transfer {
	ts := make([]ledger.Transfer, 3)
	for j := range ts {
		ts[j] = deposit(fmt.Sprintf("c%02d-%d", k, j), acct)
		ts[j].Linked = j < 2
	}
	return ts
}

func TestCoalesceSameShard(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	p, url := startProxy(t, c)
	const shard, clients = 1, 20
	acct := idOn(t, shard, shards, 0)
	g := newGate(c, c.nodes[c.leader[shard]])
	first := holdLane(t, g, url, acct)

	var bodies []any
	for k := range clients {
		bodies = append(bodies, transfers(chainOf(k, acct)...))
	}
	answers := make(chan []reply, 1)
	go func() { answers <- sendAll(t, url+"/v1/transfers", bodies) }()
	waitFor(t, "every client to wait", func() bool { return waiting(p, shard) == clients })

	// A bad item fails its own request at once, while the others wait.
	bad := request(t, "POST", url+"/v1/transfers", transfers(deposit("ok-1", acct), ledger.Transfer{ID: "bad", Debit: ledger.World, Credit: acct}))
	bad.want(t, http.StatusBadRequest, edge.CodeInvalid)
	if bad.Error.Index == nil || *bad.Error.Index != 1 {
		t.Errorf("bad request names item %v, want 1", bad.Error.Index)
	}
	close(g.open)
	if r := <-first; r.status != http.StatusOK || len(r.Results) != 1 {
		t.Fatalf("first: %d %s", r.status, r.body)
	}
	for k, r := range <-answers {
		if r.status != http.StatusOK || len(r.Results) != 3 {
			t.Fatalf("client %d: %d %s", k, r.status, r.body)
		}
		for j, res := range r.Results {
			if want := fmt.Sprintf("c%02d-%d", k, j); res["id"] != want {
				t.Errorf("client %d result %d is for %v, want %s", k, j, res["id"], want)
			}
		}
	}

	// The node got the first request, then one for all twenty clients,
	// each client's chain whole, in order and still linked.
	reqs := g.requests()
	if len(reqs) != 2 || len(reqs[1]) != 3*clients {
		t.Fatalf("node got %d requests (%v), want 2", len(reqs), len(reqs))
	}
	merged := reqs[1]
	for i := 0; i < len(merged); i += 3 {
		var k int
		if _, err := fmt.Sscanf(merged[i].ID, "c%02d-0", &k); err != nil {
			t.Fatalf("item %d is %s, not the start of a chain", i, merged[i].ID)
		}
		if got := merged[i : i+3]; !slices.EqualFunc(got, chainOf(k, acct), sameTransfer) {
			t.Errorf("client %d's chain went as %+v", k, got)
		}
	}
}

// TestCoalesceAnswers checks that each client of a merged request gets
// the answer its own request would get, byte for byte: a node writes
// {"results":[...]} and a newline with one result per item.
func TestCoalesceAnswers(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	p, url := startProxy(t, c)
	const shard = 2
	acct := idOn(t, shard, shards, 0)
	g := newGate(c, c.nodes[c.leader[shard]])
	g.answer = func(w http.ResponseWriter, r *http.Request, ts []ledger.Transfer) bool {
		edge.WriteJSON(w, http.StatusOK, resultsFor(ts))
		return true
	}
	first := holdLane(t, g, url, acct)
	var bodies []any
	var want [][]byte
	for k := range 5 {
		ts := chainOf(k, acct)[:k%3+1]
		ts[len(ts)-1].Linked = false
		bodies = append(bodies, transfers(ts...))
		rec := newRecorder()
		edge.WriteJSON(rec, http.StatusOK, resultsFor(ts))
		want = append(want, rec.buf.Bytes())
	}
	answers := make(chan []reply, 1)
	go func() { answers <- sendAll(t, url+"/v1/transfers", bodies) }()
	waitFor(t, "every client to wait", func() bool { return waiting(p, shard) == len(bodies) })
	close(g.open)
	r := <-first
	alone := newRecorder()
	edge.WriteJSON(alone, http.StatusOK, resultsFor([]ledger.Transfer{deposit("first", acct)}))
	if !bytes.Equal(r.body, alone.buf.Bytes()) {
		t.Errorf("a request sent alone got %q, the node wrote %q", r.body, alone.buf.Bytes())
	}
	for k, r := range <-answers {
		if r.status != http.StatusOK || !bytes.Equal(r.body, want[k]) {
			t.Errorf("client %d got %d %q, want %q", k, r.status, r.body, want[k])
		}
	}
	if n := len(g.requests()); n != 2 {
		t.Errorf("node got %d requests, want 2", n)
	}
}

func sameTransfer(a, b ledger.Transfer) bool { return a.Same(&b) }

func resultsFor(ts []ledger.Transfer) map[string]any {
	var res []map[string]any
	for _, t := range ts {
		res = append(res, map[string]any{"id": t.ID, "result": "ok", "status": "posted", "linked": t.Linked})
	}
	return map[string]any{"results": res}
}

// recorder is the smallest http.ResponseWriter: it keeps the body.
type recorder struct {
	h   http.Header
	buf bytes.Buffer
}

func newRecorder() *recorder                    { return &recorder{h: http.Header{}} }
func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(b []byte) (int, error) { return r.buf.Write(b) }
func (r *recorder) WriteHeader(int)             {}

// TestCoalesceFailure checks that a merged request that fails gives every
// client in it the answer its own request would have got.
func TestCoalesceFailure(t *testing.T) {
	answer := func(status int, code string) func(http.ResponseWriter, []ledger.Transfer) {
		return func(w http.ResponseWriter, _ []ledger.Transfer) {
			edge.WriteError(w, edge.Errorf(status, code, "no"))
		}
	}
	cases := []struct {
		name   string
		merged func(w http.ResponseWriter, ts []ledger.Transfer) // nil: the fake node answers
		status int
		code   string
		alone  bool // each client's request was sent again on its own
	}{
		{"unavailable", answer(http.StatusServiceUnavailable, edge.CodeUnavailable), http.StatusServiceUnavailable, edge.CodeUnavailable, false},
		{"outcome unknown", answer(http.StatusGatewayTimeout, edge.CodeOutcomeUnknown), http.StatusGatewayTimeout, edge.CodeOutcomeUnknown, false},
		{"internal", answer(http.StatusInternalServerError, edge.CodeInternal), http.StatusInternalServerError, edge.CodeInternal, false},
		{"refused", answer(http.StatusBadRequest, edge.CodeInvalid), http.StatusOK, "", true},
		{"short answer", func(w http.ResponseWriter, ts []ledger.Transfer) {
			edge.WriteJSON(w, http.StatusOK, resultsFor(ts[1:]))
		}, http.StatusGatewayTimeout, edge.CodeOutcomeUnknown, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeCluster(t, 3, shards)
			p, url := startProxy(t, c)
			const shard = 0
			acct := idOn(t, shard, shards, 0)
			g := newGate(c, c.nodes[c.leader[shard]])
			g.answer = func(w http.ResponseWriter, r *http.Request, ts []ledger.Transfer) bool {
				if len(ts) < 2 || tc.merged == nil {
					return false
				}
				tc.merged(w, ts)
				return true
			}
			first := holdLane(t, g, url, acct)
			bodies := []any{transfers(deposit("a", acct)), transfers(deposit("b", acct)), transfers(deposit("c", acct))}
			answers := make(chan []reply, 1)
			start := time.Now()
			go func() { answers <- sendAll(t, url+"/v1/transfers?timeout=1s", bodies) }()
			waitFor(t, "every client to wait", func() bool { return waiting(p, shard) == len(bodies) })
			close(g.open)
			<-first
			for k, r := range <-answers {
				r.want(t, tc.status, tc.code)
				if tc.status == http.StatusOK && (len(r.Results) != 1 || r.Results[0]["id"] != []string{"a", "b", "c"}[k]) {
					t.Errorf("client %d: %s", k, r.body)
				}
			}
			if el := time.Since(start); el > time.Second+late {
				t.Errorf("answered after %v, deadline 1s", el)
			}
			merged := 0
			for _, ts := range g.requests() {
				if len(ts) > 1 {
					merged++
				}
			}
			if merged == 0 {
				t.Errorf("no merged request reached the node")
			}
			if alone := len(g.requests()) - merged - 1; tc.alone && alone != len(bodies) {
				t.Errorf("%d requests sent alone after the refusal, want %d", alone, len(bodies))
			}
		})
	}
}

func TestCoalesceDeadlines(t *testing.T) {
	t.Run("waiting", func(t *testing.T) {
		c := newFakeCluster(t, 3, shards)
		p, url := startProxy(t, c)
		const shard = 3
		acct := idOn(t, shard, shards, 0)
		g := newGate(c, c.nodes[c.leader[shard]])
		first := holdLane(t, g, url, acct)
		patient := make(chan reply, 1)
		go func() { patient <- request(t, "POST", url+"/v1/transfers", transfers(deposit("patient", acct))) }()
		waitFor(t, "a client to wait", func() bool { return waiting(p, shard) == 1 })
		start := time.Now()
		r := request(t, "POST", url+"/v1/transfers?timeout=300ms", transfers(deposit("hasty", acct)))
		r.want(t, http.StatusServiceUnavailable, edge.CodeUnavailable)
		if el := time.Since(start); el < 250*time.Millisecond || el > 300*time.Millisecond+late {
			t.Errorf("answered after %v, deadline 300ms", el)
		}
		close(g.open)
		<-first
		if r := <-patient; r.status != http.StatusOK {
			t.Fatalf("patient client: %d %s", r.status, r.body)
		}
		for _, ts := range g.requests() {
			for _, tr := range ts {
				if tr.ID == "hasty" {
					t.Errorf("a request whose deadline passed while it waited was sent")
				}
			}
		}
	})
	t.Run("in flight", func(t *testing.T) {
		c := newFakeCluster(t, 3, shards)
		p, url := startProxy(t, c)
		const shard = 3
		acct := idOn(t, shard, shards, 0)
		g := newGate(c, c.nodes[c.leader[shard]])
		g.answer = func(w http.ResponseWriter, r *http.Request, ts []ledger.Transfer) bool {
			if len(ts) < 2 {
				return false
			}
			select { // a node that took the merged write and never answers
			case <-r.Context().Done():
			case <-c.done:
			}
			return true
		}
		first := holdLane(t, g, url, acct)
		bodies := []any{transfers(deposit("a", acct)), transfers(deposit("b", acct))}
		answers := make(chan []reply, 1)
		start := time.Now()
		go func() { answers <- sendAll(t, url+"/v1/transfers?timeout=500ms", bodies) }()
		waitFor(t, "every client to wait", func() bool { return waiting(p, shard) == len(bodies) })
		close(g.open)
		<-first
		for _, r := range <-answers {
			r.want(t, http.StatusGatewayTimeout, edge.CodeOutcomeUnknown)
		}
		if el := time.Since(start); el > 500*time.Millisecond+late {
			t.Errorf("answered after %v, deadline 500ms", el)
		}
	})
}

// TestCoalesceDuplicateIDs runs the real ledger behind a fake node: two
// clients that send the same transfer id together get what they get one
// after the other (the second "exists"), because the ledger decides a
// batch's transfers in order and sees the earlier ones.
func TestCoalesceDuplicateIDs(t *testing.T) {
	c := newFakeCluster(t, 3, shards)
	p, url := startProxy(t, c)
	const shard = 1
	acct := idOn(t, shard, shards, 0)
	st := ledger.NewState(shard, shards, nil)
	st.Begin(1, 1)
	st.Execute(&ledger.Command{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{{ID: acct, Currency: "USD"}}})
	var mu sync.Mutex
	g := newGate(c, c.nodes[c.leader[shard]])
	g.answer = func(w http.ResponseWriter, r *http.Request, ts []ledger.Transfer) bool {
		mu.Lock()
		defer mu.Unlock()
		edge.WriteJSON(w, http.StatusOK, wire.Results{Results: st.Execute(&ledger.Command{Kind: ledger.CmdTransfers, Transfers: ts})})
		return true
	}
	first := holdLane(t, g, url, acct)
	answers := make(chan []reply, 1)
	go func() {
		answers <- sendAll(t, url+"/v1/transfers", []any{transfers(deposit("x", acct)), transfers(deposit("x", acct))})
	}()
	waitFor(t, "both clients to wait", func() bool { return waiting(p, shard) == 2 })
	close(g.open)
	<-first
	together := <-answers
	if n := len(g.requests()); n != 2 {
		t.Fatalf("node got %d requests, want 2 (the first, then both clients together)", n)
	}
	// The same, one after the other.
	apart := []reply{
		request(t, "POST", url+"/v1/transfers", transfers(deposit("y", acct))),
		request(t, "POST", url+"/v1/transfers", transfers(deposit("y", acct))),
	}
	got := func(rs []reply) []string {
		var out []string
		for _, r := range rs {
			if r.status != http.StatusOK || len(r.Results) != 1 {
				t.Fatalf("answer %d %s", r.status, r.body)
			}
			out = append(out, fmt.Sprint(r.Results[0]["result"], "/", r.Results[0]["status"]))
		}
		return out
	}
	// Which client goes first in the merged request is the lane's order.
	tg, ap := got(together), got(apart)
	slices.Sort(tg)
	slices.Sort(ap)
	if !slices.Equal(tg, ap) || !slices.Equal(ap, []string{"exists/posted", "ok/posted"}) {
		t.Errorf("together %v, one after the other %v", tg, ap)
	}
}
