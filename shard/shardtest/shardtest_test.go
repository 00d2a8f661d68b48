package shardtest_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	nodesvc "tally/node"
	"tally/shard/shardtest"
)

// TestServedCluster pins what a test package built on the harness relies
// on: each node serves WithHandler's handler, for its own service, at
// URL and HTTPAddr; Handler is that same handler; SpreadLeaders leaves
// every node leading its share; WaitReady and Follower agree with it.
func TestServedCluster(t *testing.T) {
	whoami := func(svc *nodesvc.Service, _ *slog.Logger) http.Handler {
		internal := shardtest.InternalOnly(svc)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, nodesvc.InternalPrefix) {
				internal.ServeHTTP(w, r) // joins ask the joining node's progress
				return
			}
			io.WriteString(w, svc.NodeID())
		})
	}
	c := shardtest.New(t, 3, 4, shardtest.WithTiming(shardtest.SteadyTiming), shardtest.WithHandler(whoami))
	c.SpreadLeaders(t)
	c.WaitReady(t)
	for n := 1; n <= c.Nodes(); n++ {
		id := c.ID(n)
		if id != c.Host(n).NodeID() || c.RaftAddr(n) == "" {
			t.Errorf("node %d: id %q raft %q, host %s", n, id, c.RaftAddr(n), c.Host(n).NodeID())
		}
		if c.URL(n) != "http://"+c.HTTPAddr(n) {
			t.Errorf("node %d: URL %s, HTTP address %s", n, c.URL(n), c.HTTPAddr(n))
		}
		resp, err := http.Get(c.URL(n) + "/whoami")
		if err != nil {
			t.Fatalf("node %d: %v", n, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != id {
			t.Errorf("node %d over HTTP: %q (%v), want %s", n, b, err, id)
		}
		if h := c.Handler(n); h == nil {
			t.Errorf("node %d: no handler", n)
		} else {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/whoami", nil))
			if rec.Body.String() != id {
				t.Errorf("node %d's handler answered %q, want %s", n, rec.Body, id)
			}
		}
	}
	led := map[string]int{}
	for s := 0; s < c.Shards(); s++ {
		l, f := c.Leader(s), c.Follower(s)
		if l == nil || f == nil || f == l {
			t.Fatalf("shard %d: leader %v, follower %v\n%s", s, l, f, c.Describe())
		}
		led[l.NodeID()]++
	}
	for id, k := range led {
		if k > 2 {
			t.Errorf("%s leads %d of 4 shards: %v", id, k, led)
		}
	}
}
