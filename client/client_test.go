package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"tally/ledger"
)

// seen is one request as the fake server received it.
type seen struct {
	Method string
	Path   string // escaped path, as sent
	Query  url.Values
	Body   string
}

// fake is an httptest server that records requests and answers each with
// the status and body its handler picks.
type fake struct {
	mu   sync.Mutex
	reqs []seen
	srv  *httptest.Server
}

func newFake(t *testing.T, answer func(r seen) (int, string)) (*fake, *Client) {
	t.Helper()
	f := &fake{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s := seen{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.Query(), Body: string(b)}
		f.mu.Lock()
		f.reqs = append(f.reqs, s)
		f.mu.Unlock()
		status, body := answer(s)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(f.srv.Close)
	return f, New(strings.TrimPrefix(f.srv.URL, "http://"))
}

func (f *fake) last(t *testing.T) seen {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		t.Fatal("no request reached the server")
	}
	return f.reqs[len(f.reqs)-1]
}

func fixed(status int, body string) func(seen) (int, string) {
	return func(seen) (int, string) { return status, body }
}

// sameJSON fails unless got and want are equal JSON values.
func sameJSON(t *testing.T, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("body %q is not JSON: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want %q is not JSON: %v", want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Errorf("body\n got %s\nwant %s", gb, wb)
	}
}

