package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"tally/api"
	"tally/cluster"
	nodesvc "tally/node"
	"tally/shard"
	"tally/shard/shardtest"
)

// The API tests run on shardtest's in-process clusters, each node serving
// the API; this file holds only what is the API's own: requests and the
// answers' JSON.

// testShards is the shard count of the in-process clusters: the default
// of a real cluster, so placement in the tests matches docs/api.md.
const testShards = shard.DefaultShards

// node is one node of an in-process cluster, as the API tests address it.
type node struct {
	c    *shardtest.Cluster
	num  int    // shardtest's number of the node, from 1
	id   string // the node's id
	raft string // the node's Raft address
}

// url returns the node's base URL.
func (n *node) url() string { return n.c.URL(n.num) }

// addr returns the node's HTTP host:port, as the cluster advertises it.
func (n *node) addr() string { return n.c.HTTPAddr(n.num) }

// host returns the node's shard host.
func (n *node) host() *shard.Host { return n.c.Host(n.num) }

// handler returns the node's API handler, to call without the network.
func (n *node) handler() http.Handler { return n.c.Handler(n.num) }

// serveAPI is the handler every node serves: the API over its service.
func serveAPI(svc *nodesvc.Service, log *slog.Logger) http.Handler { return api.New(svc, log) }

// startCluster starts size nodes with testShards shards, each serving the
// API, and waits until every node is ready: it knows every shard's leader
// and its /readyz answers 200.
func startCluster(tb testing.TB, size int, timing cluster.Timing) []*node {
	tb.Helper()
	c := shardtest.New(tb, size, testShards, shardtest.WithTiming(timing), shardtest.WithHandler(serveAPI))
	if size > 1 {
		c.SpreadLeaders(tb)
	}
	c.WaitReady(tb)
	nodes := make([]*node, size)
	for k := range nodes {
		n := &node{c: c, num: k + 1, id: c.ID(k + 1), raft: c.RaftAddr(k + 1)}
		shardtest.WaitFor(tb, shardtest.LeaderTimeout, n.id+" answering /readyz with 200", func() bool {
			return do(tb, http.MethodGet, n.url()+"/readyz", nil).status == http.StatusOK
		})
		nodes[k] = n
	}
	return nodes
}

// startCluster1 starts a one-node cluster and waits until it is ready.
func startCluster1(tb testing.TB) *node {
	tb.Helper()
	return startCluster(tb, 1, shardtest.SoloTiming)[0]
}

// startCluster3 starts a three-node cluster: n1 bootstraps every shard,
// n2 and n3 join each shard through its leader. It waits until every
// node is ready and leadership has settled, each node leading its share
// of the shards, so that a test can pick leaders and followers that stay
// what they are. Its timing keeps a busy machine from moving leadership
// in the middle of a test.
func startCluster3(tb testing.TB) []*node {
	tb.Helper()
	return startCluster(tb, 3, shardtest.SteadyTiming)
}

// leaderOf returns the node that leads shard i.
func leaderOf(tb testing.TB, nodes []*node, i int) *node {
	tb.Helper()
	c := nodes[0].c
	return nodes[c.Num(c.WaitLeader(tb, i))-1]
}

// followerOf returns a node that does not lead shard i.
func followerOf(tb testing.TB, nodes []*node, i int) *node {
	tb.Helper()
	c := nodes[0].c
	c.WaitLeader(tb, i)
	h := c.Follower(i)
	if h == nil {
		tb.Fatalf("shard %d has no follower\n%s", i, c.Describe())
	}
	return nodes[c.Num(h)-1]
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
	out := make([]int, n.c.Shards())
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
