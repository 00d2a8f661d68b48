package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// Fuzz targets for the edge decoders. Each worker starts one in-process
// node and POSTs every input straight to its handler. Whatever the body,
// the answer must not be a 5xx other than 503 or 504 (a 500 is what the
// server makes of a panic), a 4xx must be a JSON error with a code, and a
// 200 must hold one result per item.

func FuzzCreateTransfers(f *testing.F) {
	n := startCluster1(f)
	n.accounts(f, "alice", "USD", "carol", "USD", "eur{alice}", "EUR", "bob", "USD")
	n.transfer(f, map[string]any{"id": "seed-fund", "debit": "@world", "credit": "alice", "amount": 1000})
	for _, s := range []string{
		trs(tr("t-1", "alice", "carol", 10)),
		trs(tr("t-2", "@world", "carol", 10), tr("t-3", "carol", "@world", 5)),
		trs(tr("p-1", "alice", "carol", 10, `"pending": true`, `"timeout_seconds": 60`), tr("p-2", "alice", "carol", 0, `"post_pending_id": "p-1"`)),
		trs(tr("v-1", "alice", "carol", 1, `"void_pending_id": "p-1"`)),
		trs(tr("l-1", "alice", "carol", 1, `"linked": true`), tr("l-2", "carol", "alice", 1)),
		trs(tr("m-1", "alice", "carol", 1, `"reference": "r"`, `"metadata": {"k": "v"}`)),
		trs(tr("x-1", "alice", "bob", 1)),
		trs(tr("c-1", "alice", "eur{alice}", 1)),
		trs(tr("o-1", "alice", "carol", "9223372036854775807")),
		trs(tr("o-2", "alice", "carol", "1e30")),
		`{"transfers": [{"id": "\ud800", "debit": "alice", "credit": "carol", "amount": 1}]}`,
		`{"transfers": [{"id": "u-1", "debit": "alice", "credit": "carol", "amount": 1, "reference": "\xff\xfe"}]}`,
		`{"transfers": null}`, `{"transfers": [null]}`, `[]`, `{`, ``, `{"transfers": [{}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkFuzzAnswer(t, n, "/v1/transfers", body, "transfers")
	})
}

func FuzzCreateAccounts(f *testing.F) {
	n := startCluster1(f)
	for _, s := range []string{
		acs(ac("alice", "USD")),
		acs(ac("alice", "USD", `"allow_negative": true`, `"metadata": {"kyc": "ok"}`), ac("bob{x}", "EUR")),
		acs(ac("@bank", "USD")),
		acs(ac("a", "usd")),
		acs(ac("a", "USD", `"metadata": {"": ""}`)),
		`{"accounts": [{"id": "\ud800", "currency": "USD"}]}`,
		`{"accounts": [{"id": "m", "currency": "USD", "metadata": {"\xff": "\xfe"}}]}`,
		`{"accounts": null}`, `{"accounts": [null]}`, `{"accounts": [{}]}`, `{}`, `[`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkFuzzAnswer(t, n, "/v1/accounts", body, "accounts")
	})
}

func checkFuzzAnswer(t *testing.T, n *node, path string, body []byte, key string) {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	start := time.Now()
	n.handler().ServeHTTP(rec, req)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("answer took %s for %q", d, body)
	}
	status := rec.Code
	switch {
	case status == http.StatusServiceUnavailable, status == http.StatusGatewayTimeout:
		return
	case status >= 500:
		t.Fatalf("status %d for %q: %s", status, body, rec.Body.Bytes())
	case status >= 400:
		var env struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || env.Error.Code == "" || env.Error.Message == "" {
			t.Fatalf("status %d for %q is not a JSON error (%v): %s", status, body, err, rec.Body.Bytes())
		}
	case status == http.StatusOK:
		// Decoded by the same rules as the server's (field names match
		// case-insensitively; of repeated keys the last wins).
		var in struct {
			Transfers []json.RawMessage `json:"transfers"`
			Accounts  []json.RawMessage `json:"accounts"`
		}
		if err := json.Unmarshal(body, &in); err != nil {
			t.Fatalf("200 for a body that does not decode (%v): %q", err, body)
		}
		items := in.Transfers
		if key == "accounts" {
			items = in.Accounts
		}
		var out struct {
			Results []struct {
				Result string `json:"result"`
			} `json:"results"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || len(out.Results) != len(items) {
			t.Fatalf("200 for %q: %d results for %d items (%v): %s", body, len(out.Results), len(items), err, rec.Body.Bytes())
		}
		for _, r := range out.Results {
			if r.Result == "" || r.Result == "wrong_shard" {
				t.Fatalf("200 for %q has result %q: %s", body, r.Result, rec.Body.Bytes())
			}
		}
	default:
		t.Fatalf("status %d for %q: %s", status, body, rec.Body.Bytes())
	}
}
