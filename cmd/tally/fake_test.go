package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tally/client"
	"tally/ledger"
)

// fakeLedger is a one-node, one-shard stand-in for the cluster's HTTP API,
// deciding with the real ledger rules (ledger.State), so the CLI tests see
// realistic results: insufficient funds, repeats, pending posts and voids.
type fakeLedger struct {
	mu      sync.Mutex
	st      *ledger.State
	records map[string]*ledger.Record
	events  []ledger.Event
	index   uint64
	reqs    []seenReq
	// fail, when set, answers a request instead of the ledger (status, body).
	fail func(r *http.Request) (int, string)
	// mint is added to every balance read: a ledger that creates money.
	mint int64
	srv  *httptest.Server
}

// seenReq is one request as the fake received it.
type seenReq struct {
	Method, Path, Query, Body string
}

func (f *fakeLedger) Record(id string) (*ledger.Record, bool) {
	r, ok := f.records[id]
	if !ok {
		return nil, false
	}
	c := *r
	return &c, true
}

func newFakeLedger(t *testing.T) *fakeLedger {
	t.Helper()
	f := &fakeLedger{records: map[string]*ledger.Record{}}
	f.st = ledger.NewState(0, 1, f)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/accounts", f.createAccounts)
	mux.HandleFunc("GET /v1/accounts/{id}", f.account)
	mux.HandleFunc("POST /v1/accounts/{id}/close", f.closeAccount)
	mux.HandleFunc("GET /v1/accounts/{id}/history", f.history)
	mux.HandleFunc("POST /v1/transfers", f.createTransfers)
	mux.HandleFunc("GET /v1/transfers/{id}", f.transfer)
	mux.HandleFunc("GET /v1/shards/{shard}/events", f.shardEvents)
	mux.HandleFunc("GET /v1/cluster", f.cluster)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		f.mu.Lock()
		f.reqs = append(f.reqs, seenReq{r.Method, r.URL.Path, r.URL.RawQuery, string(body)})
		fail := f.fail
		f.mu.Unlock()
		if fail != nil {
			if status, body := fail(r); status != 0 {
				w.WriteHeader(status)
				io.WriteString(w, body)
				return
			}
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeLedger) addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

// requests returns how many requests reached the fake.
func (f *fakeLedger) requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

// last returns the last request whose method and path match.
func (f *fakeLedger) last(t *testing.T, method, path string) seenReq {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range slices.Backward(f.reqs) {
		if r.Method == method && r.Path == path {
			return r
		}
	}
	t.Fatalf("no %s %s reached the fake", method, path)
	return seenReq{}
}

// execute runs one command as one Raft entry would.
func (f *fakeLedger) execute(c *ledger.Command) []ledger.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	f.st.Begin(f.index, ledger.Time(time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC).UnixNano()+int64(f.index)))
	res := f.st.Execute(c)
	ch := f.st.Flush()
	for _, r := range ch.Records {
		c := *r
		f.records[r.Transfer.ID] = &c
	}
	f.events = append(f.events, ch.Events...)
	return res
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func replyError(w http.ResponseWriter, status int, code, msg string) {
	reply(w, status, map[string]any{"error": map[string]any{"code": code, "message": msg}})
}

// decodeStrict decodes a body as the API does: unknown fields are errors.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		replyError(w, 400, "invalid_request", err.Error())
		return false
	}
	return true
}

func (f *fakeLedger) createAccounts(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Accounts []ledger.Account `json:"accounts"`
	}
	if decodeStrict(w, r, &in) {
		reply(w, 200, map[string]any{"results": f.execute(&ledger.Command{Kind: ledger.CmdOpenAccounts, Accounts: in.Accounts})})
	}
}

func (f *fakeLedger) closeAccount(w http.ResponseWriter, r *http.Request) {
	res := f.execute(&ledger.Command{Kind: ledger.CmdCloseAccount, AccountID: r.PathValue("id")})
	reply(w, 200, res[0])
}

func (f *fakeLedger) createTransfers(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Transfers []ledger.Transfer `json:"transfers"`
	}
	if decodeStrict(w, r, &in) {
		reply(w, 200, map[string]any{"results": f.execute(&ledger.Command{Kind: ledger.CmdTransfers, Transfers: in.Transfers})})
	}
}

func (f *fakeLedger) account(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.st.Accounts[ledger.AccountKey(id, r.URL.Query().Get("currency"))]
	if a == nil {
		replyError(w, 404, "account_not_found", "account "+id+" does not exist")
		return
	}
	reply(w, 200, client.AccountView{ID: a.ID, Currency: a.Currency, AllowNegative: a.AllowNegative,
		Metadata: a.Metadata, Closed: a.Closed, DebitsPosted: a.DebitsPosted, CreditsPosted: a.CreditsPosted,
		DebitsPending: a.DebitsPending, CreditsPending: a.CreditsPending, Balance: a.Balance() + f.mint,
		Available: a.Available(), Seq: f.st.Seq, CreatedSeq: a.CreatedSeq, CreatedAt: ledger.Time(a.CreatedAt)})
}

func (f *fakeLedger) transfer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	f.mu.Lock()
	defer f.mu.Unlock()
	rec, ok := f.st.Record(id)
	if !ok {
		replyError(w, 404, "transfer_not_found", "transfer "+id+" does not exist")
		return
	}
	t := rec.Transfer
	reply(w, 200, client.TransferView{ID: t.ID, Debit: t.Debit, Credit: t.Credit, Amount: t.Amount,
		Status: rec.Status, Result: rec.Result, Seq: rec.Seq, Time: ledger.Time(rec.Time), Transfer: &t,
		ResolvedBy: rec.ResolvedBy, ResolvedSeq: rec.ResolvedSeq, ResolvedAmount: rec.ResolvedAmount})
}

func (f *fakeLedger) history(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit == 0 {
		limit = 100
	}
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	f.mu.Lock()
	defer f.mu.Unlock()
	page := client.EventPage{Events: []ledger.Event{}}
	for _, e := range f.events {
		if e.Seq <= after || !slices.ContainsFunc(e.Balances, func(b ledger.Balance) bool { return b.Account == id }) {
			continue
		}
		if len(page.Events) == limit {
			page.Next = fmt.Sprint(page.Events[limit-1].Seq)
			break
		}
		page.Events = append(page.Events, e)
	}
	reply(w, 200, page)
}

func (f *fakeLedger) shardEvents(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("shard") != "0" {
		replyError(w, 404, "shard_not_found", "no shard "+r.PathValue("shard"))
		return
	}
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	f.mu.Lock()
	defer f.mu.Unlock()
	page := client.EventPage{Events: []ledger.Event{}}
	for _, e := range f.events {
		if e.Seq > after {
			page.Events = append(page.Events, e)
		}
	}
	reply(w, 200, page)
}

func (f *fakeLedger) cluster(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	seq := f.st.Seq
	f.mu.Unlock()
	reply(w, 200, client.ClusterStatus{
		Shards: []client.ShardInfo{{Shard: 0, Leader: "n1", LeaderHTTP: f.addr(), AppliedSeq: seq,
			Replicas: []client.Replica{{Node: "n1", Raft: "127.0.0.1:7001", HTTP: f.addr(), State: "leader", AppliedSeq: seq}}}},
		Nodes: []client.Node{{ID: "n1", HTTP: f.addr(), Raft: "127.0.0.1:7001"}},
	})
}
