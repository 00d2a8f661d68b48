package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// Placement used by the tests below, with 4 shards: alice, carol and
// every id tagged {alice} live on shard 3; bob lives on shard 2.
const (
	homeShard  = 3
	otherShard = 2
)

// badCase is a request that must be refused at the edge.
type badCase struct {
	name   string
	method string // POST when empty
	path   string
	body   string
	status int
	code   string
	index  int    // the item at fault, -1 when the request as a whole is
	result string // the item's result code, "" when none is expected
}

// tr renders one transfer object with extra raw JSON fields appended.
func tr(id, debit, credit string, amount any, extra ...string) string {
	s := fmt.Sprintf(`{"id": %q, "debit": %q, "credit": %q, "amount": %v`, id, debit, credit, amount)
	for _, e := range extra {
		s += ", " + e
	}
	return s + "}"
}

// trs wraps transfer objects into a request body.
func trs(items ...string) string { return `{"transfers": [` + strings.Join(items, ", ") + `]}` }

// acs wraps account objects into a request body.
func acs(items ...string) string { return `{"accounts": [` + strings.Join(items, ", ") + `]}` }

func ac(id, cur string, extra ...string) string {
	s := fmt.Sprintf(`{"id": %q, "currency": %q`, id, cur)
	for _, e := range extra {
		s += ", " + e
	}
	return s + "}"
}

// bigMeta returns a metadata object with n keys of about size bytes in all.
func bigMeta(n, size int) string {
	m := map[string]string{}
	for i := 0; i < n; i++ {
		m[fmt.Sprintf("k%02d", i)] = strings.Repeat("v", max(0, size/n-3))
	}
	b, _ := json.Marshal(m)
	return `"metadata": ` + string(b)
}

func manyTransfers(n int) string {
	items := make([]string, n)
	for i := range items {
		items[i] = tr(fmt.Sprintf("many-%d", i), "alice", "carol", 1)
	}
	return trs(items...)
}

func manyAccounts(n int) string {
	items := make([]string, n)
	for i := range items {
		items[i] = ac(fmt.Sprintf("many-%d", i), "USD")
	}
	return acs(items...)
}

