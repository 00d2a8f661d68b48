package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"tally/api"
	"tally/cluster"
	nodesvc "tally/node"
	"tally/shard"
)

// testShards is the shard count of the in-process clusters: the default
// of a real cluster, so placement in the tests matches docs/api.md.
const testShards = shard.DefaultShards

// fastTiming keeps elections short so a cluster is ready in well under a
// second.
var fastTiming = cluster.Timing{Heartbeat: 100 * time.Millisecond, Election: 100 * time.Millisecond,
	LeaderLease: 50 * time.Millisecond}

// node is one in-process node: its shard host and its API on an
// httptest server.
type node struct {
	id   string
	raft string
	host *shard.Host
	api  *api.Server
	srv  *httptest.Server
}

// url returns the node's base URL.
func (n *node) url() string { return n.srv.URL }

// addr returns the node's HTTP host:port, as the cluster advertises it.
func (n *node) addr() string { return strings.TrimPrefix(n.srv.URL, "http://") }

// logBuffer collects the nodes' logs so that a test shows them only when
// it fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// tail returns at most the last n bytes written.
func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		s = "...\n" + s[len(s)-n:]
	}
	return s
}

func testLogger(tb testing.TB) *slog.Logger {
	tb.Helper()
	lb := &logBuffer{}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("node logs:\n%s", lb.tail(64<<10))
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// startNode opens a node's host over the given per-shard transports and
// serves its API. The listener is started first so that the node can
// advertise its real HTTP address, which forwarding depends on.
func startNode(tb testing.TB, id, raftAddr string, bootstrap bool, trans []raft.Transport, timing cluster.Timing, log *slog.Logger) *node {
	tb.Helper()
	srv := httptest.NewUnstartedServer(nil)
	addr := srv.Listener.Addr().String()
	peer := nodesvc.NewPeer(nil)
	host, err := shard.Open(shard.Config{NodeID: id, RaftAddr: raftAddr, HTTPAddr: addr, Dir: tb.TempDir(),
		Shards: testShards, Bootstrap: bootstrap, Timing: timing, Logger: log.With("node", id),
		Transports: func(i int) raft.Transport { return trans[i] }, Peers: peer})
	if err != nil {
		srv.Close()
		tb.Fatalf("open node %s: %v", id, err)
	}
	n := &node{id: id, raft: raftAddr, host: host, api: api.New(nodesvc.New(host, peer), log.With("node", id)), srv: srv}
	srv.Config.Handler = n.api
	srv.Start()
	tb.Cleanup(func() {
		srv.Close()
		if err := host.Close(); err != nil {
			tb.Errorf("close node %s: %v", id, err)
		}
	})
	return n
}

// inmemTransports returns, for each node address, its in-memory
// transport of each shard. Each shard is its own Raft group, so a shard's
// transports are connected only among themselves.
func inmemTransports(addrs []string) [][]raft.Transport {
	out := make([][]raft.Transport, len(addrs))
	for i := 0; i < testShards; i++ {
		ts := make([]*raft.InmemTransport, len(addrs))
		for k, a := range addrs {
			_, ts[k] = raft.NewInmemTransport(raft.ServerAddress(a))
		}
		for k := range ts {
			for j := range ts {
				if k != j {
					ts[k].Connect(raft.ServerAddress(addrs[j]), ts[j])
				}
			}
			out[k] = append(out[k], ts[k])
		}
	}
	return out
}

// startCluster1 starts a bootstrapped one-node cluster with testShards
// shards and waits until it is ready.
func startCluster1(tb testing.TB) *node {
	tb.Helper()
	trans := inmemTransports([]string{"n1-raft"})
	n := startNode(tb, "n1", "n1-raft", true, trans[0], fastTiming, testLogger(tb))
	waitReady(tb, n)
	return n
}

// waitReady waits until every shard has a leader known to n and n's
// /readyz answers 200.
func waitReady(tb testing.TB, n *node) {
	tb.Helper()
	waitFor(tb, 10*time.Second, fmt.Sprintf("node %s ready", n.id), func() bool {
		for i := 0; i < n.host.Shards(); i++ {
			if id, _ := n.host.Leader(i); id == "" {
				return false
			}
		}
		resp, err := http.Get(n.url() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// waitFor polls cond until it holds or d passes.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answer is an HTTP answer with its body.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into a generic value.
func (a answer) json(tb testing.TB) map[string]any {
	tb.Helper()
	var v map[string]any
	if err := json.Unmarshal(a.body, &v); err != nil {
		tb.Fatalf("answer %d is not a JSON object: %v: %.300s", a.status, err, a.body)
	}
	return v
}

// errorCode returns error.code of an error answer, failing the test when
// the answer is not a JSON error.
func (a answer) errorCode(tb testing.TB) (code string, e map[string]any) {
	tb.Helper()
	v := a.json(tb)
	e, ok := v["error"].(map[string]any)
	if !ok {
		tb.Fatalf("answer %d has no error object: %.300s", a.status, a.body)
	}
	code, _ = e["code"].(string)
	if code == "" {
		tb.Fatalf("answer %d has no error.code: %.300s", a.status, a.body)
	}
	return code, e
}

// do sends a request with a raw body ("" for none) to base+path.
func do(tb testing.TB, method, url string, body []byte, header ...string) answer {
	tb.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read answer: %v", method, url, err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// get sends a GET to n.
func (n *node) get(tb testing.TB, path string) answer {
	tb.Helper()
	return do(tb, http.MethodGet, n.url()+path, nil)
}

// post sends v, marshalled unless it is already []byte or a string, to n.
func (n *node) post(tb testing.TB, path string, v any) answer {
	tb.Helper()
	var b []byte
	switch x := v.(type) {
	case []byte:
		b = x
	case string:
		b = []byte(x)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			tb.Fatalf("marshal: %v", err)
		}
	}
	return do(tb, http.MethodPost, n.url()+path, b)
}

// mustOK fails the test unless a is a 200.
func mustOK(tb testing.TB, a answer, what string) answer {
	tb.Helper()
	if a.status != http.StatusOK {
		tb.Fatalf("%s: status %d: %.500s", what, a.status, a.body)
	}
	return a
}

// result is one item of a batch answer.
type result struct {
	ID       string `json:"id"`
	Result   string `json:"result"`
	Status   string `json:"status"`
	Original string `json:"original"`
	Shard    int    `json:"shard"`
	Seq      uint64 `json:"seq"`
}

// results decodes a 200 batch answer.
func results(tb testing.TB, a answer, what string) []result {
	tb.Helper()
	mustOK(tb, a, what)
	var env struct {
		Results []result `json:"results"`
	}
	if err := json.Unmarshal(a.body, &env); err != nil {
		tb.Fatalf("%s: %v: %.300s", what, err, a.body)
	}
	return env.Results
}

// account is the part of GET /v1/accounts/{id} the tests look at.
type account struct {
	ID             string `json:"id"`
	Currency       string `json:"currency"`
	Closed         bool   `json:"closed"`
	DebitsPosted   int64  `json:"debits_posted"`
	CreditsPosted  int64  `json:"credits_posted"`
	DebitsPending  int64  `json:"debits_pending"`
	CreditsPending int64  `json:"credits_pending"`
	Balance        int64  `json:"balance"`
}

func (n *node) account(tb testing.TB, id string) account {
	tb.Helper()
	a := mustOK(tb, n.get(tb, "/v1/accounts/"+id), "get account "+id)
	var v account
	if err := json.Unmarshal(a.body, &v); err != nil {
		tb.Fatalf("account %s: %v", id, err)
	}
	return v
}

// logLengths returns the length of every shard's event log on n, read
// page by page through GET /v1/shards/N/events.
func (n *node) logLengths(tb testing.TB) []int {
	tb.Helper()
	out := make([]int, n.host.Shards())
	for i := range out {
		after := uint64(0)
		for {
			a := mustOK(tb, n.get(tb, fmt.Sprintf("/v1/shards/%d/events?after=%d&limit=1000", i, after)), "events")
			var page struct {
				Events []struct {
					Seq uint64 `json:"seq"`
				} `json:"events"`
			}
			if err := json.Unmarshal(a.body, &page); err != nil {
				tb.Fatalf("events of shard %d: %v", i, err)
			}
			out[i] += len(page.Events)
			if len(page.Events) < 1000 {
				break
			}
			after = page.Events[len(page.Events)-1].Seq
		}
	}
	return out
}

// accounts creates accounts (id, currency pairs) and fails unless each
// answers ok.
func (n *node) accounts(tb testing.TB, idCur ...string) {
	tb.Helper()
	var as []map[string]any
	for i := 0; i+1 < len(idCur); i += 2 {
		as = append(as, map[string]any{"id": idCur[i], "currency": idCur[i+1]})
	}
	for _, r := range results(tb, n.post(tb, "/v1/accounts", map[string]any{"accounts": as}), "create accounts") {
		if r.Result != "ok" {
			tb.Fatalf("create account %s: %s", r.ID, r.Result)
		}
	}
}

// transfer sends one transfer and returns its result.
func (n *node) transfer(tb testing.TB, t map[string]any) result {
	tb.Helper()
	rs := results(tb, n.post(tb, "/v1/transfers", map[string]any{"transfers": []any{t}}), "transfer")
	if len(rs) != 1 {
		tb.Fatalf("transfer: %d results", len(rs))
	}
	return rs[0]
}

// startCluster3 starts a three-node cluster: n1 bootstraps every shard,
// n2 and n3 join each shard through its leader. It waits until every
// node is ready and leadership has settled: every node names the same
// leader for each shard and no node leads more than its share, which is
// when the hosts stop handing leadership around. Its Raft timings are a
// little slower than a single node's, so that a busy test machine does
// not cost a leader its lease in the middle of a test.
func startCluster3(tb testing.TB) []*node {
	tb.Helper()
	log := testLogger(tb)
	ids := []string{"n1", "n2", "n3"}
	addrs := []string{"n1-raft", "n2-raft", "n3-raft"}
	trans := inmemTransports(addrs)
	timing := cluster.Timing{Heartbeat: 300 * time.Millisecond, Election: 300 * time.Millisecond, LeaderLease: 150 * time.Millisecond}
	nodes := make([]*node, len(ids))
	for k := range ids {
		nodes[k] = startNode(tb, ids[k], addrs[k], k == 0, trans[k], timing, log)
	}
	waitReady(tb, nodes[0])
	for _, nd := range nodes[1:] {
		for i := 0; i < testShards; i++ {
			// A join may lose its leader while the new voter catches up;
			// joining again is harmless.
			var err error
			waitFor(tb, 20*time.Second, fmt.Sprintf("join %s to shard %d (%v)", nd.id, i, err), func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				l := leaderNode(nodes, i)
				if l == nil {
					return false
				}
				err = l.host.Join(ctx, i, nd.id, nd.raft, nd.addr())
				return err == nil
			})
		}
	}
	for _, nd := range nodes {
		waitReady(tb, nd)
	}
	// Hand shards 1 and 2 to n2 and n3 now rather than waiting seconds
	// for the hosts to spread leadership themselves.
	for i := 1; i < len(nodes) && i < testShards; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if l := leaderNode(nodes, i); l == nil {
			tb.Logf("shard %d has no leader to hand on", i)
		} else if err := l.host.TransferLeader(ctx, i, ids[i]); err != nil {
			tb.Logf("hand shard %d to %s: %v", i, ids[i], err)
		}
		cancel()
	}
	share := (testShards + len(nodes) - 1) / len(nodes)
	settled := func() bool {
		led := map[string]int{}
		for i := 0; i < testShards; i++ {
			id, _ := nodes[0].host.Leader(i)
			for _, nd := range nodes[1:] {
				if other, _ := nd.host.Leader(i); other != id || id == "" {
					return false
				}
			}
			led[id]++
		}
		for _, c := range led {
			if c > share {
				return false
			}
		}
		return true
	}
	waitFor(tb, 30*time.Second, "leadership settled", func() bool {
		if !settled() {
			return false
		}
		time.Sleep(300 * time.Millisecond)
		return settled()
	})
	return nodes
}

// leaderNode returns the node that believes it leads shard i, or nil.
func leaderNode(nodes []*node, i int) *node {
	for _, nd := range nodes {
		if id, _ := nd.host.Leader(i); id == nd.id {
			return nd
		}
	}
	return nil
}

// leaderOf returns the node that leads shard i, as n1 sees it.
func leaderOf(tb testing.TB, nodes []*node, i int) *node {
	tb.Helper()
	id, _ := nodes[0].host.Leader(i)
	for _, nd := range nodes {
		if nd.id == id {
			return nd
		}
	}
	tb.Fatalf("shard %d has no leader", i)
	return nil
}

// followerOf returns a node that does not lead shard i.
func followerOf(tb testing.TB, nodes []*node, i int) *node {
	tb.Helper()
	l := leaderOf(tb, nodes, i)
	for _, nd := range nodes {
		if nd != l {
			return nd
		}
	}
	tb.Fatalf("shard %d has no follower", i)
	return nil
}
