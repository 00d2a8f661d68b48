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

// fakeLedger is a one-node stand-in for the cluster's HTTP API, deciding
// with the real ledger rules (ledger.State), so the CLI tests see realistic
// results: insufficient funds, repeats, pending posts and voids. It has
// one shard unless made with newFakeCluster, whose shards run cross-shard
// transfers as sagas like the real saga driver does.
type fakeLedger struct {
	mu     sync.Mutex
	shards []*fakeShard
	reqs   []seenReq
	// fail, when set, answers a request instead of the ledger (status, body).
	fail func(r *http.Request) (int, string)
	// mint is added to every balance read: a ledger that creates money.
	mint int64
	// sagaDelay, when set, makes POST /v1/transfers answer a saga
	// in_flight once its destination has credited, and complete it on the
	// source that much later; otherwise a saga finishes before the answer.
	sagaDelay time.Duration
	sagas     sync.WaitGroup // delayed completions
	srv       *httptest.Server
}

// fakeShard is one shard of the fake: its state, records and log.
type fakeShard struct {
	st      *ledger.State
	records map[string]*ledger.Record
	events  []ledger.Event
	index   uint64
}

// seenReq is one request as the fake received it.
type seenReq struct {
	Method, Path, Query, Body string
}

func (s *fakeShard) Record(id string) (*ledger.Record, bool) {
	r, ok := s.records[id]
	if !ok {
		return nil, false
	}
	c := *r
	return &c, true
}

func newFakeLedger(t *testing.T) *fakeLedger { return newFakeCluster(t, 1) }

// newFakeCluster returns a fake with n shards.
func newFakeCluster(t *testing.T, n int) *fakeLedger {
	t.Helper()
	f := &fakeLedger{}
	for i := range n {
		s := &fakeShard{records: map[string]*ledger.Record{}}
		s.st = ledger.NewState(i, n, s)
		f.shards = append(f.shards, s)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/accounts", f.createAccounts)
	mux.HandleFunc("GET /v1/accounts/{id}", f.account)
	mux.HandleFunc("POST /v1/accounts/{id}/close", f.closeAccount)
	mux.HandleFunc("GET /v1/accounts/{id}/history", f.history)
	mux.HandleFunc("POST /v1/transfers", f.createTransfers)
	mux.HandleFunc("GET /v1/transfers/{id}", f.transfer)
	mux.HandleFunc("GET /v1/shards/{shard}/events", f.shardEvents)
	mux.HandleFunc("GET /v1/cluster", f.cluster)
	mux.HandleFunc("GET /v1/sagas", f.listSagas)
	mux.HandleFunc("GET /v1/audit", f.audit)
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
	t.Cleanup(func() {
		f.srv.Close()
		f.sagas.Wait()
	})
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

// execute runs one command on shard sh as one Raft entry would.
func (f *fakeLedger) execute(sh int, c *ledger.Command) []ledger.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.shards[sh]
	s.index++
	s.st.Begin(s.index, ledger.Time(time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC).UnixNano()+int64(s.index)))
	res := s.st.Execute(c)
	ch := s.st.Flush()
	for _, r := range ch.Records {
		c := *r
		s.records[r.Transfer.ID] = &c
	}
	s.events = append(s.events, ch.Events...)
	return res
}

// events returns every shard's events.
func (f *fakeLedger) events() []ledger.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []ledger.Event
	for _, s := range f.shards {
		out = append(out, s.events...)
	}
	return out
}

// split runs one command per shard over the items that shard owns and
// merges the results in the items' order, as a node splits a batch.
func (f *fakeLedger) split(n int, shardOf func(i int) int, cmd func(idx []int) ledger.Command) []ledger.Result {
	parts := map[int][]int{}
	for i := range n {
		sh := shardOf(i)
		parts[sh] = append(parts[sh], i)
	}
	out := make([]ledger.Result, n)
	for sh, idx := range parts {
		c := cmd(idx)
		for j, r := range f.execute(sh, &c) {
			out[idx[j]] = r
		}
	}
	return out
}