func badTransferCases() []badCase {
	ok := tr("ok-1", "alice", "carol", 1)
	long := strings.Repeat("x", 65)
	const T = "/v1/transfers"
	bad := http.StatusBadRequest
	return []badCase{
		{"malformed", "", T, `{"transfers": [`, bad, "invalid_request", -1, ""},
		{"not JSON", "", T, `transfers=1`, bad, "invalid_request", -1, ""},
		{"empty body", "", T, ``, bad, "invalid_request", -1, ""},
		{"whitespace body", "", T, "  \n ", bad, "invalid_request", -1, ""},
		{"null", "", T, `null`, bad, "invalid_request", -1, ""},
		{"array body", "", T, `[` + ok + `]`, bad, "invalid_request", -1, ""},
		{"string body", "", T, `"transfers"`, bad, "invalid_request", -1, ""},
		{"unknown top field", "", T, `{"transfers": [` + ok + `], "dry_run": true}`, bad, "invalid_request", -1, ""},
		{"unknown item field", "", T, trs(ok, tr("t-2", "alice", "carol", 1, `"colour": "red"`)), bad, "invalid_request", 1, "invalid_request"},
		{"trailing object", "", T, trs(ok) + `{}`, bad, "invalid_request", -1, ""},
		{"trailing garbage", "", T, trs(ok) + ` x`, bad, "invalid_request", -1, ""},
		{"trailing second body", "", T, trs(ok) + trs(ok), bad, "invalid_request", -1, ""},
		{"transfers is object", "", T, `{"transfers": ` + ok + `}`, bad, "invalid_request", -1, ""},
		{"transfers is string", "", T, `{"transfers": "all"}`, bad, "invalid_request", -1, ""},
		{"id is number", "", T, trs(ok, `{"id": 7, "debit": "alice", "credit": "carol", "amount": 1}`), bad, "invalid_request", 1, ""},
		{"amount is string", "", T, trs(ok, tr("t-2", "alice", "carol", `"5"`)), bad, "invalid_request", 1, "amount_invalid"},
		{"amount is fraction", "", T, trs(tr("t-1", "alice", "carol", 1.5)), bad, "invalid_request", 0, "amount_invalid"},
		{"pending is string", "", T, trs(tr("t-1", "alice", "carol", 1, `"pending": "yes"`)), bad, "invalid_request", 0, ""},
		{"metadata value number", "", T, trs(tr("t-1", "alice", "carol", 1, `"metadata": {"a": 1}`)), bad, "invalid_request", 0, ""},
		{"item is array", "", T, trs(ok, `[1]`), bad, "invalid_request", 1, ""},
		{"empty id", "", T, trs(tr("", "alice", "carol", 1)), bad, "invalid_request", 0, "invalid_id"},
		{"id too long", "", T, trs(ok, tr(long, "alice", "carol", 1)), bad, "invalid_request", 1, "invalid_id"},
		{"id 64 bytes but bad debit", "", T, trs(tr(long[:64], "a b", "carol", 1)), bad, "invalid_request", 0, "invalid_id"},
		{"id with space", "", T, trs(tr("t 1", "alice", "carol", 1)), bad, "invalid_request", 0, "invalid_id"},
		{"id with slash", "", T, trs(tr("t/1", "alice", "carol", 1)), bad, "invalid_request", 0, "invalid_id"},
		{"id not ascii", "", T, trs(tr("té", "alice", "carol", 1)), bad, "invalid_request", 0, "invalid_id"},
		{"id reserved", "", T, trs(tr("@t", "alice", "carol", 1)), bad, "invalid_request", 0, "invalid_id"},
		{"debit reserved", "", T, trs(tr("t-1", "@x", "carol", 1)), bad, "invalid_request", 0, "invalid_id"},
		{"credit clearing", "", T, trs(tr("t-1", "alice", "@clearing:2", 1)), bad, "invalid_request", 0, "invalid_id"},
		{"debit empty", "", T, trs(tr("t-1", "", "carol", 1)), bad, "invalid_request", 0, "invalid_id"},
		{"credit too long", "", T, trs(tr("t-1", "alice", long, 1)), bad, "invalid_request", 0, "invalid_id"},
		{"same accounts", "", T, trs(tr("t-1", "alice", "alice", 1)), bad, "invalid_request", 0, "accounts_must_be_different"},
		{"world to world", "", T, trs(tr("t-1", "@world", "@world", 1)), bad, "invalid_request", 0, "accounts_must_be_different"},
		{"amount zero", "", T, trs(ok, tr("t-1", "alice", "carol", 0)), bad, "invalid_request", 1, "amount_invalid"},
		{"amount missing", "", T, trs(`{"id": "t-1", "debit": "alice", "credit": "carol"}`), bad, "invalid_request", 0, "amount_invalid"},
		{"amount negative", "", T, trs(tr("t-1", "alice", "carol", -5)), bad, "invalid_request", 0, "amount_invalid"},
		{"amount min int64", "", T, trs(tr("t-1", "alice", "carol", "-9223372036854775808")), bad, "invalid_request", 0, "amount_invalid"},
		{"amount 1e30", "", T, trs(ok, tr("t-1", "alice", "carol", "1e30")), bad, "invalid_request", 1, "amount_invalid"},
		{"amount 2^63", "", T, trs(tr("t-1", "alice", "carol", "9223372036854775808")), bad, "invalid_request", 0, "amount_invalid"},
		{"amount huge", "", T, trs(tr("t-1", "alice", "carol", strings.Repeat("9", 400))), bad, "invalid_request", 0, "amount_invalid"},
		{"post amount negative", "", T, trs(tr("t-1", "alice", "carol", -1, `"post_pending_id": "p-1"`)), bad, "invalid_request", 0, "amount_invalid"},
		{"reference too long", "", T, trs(tr("t-1", "alice", "carol", 1, `"reference": "`+strings.Repeat("r", 257)+`"`)), bad, "invalid_request", 0, "limit_exceeded"},
		{"metadata too many keys", "", T, trs(tr("t-1", "alice", "carol", 1, bigMeta(17, 100))), bad, "invalid_request", 0, "limit_exceeded"},
		{"metadata too large", "", T, trs(tr("t-1", "alice", "carol", 1, bigMeta(4, 1100))), bad, "invalid_request", 0, "limit_exceeded"},
		{"metadata empty key", "", T, trs(tr("t-1", "alice", "carol", 1, `"metadata": {"": "x"}`)), bad, "invalid_request", 0, "limit_exceeded"},
		{"post and void", "", T, trs(tr("t-1", "alice", "carol", 1, `"post_pending_id": "p-1"`, `"void_pending_id": "p-1"`)), bad, "invalid_request", 0, "invalid_request"},
		{"post of bad id", "", T, trs(tr("t-1", "alice", "carol", 1, `"post_pending_id": "@p"`)), bad, "invalid_request", 0, "invalid_id"},
		{"pending post", "", T, trs(tr("t-1", "alice", "carol", 1, `"post_pending_id": "p-1"`, `"pending": true`)), bad, "invalid_request", 0, "invalid_request"},
		{"timeout without pending", "", T, trs(tr("t-1", "alice", "carol", 1, `"timeout_seconds": 30`)), bad, "invalid_request", 0, "invalid_request"},
		{"timeout negative", "", T, trs(tr("t-1", "alice", "carol", 1, `"pending": true`, `"timeout_seconds": -1`)), bad, "invalid_request", 0, "invalid_request"},
		{"timeout too long", "", T, trs(tr("t-1", "alice", "carol", 1, `"pending": true`, `"timeout_seconds": 9000000000`)), bad, "invalid_request", 0, "invalid_request"},
		{"chain left open", "", T, trs(ok, tr("t-2", "alice", "carol", 1, `"linked": true`)), bad, "invalid_request", 1, "invalid_request"},
		{"chain across shards", "", T, trs(tr("t-1", "alice", "carol", 1, `"linked": true`), tr("t-2", "bob", "bob{x}", 1)), bad, "invalid_request", 1, "cross_shard_not_supported"}, // the member off the chain's shard
		{"bad item after good ones", "", T, trs(ok, tr("t-2", "alice", "carol", 2), tr("t-3", "bob", "alice", 0)), bad, "invalid_request", 2, "amount_invalid"},
		{"empty batch", "", T, `{"transfers": []}`, bad, "invalid_request", -1, ""},
		{"missing batch", "", T, `{}`, bad, "invalid_request", -1, ""},
		{"batch of 8191", "", T, manyTransfers(8191), bad, "invalid_request", -1, ""},
		{"body over 4 MiB", "", T, trs(tr("t-1", "alice", "carol", 1, `"reference": "`+strings.Repeat("r", 4<<20)+`"`)), http.StatusRequestEntityTooLarge, "request_too_large", -1, ""},
		{"body over 4 MiB of spaces", "", T, trs(ok) + strings.Repeat(" ", 4<<20), http.StatusRequestEntityTooLarge, "request_too_large", -1, ""},
		{"bad timeout param", "", T + "?timeout=soon", trs(ok), bad, "invalid_request", -1, ""},
		{"zero timeout param", "", T + "?timeout=0s", trs(ok), bad, "invalid_request", -1, ""},
		{"negative timeout param", "", T + "?timeout=-1s", trs(ok), bad, "invalid_request", -1, ""},
		{"timeout param too long", "", T + "?timeout=61s", trs(ok), bad, "invalid_request", -1, ""},
	}
}