func TestCreateAccounts(t *testing.T) {
	f, c := newFake(t, fixed(200, `{"results": [{"id": "alice", "result": "ok", "shard": 2, "seq": 1},
		{"id": "bob", "result": "exists", "shard": 1, "seq": 4}]}`))
	res, err := c.CreateAccounts(context.Background(), []ledger.Account{
		{ID: "alice", Currency: "USD", Metadata: map[string]string{"kyc": "ok"}},
		{ID: "bob", Currency: "USD", AllowNegative: true, CreatedSeq: 9},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := f.last(t)
	if r.Method != "POST" || r.Path != "/v1/accounts" {
		t.Errorf("request %s %s", r.Method, r.Path)
	}
	// Only the fields a client may set go on the wire.
	sameJSON(t, r.Body, `{"accounts": [
		{"id": "alice", "currency": "USD", "allow_negative": false, "metadata": {"kyc": "ok"}},
		{"id": "bob", "currency": "USD", "allow_negative": true}]}`)
	want := []ledger.Result{{ID: "alice", Result: ledger.OK, Shard: 2, Seq: 1}, {ID: "bob", Result: ledger.Exists, Shard: 1, Seq: 4}}
	if fmt.Sprint(res) != fmt.Sprint(want) {
		t.Errorf("results %+v, want %+v", res, want)
	}
}

func TestCreateTransfers(t *testing.T) {
	f, c := newFake(t, fixed(200, `{"results": [{"id": "t-1", "result": "exists", "original": "insufficient_funds",
		"status": "rejected", "shard": 2, "seq": 18}]}`))
	res, err := c.CreateTransfers(context.Background(), []ledger.Transfer{
		{ID: "t-1", Debit: "alice", Credit: "bob", Amount: 2500, Reference: "invoice 7"},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := f.last(t)
	if r.Method != "POST" || r.Path != "/v1/transfers" {
		t.Errorf("request %s %s", r.Method, r.Path)
	}
	sameJSON(t, r.Body, `{"transfers": [{"id": "t-1", "debit": "alice", "credit": "bob", "amount": 2500, "reference": "invoice 7"}]}`)
	want := ledger.Result{ID: "t-1", Result: ledger.Exists, Original: ledger.InsufficientFunds, Status: ledger.StatusRejected, Shard: 2, Seq: 18}
	if len(res) != 1 || res[0] != want {
		t.Errorf("results %+v, want [%+v]", res, want)
	}
}

func TestBatchResultCountMismatch(t *testing.T) {
	_, c := newFake(t, fixed(200, `{"results": []}`))
	_, err := c.CreateTransfers(context.Background(), []ledger.Transfer{{ID: "t-1", Debit: "a", Credit: "b", Amount: 1}})
	if err == nil || !strings.Contains(err.Error(), "0 results for 1 transfers") {
		t.Errorf("err = %v, want a result count mismatch", err)
	}
}

func TestAccount(t *testing.T) {
	shard := 3
	tests := []struct {
		name      string
		id        string
		opts      ReadOpts
		wantPath  string
		wantQuery string
	}{
		{"default", "alice", ReadOpts{}, "/v1/accounts/alice", ""},
		{"stale", "alice", ReadOpts{Consistency: Stale, MinSeq: 17}, "/v1/accounts/alice", "consistency=stale&min_seq=17"},
		{"braces are escaped", "alice{eu}", ReadOpts{AtSeq: 5}, "/v1/accounts/alice%7Beu%7D", "at_seq=5"},
		{"at a time", "alice", ReadOpts{AtTime: time.Date(2026, 1, 2, 15, 4, 5, 6, time.FixedZone("", 3600))}, "/v1/accounts/alice", "at_time=2026-01-02T15%3A04%3A05.000000006%2B01%3A00"},
		{"world on one shard", "@world", ReadOpts{Currency: "USD", Shard: &shard}, "/v1/accounts/@world", "currency=USD&shard=3"},
		{"world on shard 0", "@world", ReadOpts{Currency: "EUR", Shard: new(int)}, "/v1/accounts/@world", "currency=EUR&shard=0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, c := newFake(t, fixed(200, `{"id": "alice", "currency": "USD", "allow_negative": false,
				"metadata": {"kyc": "ok"}, "closed": false, "debits_posted": 0, "credits_posted": 10000,
				"debits_pending": 500, "credits_pending": 0, "balance": 10000, "available": 9500,
				"shard": 2, "seq": 17, "created_seq": 1, "created_at": "2026-11-21T10:00:00Z"}`))
			v, err := c.Account(context.Background(), tt.id, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			r := f.last(t)
			if r.Method != "GET" || r.Path != tt.wantPath || r.Query.Encode() != tt.wantQuery {
				t.Errorf("request %s %s?%s, want GET %s?%s", r.Method, r.Path, r.Query.Encode(), tt.wantPath, tt.wantQuery)
			}
			created := ledger.Time(time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC).UnixNano())
			if v.Balance != 10000 || v.Available != 9500 || v.DebitsPending != 500 || v.Seq != 17 ||
				v.Shard != 2 || v.Metadata["kyc"] != "ok" || v.CreatedAt != created || v.CreatedSeq != 1 {
				t.Errorf("view %+v", v)
			}
		})
	}
}

func TestCloseAccount(t *testing.T) {
	f, c := newFake(t, fixed(200, `{"id": "alice", "result": "ok", "shard": 2, "seq": 30}`))
	res, err := c.CloseAccount(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if r := f.last(t); r.Method != "POST" || r.Path != "/v1/accounts/alice/close" {
		t.Errorf("request %s %s", r.Method, r.Path)
	}
	if res != (ledger.Result{ID: "alice", Result: ledger.OK, Shard: 2, Seq: 30}) {
		t.Errorf("result %+v", res)
	}
}

func TestTransfer(t *testing.T) {
	f, c := newFake(t, fixed(200, `{"id": "p-1", "debit": "alice", "credit": "bob", "amount": 2500,
		"status": "voided", "result": "ok", "cross_shard": false, "shard": 2, "seq": 18,
		"time": "2026-11-21T10:00:00Z", "transfer": {"id": "p-1", "debit": "alice", "credit": "bob",
		"amount": 2500, "pending": true}, "resolved_by": "v-1", "resolved_seq": 20}`))
	v, err := c.Transfer(context.Background(), "p-1")
	if err != nil {
		t.Fatal(err)
	}
	if r := f.last(t); r.Path != "/v1/transfers/p-1" {
		t.Errorf("path %s", r.Path)
	}
	if v.Debit != "alice" || v.Credit != "bob" || v.Status != ledger.StatusVoided || v.ResolvedBy != "v-1" ||
		v.ResolvedSeq != 20 || v.Transfer == nil || !v.Transfer.Pending {
		t.Errorf("view %+v", v)
	}
}

func TestHistoryAndEvents(t *testing.T) {
	ev := `{"shard": 2, "seq": 18, "raft_index": 40, "time": "2026-11-21T10:00:00Z", "type": "TransferPosted",
		"data": {"transfer": {"id": "t-1", "debit": "alice", "credit": "bob", "amount": 2500}},
		"balances": [{"account": "alice", "currency": "USD", "balance": 7500}],
		"prev_hash": "` + strings.Repeat("ab", 32) + `", "hash": "` + strings.Repeat("cd", 32) + `"}`
	tests := []struct {
		name      string
		answer    string
		call      func(c *Client) (*EventPage, error)
		wantPath  string
		wantQuery string
		wantNext  string
	}{
		{"history", `{"events": [` + ev + `], "next": "41"}`,
			func(c *Client) (*EventPage, error) {
				return c.History(context.Background(), "alice", HistoryOpts{After: "17", Limit: 5, Order: "desc"})
			}, "/v1/accounts/alice/history", "after=17&limit=5&order=desc", "41"},
		{"history last page", `{"events": [` + ev + `], "next": ""}`,
			func(c *Client) (*EventPage, error) { return c.History(context.Background(), "alice", HistoryOpts{}) },
			"/v1/accounts/alice/history", "", ""},
		{"events", `{"events": [` + ev + `], "next": "18"}`,
			func(c *Client) (*EventPage, error) { return c.Events(context.Background(), 2, 17, 10) },
			"/v1/shards/2/events", "after=17&limit=10", "18"},
		{"events with a numeric cursor", `{"events": [` + ev + `], "next": 18}`,
			func(c *Client) (*EventPage, error) { return c.Events(context.Background(), 0, 0, 0) },
			"/v1/shards/0/events", "", "18"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, c := newFake(t, fixed(200, tt.answer))
			p, err := tt.call(c)
			if err != nil {
				t.Fatal(err)
			}
			r := f.last(t)
			if r.Path != tt.wantPath || r.Query.Encode() != tt.wantQuery {
				t.Errorf("request %s?%s, want %s?%s", r.Path, r.Query.Encode(), tt.wantPath, tt.wantQuery)
			}
			if p.Next != tt.wantNext || len(p.Events) != 1 {
				t.Fatalf("page next %q with %d events", p.Next, len(p.Events))
			}
			e := p.Events[0]
			if e.Seq != 18 || e.Type != ledger.TransferPosted || e.Data.Transfer.Amount != 2500 ||
				e.Balances[0].Balance != 7500 || e.Hash.String() != strings.Repeat("cd", 32) {
				t.Errorf("event %+v", e)
			}
		})
	}
}

func TestClusterCalls(t *testing.T) {
	f, c := newFake(t, func(r seen) (int, string) {
		switch r.Path {
		case "/v1/cluster":
			return 200, `{"shards": [{"shard": 0, "leader": "n1", "leader_http": "127.0.0.1:8001", "applied_seq": 42,
				"replicas": [{"node": "n1", "raft": "127.0.0.1:7001", "http": "127.0.0.1:8001", "state": "leader", "applied_seq": 42}]}],
				"nodes": [{"id": "n1", "http": "127.0.0.1:8001", "raft": "127.0.0.1:7001"}]}`
		case "/v1/shards/1/state":
			return 200, `{"shard": 1, "node": "n1", "applied_index": 120, "applied_seq": 42, "head_hash": "aa",
				"state_hash": "bb", "raft_state": "Leader", "term": 3, "leader": "n1", "commit_index": 120}`
		case "/v1/shards/1/verify":
			return 200, `{"shard": 1, "node": "n1", "ok": true, "events": 42, "applied_seq": 42, "head_hash": "aa", "state_hash": "bb", "error": ""}`
		case "/v1/shards/1/hash":
			return 200, `{"shard": 1, "seq": 40, "hash": "` + strings.Repeat("0f", 32) + `"}`
		}
		return 200, `{"ok": true}`
	})
	ctx := context.Background()
	st, err := c.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Shards) != 1 || st.Shards[0].LeaderHTTP != "127.0.0.1:8001" || st.Shards[0].Replicas[0].State != "leader" ||
		st.Nodes[0].Raft != "127.0.0.1:7001" {
		t.Errorf("cluster %+v", st)
	}

	writes := []struct {
		call     func() error
		wantPath string
		wantBody string
	}{
		{func() error { return c.Join(ctx, "n4", "127.0.0.1:7004", "127.0.0.1:8004") },
			"/v1/cluster/join", `{"id": "n4", "raft": "127.0.0.1:7004", "http": "127.0.0.1:8004"}`},
		{func() error { return c.Leave(ctx, "n4") }, "/v1/cluster/leave", `{"id": "n4"}`},
		{func() error { return c.TransferLeader(ctx, 0, "n2") }, "/v1/cluster/transfer-leader", `{"shard": 0, "to": "n2"}`},
		{func() error { return c.TransferLeader(ctx, 3, "") }, "/v1/cluster/transfer-leader", `{"shard": 3}`},
	}
	for _, w := range writes {
		if err := w.call(); err != nil {
			t.Fatal(err)
		}
		r := f.last(t)
		if r.Method != "POST" || r.Path != w.wantPath {
			t.Errorf("request %s %s, want POST %s", r.Method, r.Path, w.wantPath)
		}
		sameJSON(t, r.Body, w.wantBody)
	}

	ss, err := c.ShardState(ctx, 1)
	if err != nil || ss.AppliedIndex != 120 || ss.RaftState != "Leader" || ss.Term != 3 {
		t.Errorf("shard state %+v, %v", ss, err)
	}
	vr, err := c.Verify(ctx, 1)
	if err != nil || !vr.OK || vr.Events != 42 || vr.HeadHash != "aa" {
		t.Errorf("verify %+v, %v", vr, err)
	}
	h, err := c.HashAt(ctx, 1, 40)
	if err != nil || h.String() != strings.Repeat("0f", 32) {
		t.Errorf("hash %v, %v", h, err)
	}
	if r := f.last(t); r.Query.Get("seq") != "40" {
		t.Errorf("hash query %v", r.Query)
	}
}

func TestErrorAnswers(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		body        string
		want        Error
		unavailable bool
		unknown     bool
		notFound    bool
	}{
		{"not found", 404, `{"error": {"code": "transfer_not_found", "message": "transfer t-1 does not exist"}}`,
			Error{Status: 404, Code: "transfer_not_found", Message: "transfer t-1 does not exist", Index: -1}, false, false, true},
		{"bad item", 400, `{"error": {"code": "invalid_request", "message": "transfers[3]: bad amount", "index": 3, "result": "amount_invalid"}}`,
			Error{Status: 400, Code: "invalid_request", Message: "transfers[3]: bad amount", Index: 3, Result: "amount_invalid"}, false, false, false},
		{"first item", 400, `{"error": {"code": "invalid_request", "message": "m", "index": 0}}`,
			Error{Status: 400, Code: "invalid_request", Message: "m", Index: 0}, false, false, false},
		{"not leader", 421, `{"error": {"code": "not_leader", "message": "n2 leads shard 1", "leader_http": "127.0.0.1:8002"}}`,
			Error{Status: 421, Code: "not_leader", Message: "n2 leads shard 1", LeaderHTTP: "127.0.0.1:8002", Index: -1}, false, false, false},
		{"unavailable", 503, `{"error": {"code": "unavailable", "message": "no leader"}}`,
			Error{Status: 503, Code: "unavailable", Message: "no leader", Index: -1}, true, false, false},
		{"outcome unknown", 504, `{"error": {"code": "outcome_unknown", "message": "deadline"}}`,
			Error{Status: 504, Code: "outcome_unknown", Message: "deadline", Index: -1}, false, true, false},
		{"plain text", 502, "Bad Gateway\n",
			Error{Status: 502, Code: "http_502", Message: "Bad Gateway", Index: -1}, false, false, false},
		{"empty 503", 503, "",
			Error{Status: 503, Code: "unavailable", Message: "Service Unavailable", Index: -1}, true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, c := newFake(t, fixed(tt.status, tt.body))
			_, err := c.Transfer(context.Background(), "t-1")
			e, ok := errors.AsType[*Error](err)
			if !ok {
				t.Fatalf("err = %v (%T), want *Error", err, err)
			}
			if *e != tt.want {
				t.Errorf("error %+v, want %+v", *e, tt.want)
			}
			if IsUnavailable(err) != tt.unavailable || IsOutcomeUnknown(err) != tt.unknown || IsNotFound(err) != tt.notFound {
				t.Errorf("unavailable %v unknown %v not found %v", IsUnavailable(err), IsOutcomeUnknown(err), IsNotFound(err))
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	e := &Error{Status: 421, Code: "not_leader", Message: "n2 leads shard 1", LeaderHTTP: "127.0.0.1:8002"}
	if got, want := e.Error(), "not_leader: n2 leads shard 1 (leader 127.0.0.1:8002) (HTTP 421)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestConnectionRefusedIsUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = New(addr).CreateTransfers(context.Background(), []ledger.Transfer{{ID: "t", Debit: "a", Credit: "b", Amount: 1}})
	if err == nil || !IsUnavailable(err) || IsOutcomeUnknown(err) {
		t.Errorf("err = %v: unavailable %v, unknown %v; want unavailable", err, IsUnavailable(err), IsOutcomeUnknown(err))
	}
}

func TestTimeoutAfterSendIsOutcomeUnknown(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		<-release
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	c := New(srv.URL, WithTimeout(100*time.Millisecond))
	_, err := c.CreateTransfers(context.Background(), []ledger.Transfer{{ID: "t", Debit: "a", Credit: "b", Amount: 1}})
	if err == nil || !IsOutcomeUnknown(err) || IsUnavailable(err) {
		t.Errorf("err = %v: unavailable %v, unknown %v; want outcome unknown", err, IsUnavailable(err), IsOutcomeUnknown(err))
	}
}

func TestResetAfterSendIsOutcomeUnknown(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close() // the request arrived; the answer never will
		}
	}))
	t.Cleanup(srv.Close)
	_, err := New(srv.URL).CreateTransfers(context.Background(), []ledger.Transfer{{ID: "t", Debit: "a", Credit: "b", Amount: 1}})
	if err == nil || !IsOutcomeUnknown(err) || IsUnavailable(err) {
		t.Errorf("err = %v: unavailable %v, unknown %v; want outcome unknown", err, IsUnavailable(err), IsOutcomeUnknown(err))
	}
}

func TestTimeoutIsPassedToServer(t *testing.T) {
	tests := []struct {
		client time.Duration
		want   string
	}{
		{0, ""},
		{5 * time.Second, "4.5s"},
		{30 * time.Second, "29s"},
		{2 * time.Minute, "1m0s"},
	}
	for _, tt := range tests {
		f, _ := newFake(t, fixed(200, `{"shards": [], "nodes": []}`))
		c := New(f.srv.URL, WithTimeout(tt.client))
		if _, err := c.Cluster(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := f.last(t).Query.Get("timeout"); got != tt.want {
			t.Errorf("client timeout %v: server timeout %q, want %q", tt.client, got, tt.want)
		}
	}
}

func TestFollowEventsStreams(t *testing.T) {
	n := newStreamNode(t, [][]ledger.Event{chain(0, 3), chain(1, 7)})
	c := New(n.addr())
	var seqs []uint64
	stop := errors.New("stop")
	err := c.FollowEvents(context.Background(), 1, 4, func(e ledger.Event) error {
		seqs = append(seqs, e.Seq)
		if e.Seq == 6 {
			return stop
		}
		return nil
	})
	if err != stop {
		t.Errorf("err = %v, want the callback's error", err)
	}
	if fmt.Sprint(seqs) != "[5 6]" {
		t.Errorf("seqs %v", seqs)
	}

	// Caught up, the stream stays open with progress lines only; the
	// caller's ctx ends it.
	ctx, cancel := context.WithCancel(context.Background())
	seqs = nil
	err = c.FollowEvents(ctx, 0, 0, func(e ledger.Event) error {
		if seqs = append(seqs, e.Seq); e.Seq == 3 {
			time.AfterFunc(50*time.Millisecond, cancel)
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || fmt.Sprint(seqs) != "[1 2 3]" {
		t.Errorf("err = %v, seqs %v", err, seqs)
	}
}

func TestFollowEventsReturnsAnError(t *testing.T) {
	_, c := newFake(t, fixed(404, `{"error": {"code": "shard_not_found", "message": "no shard 9"}}`))
	err := c.FollowEvents(context.Background(), 9, 0, func(ledger.Event) error { return nil })
	if !IsNotFound(err) {
		t.Errorf("err = %v, want the 404", err)
	}
	f, c := newFake(t, fixed(200, ""))
	err = c.FollowEvents(context.Background(), 2, 8, func(ledger.Event) error { return nil })
	if !errors.Is(err, ErrStreamEnded) {
		t.Errorf("err = %v, want ErrStreamEnded", err)
	}
	if q := f.last(t).Query; q.Get("follow") != "true" || q.Get("after") != "8" {
		t.Errorf("query %v", q)
	}
}

func TestStreamIdleIsCutOff(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done() // a node that went silent
	}))
	defer srv.Close()
	c := New(srv.URL)
	start := time.Now()
	err := c.StreamAll(context.Background(), nil, StreamOpts{Follow: true, Idle: 100 * time.Millisecond},
		func(StreamItem) error { return nil })
	if !errors.Is(err, ErrStreamIdle) || time.Since(start) > 2*time.Second {
		t.Errorf("err = %v after %s, want ErrStreamIdle soon", err, time.Since(start))
	}
}

// TestStreamChecksHashes: with CheckHashes, an event whose fields do not
// give its hash ends the stream, in either encoding; without, it passes.
func TestStreamChecksHashes(t *testing.T) {
	var lines []string
	for i, enc := range []uint8{ledger.EncJSON, ledger.EncBinary} {
		e := ledger.Event{Shard: 0, Seq: uint64(i + 1), Type: ledger.TransferPosted, Enc: enc, Time: 1_700_000_000_123_456_789,
			Data:     ledger.Data{Transfer: &ledger.Transfer{ID: "t", Debit: "a", Credit: "b", Amount: 5, Metadata: map[string]string{"k": "v"}}, Currency: "USD"},
			Balances: []ledger.Balance{{Account: "b", Currency: "USD", CreditsPosted: 5, Balance: 5, Available: 5}}}
		e.Seal()
		b, _ := json.Marshal(&e)
		lines = append(lines, string(b))
	}
	for _, tc := range []struct {
		name   string
		body   string
		check  bool
		broken bool
	}{
		{"intact", strings.Join(lines, "\n"), true, false},
		{"changed amount", strings.Replace(strings.Join(lines, "\n"), `"amount":5`, `"amount":6`, 1), true, true},
		{"changed, not checked", strings.Replace(strings.Join(lines, "\n"), `"amount":5`, `"amount":6`, 1), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, c := newFake(t, fixed(200, tc.body+"\n"))
			n := 0
			err := c.StreamAll(context.Background(), nil, StreamOpts{CheckHashes: tc.check}, func(it StreamItem) error {
				if it.Event != nil {
					n++
				}
				return nil
			})
			if tc.broken != errors.Is(err, ErrChain) || (!tc.broken && (err != nil || n != 2)) {
				t.Fatalf("err %v after %d events", err, n)
			}
		})
	}
}