// drive runs the sagas among results as the source leader's driver does:
// the destination credits (or rejects), then the source completes (or
// aborts). Without a sagaDelay it waits for the end and updates the
// results as the API does; with one the completion comes later.
func (f *fakeLedger) drive(res []ledger.Result) {
	for i := range res {
		r := &res[i]
		if r.Status != ledger.StatusInFlight {
			continue
		}
		f.mu.Lock()
		rec, ok := f.shards[r.Shard].st.Record(r.ID)
		f.mu.Unlock()
		if !ok || rec.Saga == nil || rec.Saga.Role != ledger.RoleSource || !rec.Open() {
			continue
		}
		src, id := r.Shard, r.ID
		credit := f.execute(rec.Saga.Peer, &ledger.Command{Kind: ledger.CmdSagaCredit,
			Saga: []ledger.SagaStep{{Source: src, Transfer: rec.Transfer, Currency: rec.Saga.Currency}}})[0]
		outcome := ledger.OK
		if credit.Status != ledger.StatusPosted {
			outcome = credit.Result
		}
		resolve := func() ledger.Result {
			return f.execute(src, &ledger.Command{Kind: ledger.CmdSagaResolve,
				Saga: []ledger.SagaStep{{Transfer: ledger.Transfer{ID: id}, Outcome: outcome}}})[0]
		}
		if f.sagaDelay > 0 {
			f.sagas.Add(1)
			time.AfterFunc(f.sagaDelay, func() {
				defer f.sagas.Done()
				resolve()
			})
			continue
		}
		resolve()
		f.mu.Lock()
		rec, _ = f.shards[src].st.Record(id)
		f.mu.Unlock()
		r.Status = rec.Status
		if r.Result == ledger.OK {
			r.Result = rec.Result
		} else if r.Result == ledger.Exists {
			r.Original = rec.Result
		}
	}
}

// shardOf returns the shard of account id.
func (f *fakeLedger) shardOf(id string) int { return ledger.ShardOf(id, len(f.shards)) }

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
	if !decodeStrict(w, r, &in) {
		return
	}
	res := f.split(len(in.Accounts), func(i int) int { return f.shardOf(in.Accounts[i].ID) }, func(idx []int) ledger.Command {
		c := ledger.Command{Kind: ledger.CmdOpenAccounts}
		for _, i := range idx {
			c.Accounts = append(c.Accounts, in.Accounts[i])
		}
		return c
	})
	reply(w, 200, map[string]any{"results": res})
}

func (f *fakeLedger) closeAccount(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	res := f.execute(f.shardOf(id), &ledger.Command{Kind: ledger.CmdCloseAccount, AccountID: id})
	reply(w, 200, res[0])
}

func (f *fakeLedger) createTransfers(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Transfers []ledger.Transfer `json:"transfers"`
	}
	if !decodeStrict(w, r, &in) {
		return
	}
	res := f.split(len(in.Transfers), func(i int) int { return ledger.TransferShard(&in.Transfers[i], len(f.shards)) }, func(idx []int) ledger.Command {
		c := ledger.Command{Kind: ledger.CmdTransfers}
		for _, i := range idx {
			c.Transfers = append(c.Transfers, in.Transfers[i])
		}
		return c
	})
	f.drive(res)
	reply(w, 200, map[string]any{"results": res})
}

func (f *fakeLedger) account(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.shards[f.shardOf(id)].st
	a := st.Accounts[ledger.AccountKey(id, r.URL.Query().Get("currency"))]
	if a == nil {
		replyError(w, 404, "account_not_found", "account "+id+" does not exist")
		return
	}
	reply(w, 200, client.AccountView{ID: a.ID, Currency: a.Currency, AllowNegative: a.AllowNegative,
		Metadata: a.Metadata, Closed: a.Closed, DebitsPosted: a.DebitsPosted, CreditsPosted: a.CreditsPosted,
		DebitsPending: a.DebitsPending, CreditsPending: a.CreditsPending, Balance: a.Balance() + f.mint,
		Available: a.Available(), Seq: st.Seq, CreatedSeq: a.CreatedSeq, CreatedAt: ledger.Time(a.CreatedAt)})
}