func badAccountCases() []badCase {
	const A = "/v1/accounts"
	bad := http.StatusBadRequest
	ok := ac("new-1", "USD")
	return []badCase{
		{"malformed", "", A, `{"accounts": [{"id": "x"`, bad, "invalid_request", -1, ""},
		{"empty body", "", A, ``, bad, "invalid_request", -1, ""},
		{"unknown top field", "", A, `{"accounts": [` + ok + `], "upsert": true}`, bad, "invalid_request", -1, ""},
		{"unknown item field", "", A, acs(ok, ac("new-2", "USD", `"owner": "me"`)), bad, "invalid_request", 1, "invalid_request"},
		{"balance set by client", "", A, acs(ac("new-2", "USD", `"credits_posted": 100`)), bad, "invalid_request", 0, "invalid_request"},
		{"closed set by client", "", A, acs(ac("new-2", "USD", `"closed": true`)), bad, "invalid_request", 0, "invalid_request"},
		{"trailing data", "", A, acs(ok) + `]`, bad, "invalid_request", -1, ""},
		{"currency is number", "", A, acs(`{"id": "new-2", "currency": 840}`), bad, "invalid_request", 0, ""},
		{"allow_negative is string", "", A, acs(ac("new-2", "USD", `"allow_negative": "true"`)), bad, "invalid_request", 0, ""},
		{"empty id", "", A, acs(ac("", "USD")), bad, "invalid_request", 0, "invalid_id"},
		{"id too long", "", A, acs(ok, ac(strings.Repeat("a", 65), "USD")), bad, "invalid_request", 1, "invalid_id"},
		{"id with space", "", A, acs(ac("new 2", "USD")), bad, "invalid_request", 0, "invalid_id"},
		{"id reserved", "", A, acs(ac("@bank", "USD")), bad, "invalid_request", 0, "invalid_id"},
		{"id world", "", A, acs(ac("@world", "USD")), bad, "invalid_request", 0, "invalid_id"},
		{"currency empty", "", A, acs(ac("new-2", "")), bad, "invalid_request", 0, "currency_invalid"},
		{"currency lowercase", "", A, acs(ac("new-2", "usd")), bad, "invalid_request", 0, "currency_invalid"},
		{"currency too long", "", A, acs(ac("new-2", "ABCDEFGHIJKLM")), bad, "invalid_request", 0, "currency_invalid"},
		{"currency with dash", "", A, acs(ok, ac("new-2", "US-D")), bad, "invalid_request", 1, "currency_invalid"},
		{"metadata too many keys", "", A, acs(ac("new-2", "USD", bigMeta(17, 100))), bad, "invalid_request", 0, "metadata_invalid"},
		{"metadata too large", "", A, acs(ac("new-2", "USD", bigMeta(2, 1100))), bad, "invalid_request", 0, "metadata_invalid"},
		{"empty batch", "", A, `{"accounts": []}`, bad, "invalid_request", -1, ""},
		{"batch of 8191", "", A, manyAccounts(8191), bad, "invalid_request", -1, ""},
		{"body over 4 MiB", "", A, acs(ac("new-2", "USD", `"metadata": {"k": "`+strings.Repeat("v", 4<<20)+`"}`)), http.StatusRequestEntityTooLarge, "request_too_large", -1, ""},
	}
}

func badOtherCases() []badCase {
	bad := http.StatusBadRequest
	nf := http.StatusNotFound
	return []badCase{
		{"unknown route", "GET", "/v1/nothing", "", nf, "not_found", -1, ""},
		{"unknown version", "POST", "/v2/transfers", trs(tr("t-1", "alice", "carol", 1)), nf, "not_found", -1, ""},
		{"root", "GET", "/", "", nf, "not_found", -1, ""},
		{"wrong method on transfers", "GET", "/v1/transfers", "", http.StatusMethodNotAllowed, "method_not_allowed", -1, ""},
		{"wrong method on account", "DELETE", "/v1/accounts/alice", "", http.StatusMethodNotAllowed, "method_not_allowed", -1, ""},
		{"wrong method on close", "GET", "/v1/accounts/alice/close", "", http.StatusMethodNotAllowed, "method_not_allowed", -1, ""},
		{"shard out of range", "GET", "/v1/shards/4/events", "", nf, "shard_not_found", -1, ""},
		{"shard negative", "GET", "/v1/shards/-1/state", "", nf, "shard_not_found", -1, ""},
		{"shard not a number", "GET", "/v1/shards/x/verify", "", nf, "shard_not_found", -1, ""},
		{"shard huge", "GET", "/v1/shards/99999999999999999999/hash?seq=1", "", nf, "shard_not_found", -1, ""},
		{"events bad after", "GET", "/v1/shards/0/events?after=-1", "", bad, "invalid_request", -1, ""},
		{"events bad limit", "GET", "/v1/shards/0/events?limit=ten", "", bad, "invalid_request", -1, ""},
		{"events bad timeout", "GET", "/v1/shards/0/events?timeout=1", "", bad, "invalid_request", -1, ""},
		{"hash of a missing seq", "GET", "/v1/shards/0/hash?seq=999999", "", nf, "not_found", -1, ""},
		{"account bad id", "GET", "/v1/accounts/a%20b", "", bad, "invalid_request", -1, ""},
		{"account unknown", "GET", "/v1/accounts/ghost", "", nf, "account_not_found", -1, ""},
		{"account bad consistency", "GET", "/v1/accounts/alice?consistency=eventual", "", bad, "invalid_request", -1, ""},
		{"account bad min_seq", "GET", "/v1/accounts/alice?min_seq=x", "", bad, "invalid_request", -1, ""},
		{"account bad at_seq", "GET", "/v1/accounts/alice?at_seq=-2", "", bad, "invalid_request", -1, ""},
		{"account at a future seq", "GET", "/v1/accounts/alice?at_seq=999999", "", bad, "invalid_request", -1, ""},
		{"world without currency", "GET", "/v1/accounts/@world", "", bad, "invalid_request", -1, ""},
		{"world bad shard", "GET", "/v1/accounts/@world?currency=USD&shard=9", "", bad, "invalid_request", -1, ""},
		{"history bad order", "GET", "/v1/accounts/alice/history?order=sideways", "", bad, "invalid_request", -1, ""},
		{"history bad after", "GET", "/v1/accounts/alice/history?after=x", "", bad, "invalid_request", -1, ""},
		{"transfer unknown", "GET", "/v1/transfers/nope", "", nf, "transfer_not_found", -1, ""},
		{"transfer bad id", "GET", "/v1/transfers/a%20b", "", bad, "invalid_request", -1, ""},
		{"transfer bad shard", "GET", "/v1/transfers/nope?shard=9", "", bad, "invalid_request", -1, ""},
		{"close unknown", "POST", "/v1/accounts/ghost/close", "", nf, "account_not_found", -1, ""},
		{"close world", "POST", "/v1/accounts/@world/close", "", bad, "invalid_request", -1, ""},
		{"close bad id", "POST", "/v1/accounts/a%20b/close", "", bad, "invalid_request", -1, ""},
		{"join malformed", "POST", "/v1/cluster/join", `{"id": `, bad, "invalid_request", -1, ""},
		{"join missing fields", "POST", "/v1/cluster/join", `{"id": "n9"}`, bad, "invalid_request", -1, ""},
		{"join unknown field", "POST", "/v1/cluster/join", `{"id": "n9", "raft": "r", "http": "h", "voter": false}`, bad, "invalid_request", -1, ""},
		{"join bad shard", "POST", "/v1/cluster/join", `{"id": "n9", "raft": "r", "http": "h", "shard": 7}`, nf, "shard_not_found", -1, ""},
		{"leave bad id", "POST", "/v1/cluster/leave", `{"id": ""}`, bad, "invalid_request", -1, ""},
		{"transfer-leader without shard", "POST", "/v1/cluster/transfer-leader", `{"to": "n2"}`, bad, "invalid_request", -1, ""},
		{"transfer-leader bad shard", "POST", "/v1/cluster/transfer-leader", `{"shard": -1}`, nf, "shard_not_found", -1, ""},
		{"transfer-leader to a stranger", "POST", "/v1/cluster/transfer-leader", `{"shard": 0, "to": "n9"}`, bad, "invalid_request", -1, ""},
		{"transfer-leader with no other voter", "POST", "/v1/cluster/transfer-leader", `{"shard": 0}`, bad, "invalid_request", -1, ""},
	}
}