func (f *fakeLedger) transfer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	f.mu.Lock()
	defer f.mu.Unlock()
	for sh, s := range f.shards {
		rec, ok := s.st.Record(id)
		if !ok {
			continue
		}
		t := rec.Transfer
		v := client.TransferView{ID: t.ID, Debit: t.Debit, Credit: t.Credit, Amount: t.Amount,
			Status: rec.Status, Result: rec.Result, Shard: sh, Seq: rec.Seq, Time: ledger.Time(rec.Time), Transfer: &t,
			ResolvedBy: rec.ResolvedBy, ResolvedSeq: rec.ResolvedSeq, ResolvedAmount: rec.ResolvedAmount}
		if rec.Saga != nil {
			v.CrossShard, v.Saga = true, &client.SagaState{Saga: *rec.Saga}
		}
		reply(w, 200, v)
		return
	}
	replyError(w, 404, "transfer_not_found", "transfer "+id+" does not exist")
}

// listSagas answers GET /v1/sagas for state in_flight: every shard's open sagas.
func (f *fakeLedger) listSagas(w http.ResponseWriter, r *http.Request) {
	if st := r.URL.Query().Get("state"); st != "" && st != "in_flight" {
		replyError(w, 400, "invalid_request", "the fake lists sagas in flight only")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []client.Saga{}
	for sh, s := range f.shards {
		for _, rec := range s.st.OpenSagas() {
			t := rec.Transfer
			out = append(out, client.Saga{ID: t.ID, Shard: sh, PeerShard: rec.Saga.Peer, Debit: t.Debit, Credit: t.Credit,
				Amount: t.Amount, Currency: rec.Saga.Currency, Status: rec.Status, Result: rec.Result, Step: rec.Saga.Step})
		}
	}
	reply(w, 200, map[string]any{"sagas": out})
}

// audit answers GET /v1/audit from every shard's books, read once (the
// fake does not move while it holds its lock): a consistent cut.
func (f *fakeLedger) audit(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	var books []ledger.ShardBooks
	for sh, s := range f.shards {
		b := ledger.ShardBooks{Shard: sh, Seq: s.st.Seq, Sums: map[string]string{}}
		for cur, sum := range s.st.Sums() {
			b.Sums[cur] = sum.String()
		}
		for _, a := range s.st.Accounts {
			if strings.HasPrefix(a.ID, ledger.ClearingPrefix) {
				b.Clearing = append(b.Clearing, *a)
			}
		}
		books = append(books, b)
	}
	f.mu.Unlock()
	reply(w, 200, ledger.CheckAudit(books, books))
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
	for _, e := range f.shards[f.shardOf(id)].events {
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
	sh, err := strconv.Atoi(r.PathValue("shard"))
	if err != nil || sh < 0 || sh >= len(f.shards) {
		replyError(w, 404, "shard_not_found", "no shard "+r.PathValue("shard"))
		return
	}
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	f.mu.Lock()
	defer f.mu.Unlock()
	page := client.EventPage{Events: []ledger.Event{}}
	for _, e := range f.shards[sh].events {
		if e.Seq > after {
			page.Events = append(page.Events, e)
		}
	}
	reply(w, 200, page)
}

func (f *fakeLedger) cluster(w http.ResponseWriter, r *http.Request) {
	st := client.ClusterStatus{Nodes: []client.Node{{ID: "n1", HTTP: f.addr(), Raft: "127.0.0.1:7001"}}}
	f.mu.Lock()
	for sh, s := range f.shards {
		seq := s.st.Seq
		st.Shards = append(st.Shards, client.ShardInfo{Shard: sh, Leader: "n1", LeaderHTTP: f.addr(), AppliedSeq: seq,
			Replicas: []client.Replica{{Node: "n1", Raft: "127.0.0.1:7001", HTTP: f.addr(), State: "leader", AppliedSeq: seq}}})
	}
	f.mu.Unlock()
	reply(w, 200, st)
}