// TestBadInput sends requests that must be refused at the edge and checks
// each answer's status and error, and that no shard's event log changed.
func TestBadInput(t *testing.T) {
	n := startCluster1(t)
	n.accounts(t, "alice", "USD", "carol", "USD", "bob", "USD")
	if r := n.transfer(t, map[string]any{"id": "fund", "debit": "@world", "credit": "alice", "amount": 1000}); r.Result != "ok" {
		t.Fatalf("fund alice: %+v", r)
	}
	groups := map[string][]badCase{"transfers": badTransferCases(), "accounts": badAccountCases(), "other": badOtherCases()}
	for _, g := range []string{"transfers", "accounts", "other"} {
		t.Run(g, func(t *testing.T) {
			for _, c := range groups[g] {
				t.Run(c.name, func(t *testing.T) { checkBad(t, n, c) })
			}
		})
	}
	for _, id := range []string{"alice", "carol"} {
		if a := n.account(t, id); a.DebitsPosted != 0 || a.DebitsPending != 0 || a.CreditsPending != 0 ||
			a.CreditsPosted != map[string]int64{"alice": 1000, "carol": 0}[id] {
			t.Errorf("account %s changed: %+v", id, a)
		}
	}
}

func checkBad(t *testing.T, n *node, c badCase) {
	t.Helper()
	before := n.logLengths(t)
	method := c.method
	if method == "" {
		method = http.MethodPost
	}
	var body []byte
	if c.body != "" || method == http.MethodPost {
		body = []byte(c.body)
	}
	a := do(t, method, n.url()+c.path, body)
	if a.status != c.status {
		t.Errorf("status %d, want %d: %.300s", a.status, c.status, a.body)
	}
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want JSON", ct)
	}
	code, e := a.errorCode(t)
	if code != c.code {
		t.Errorf("error.code %q, want %q: %.300s", code, c.code, a.body)
	}
	if msg, _ := e["message"].(string); msg == "" {
		t.Errorf("error.message is empty: %.300s", a.body)
	}
	idx, hasIdx := e["index"].(float64)
	switch {
	case c.index < 0 && hasIdx:
		t.Errorf("error.index %v, want none: %.300s", idx, a.body)
	case c.index >= 0 && (!hasIdx || int(idx) != c.index):
		t.Errorf("error.index %v (present %v), want %d: %.300s", idx, hasIdx, c.index, a.body)
	}
	if res, _ := e["result"].(string); c.result != "" && res != c.result {
		t.Errorf("error.result %q, want %q: %.300s", res, c.result, a.body)
	}
	if after := n.logLengths(t); !slices.Equal(before, after) {
		t.Errorf("event logs changed from %v to %v", before, after)
	}
}

// TestBusinessRejections checks that rejections the ledger decides are
// 200 answers with a result code and status rejected, recorded as one
// TransferRejected event, with no money moved.
func TestBusinessRejections(t *testing.T) {
	n := startCluster1(t)
	n.accounts(t, "alice", "USD", "carol", "USD", "eur{alice}", "EUR", "bob", "USD")
	if r := n.transfer(t, map[string]any{"id": "fund", "debit": "@world", "credit": "alice", "amount": 1000}); r.Result != "ok" {
		t.Fatalf("fund alice: %+v", r)
	}
	balances := func() map[string]account {
		m := map[string]account{}
		for _, id := range []string{"alice", "carol", "eur{alice}", "bob"} {
			m[id] = n.account(t, id)
		}
		return m
	}
	start := balances()
	cases := []struct {
		name string
		t    map[string]any
		code string
	}{
		{"currency mismatch", map[string]any{"id": "r-1", "debit": "alice", "credit": "eur{alice}", "amount": 10}, "currency_mismatch"},
		{"insufficient funds", map[string]any{"id": "r-2", "debit": "alice", "credit": "carol", "amount": 1001}, "insufficient_funds"},
		{"insufficient funds with a hold", map[string]any{"id": "r-3", "debit": "carol", "credit": "alice", "amount": 1, "pending": true}, "insufficient_funds"},
		{"unknown credit", map[string]any{"id": "r-4", "debit": "alice", "credit": "ghost{alice}", "amount": 10}, "credit_account_not_found"},
		{"unknown debit", map[string]any{"id": "r-5", "debit": "ghost{alice}", "credit": "alice", "amount": 10}, "debit_account_not_found"},
		{"deposit to unknown", map[string]any{"id": "r-6", "debit": "@world", "credit": "ghost", "amount": 10}, "credit_account_not_found"},
		{"withdrawal over balance", map[string]any{"id": "r-7", "debit": "alice", "credit": "@world", "amount": 5000}, "insufficient_funds"},
		{"post of unknown pending", map[string]any{"id": "r-8", "debit": "alice", "credit": "carol", "amount": 0, "post_pending_id": "nope"}, "pending_not_found"},
		{"pending across shards", map[string]any{"id": "r-9", "debit": "alice", "credit": "bob", "amount": 10, "pending": true}, "cross_shard_not_supported"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := n.logLengths(t)
			r := n.transfer(t, c.t)
			if r.Result != c.code || r.Status != "rejected" || r.Seq == 0 {
				t.Errorf("got %+v, want result %s, status rejected and a seq", r, c.code)
			}
			after := n.logLengths(t)
			sum := func(l []int) (s int) {
				for _, x := range l {
					s += x
				}
				return s
			}
			if sum(after) != sum(before)+1 || after[r.Shard] != before[r.Shard]+1 {
				t.Errorf("event logs went from %v to %v, want one more event on shard %d", before, after, r.Shard)
			}
			ev := lastEvent(t, n, r.Shard)
			if ev.Type != "TransferRejected" || ev.Seq != r.Seq {
				t.Errorf("last event of shard %d is %s at %d, want TransferRejected at %d", r.Shard, ev.Type, ev.Seq, r.Seq)
			}
		})
	}
	if got := balances(); !equalMaps(got, start) {
		t.Errorf("balances changed:\n got %+v\nwant %+v", got, start)
	}
	// A batch mixing an ok transfer and a rejection applies the ok one:
	// items of a batch are independent unless linked.
	a := n.post(t, "/v1/transfers", trs(tr("m-1", "alice", "carol", 10), tr("m-2", "carol", "alice", 100)))
	rs := results(t, a, "mixed batch")
	if len(rs) != 2 || rs[0].Result != "ok" || rs[1].Result != "insufficient_funds" || rs[1].Status != "rejected" {
		t.Errorf("mixed batch: %+v", rs)
	}
	// A linked chain with a failing member applies none of it.
	a = n.post(t, "/v1/transfers", trs(tr("c-1", "alice", "carol", 10, `"linked": true`), tr("c-2", "carol", "alice", 1000)))
	rs = results(t, a, "failed chain")
	if len(rs) != 2 || rs[0].Result != "linked_event_failed" || rs[1].Result != "insufficient_funds" {
		t.Errorf("failed chain: %+v", rs)
	}
	if c := n.account(t, "carol"); c.CreditsPosted != 10 || c.DebitsPosted != 0 {
		t.Errorf("carol after the failed chain: %+v", c)
	}
}

func equalMaps(a, b map[string]account) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

type eventView struct {
	Seq  uint64 `json:"seq"`
	Type string `json:"type"`
}

// lastEvent returns the newest event of shard i on n.
func lastEvent(t *testing.T, n *node, i int) eventView {
	t.Helper()
	l := n.logLengths(t)[i]
	a := mustOK(t, n.get(t, fmt.Sprintf("/v1/shards/%d/events?after=%d", i, l-1)), "last event")
	var page struct {
		Events []eventView `json:"events"`
	}
	if err := json.NewDecoder(bytes.NewReader(a.body)).Decode(&page); err != nil || len(page.Events) != 1 {
		t.Fatalf("last event of shard %d: %v: %.300s", i, err, a.body)
	}
	return page.Events[0]
}
