package api_test

import (
	"encoding/json"
	"slices"
	"testing"
)

// TestTransferIdempotency checks that a transfer id is an idempotency
// key through the API: a retry answers the original outcome and changes
// nothing, a changed retry is refused, and a rejected id stays rejected.
func TestTransferIdempotency(t *testing.T) {
	n := startCluster1(t)
	n.accounts(t, "alice", "USD", "carol", "USD")
	fund := map[string]any{"id": "fund", "debit": "@world", "credit": "alice", "amount": 1000, "reference": "opening", "metadata": map[string]string{"src": "wire"}}
	first := n.transfer(t, fund)
	if first.Result != "ok" || first.Status != "posted" || first.Seq == 0 {
		t.Fatalf("first deposit: %+v", first)
	}
	logs := n.logLengths(t)
	alice := n.account(t, "alice")

	again := n.transfer(t, fund)
	if again.Result != "exists" || again.Status != "posted" || again.Original != "ok" || again.Seq != first.Seq || again.Shard != first.Shard {
		t.Errorf("same deposit again: %+v, want exists/posted/ok at seq %d", again, first.Seq)
	}
	changes := map[string]map[string]any{
		"amount":    {"amount": 999},
		"credit":    {"credit": "carol"},
		"reference": {"reference": "other"},
		"metadata":  {"metadata": map[string]string{"src": "cash"}},
		"no meta":   {"metadata": nil},
		"pending":   {"pending": true},
	}
	for name, ch := range changes {
		t.Run("changed "+name, func(t *testing.T) {
			c := map[string]any{}
			for k, v := range fund {
				c[k] = v
			}
			for k, v := range ch {
				if v == nil {
					delete(c, k)
				} else {
					c[k] = v
				}
			}
			if r := n.transfer(t, c); r.Result != "exists_with_different_fields" || r.Status != "rejected" {
				t.Errorf("got %+v, want exists_with_different_fields, rejected", r)
			}
		})
	}
	if got := n.logLengths(t); !slices.Equal(got, logs) {
		t.Errorf("retries changed the event logs from %v to %v", logs, got)
	}
	if got := n.account(t, "alice"); got != alice {
		t.Errorf("retries changed alice from %+v to %+v", alice, got)
	}
	rec := n.get(t, "/v1/transfers/fund")
	var view struct {
		Amount int64  `json:"amount"`
		Status string `json:"status"`
		Result string `json:"result"`
		Seq    uint64 `json:"seq"`
	}
	if err := json.Unmarshal(mustOK(t, rec, "get fund").body, &view); err != nil || view.Amount != 1000 ||
		view.Status != "posted" || view.Result != "ok" || view.Seq != first.Seq {
		t.Errorf("record of fund: %+v (%v)", view, err)
	}

	// A rejected id stays rejected, even once it would succeed.
	pay := map[string]any{"id": "pay", "debit": "carol", "credit": "alice", "amount": 50}
	rej := n.transfer(t, pay)
	if rej.Result != "insufficient_funds" || rej.Status != "rejected" {
		t.Fatalf("pay from empty carol: %+v", rej)
	}
	if r := n.transfer(t, map[string]any{"id": "fund-carol", "debit": "@world", "credit": "carol", "amount": 500}); r.Result != "ok" {
		t.Fatalf("fund carol: %+v", r)
	}
	carol := n.account(t, "carol")
	again = n.transfer(t, pay)
	if again.Result != "exists" || again.Status != "rejected" || again.Original != "insufficient_funds" || again.Seq != rej.Seq {
		t.Errorf("retry of the rejected id: %+v, want exists/rejected/insufficient_funds at seq %d", again, rej.Seq)
	}
	if got := n.account(t, "carol"); got != carol {
		t.Errorf("retry of a rejected id moved money: %+v to %+v", carol, got)
	}

	// A pending transfer answers its outcome, pending, on a retry, even
	// after it was posted.
	hold := map[string]any{"id": "hold", "debit": "alice", "credit": "carol", "amount": 100, "pending": true, "timeout_seconds": 3600}
	h := n.transfer(t, hold)
	if h.Result != "ok" || h.Status != "pending" {
		t.Fatalf("hold: %+v", h)
	}
	if r := n.transfer(t, map[string]any{"id": "hold-post", "debit": "alice", "credit": "carol", "amount": 0, "post_pending_id": "hold"}); r.Result != "ok" || r.Status != "posted" {
		t.Fatalf("post hold: %+v", r)
	}
	if r := n.transfer(t, hold); r.Result != "exists" || r.Status != "pending" || r.Seq != h.Seq {
		t.Errorf("retry of the hold: %+v", r)
	}

	// The same id twice in one batch: the second is a retry of the first.
	a := n.post(t, "/v1/transfers", trs(tr("twice", "alice", "carol", 1), tr("twice", "alice", "carol", 1), tr("twice", "alice", "carol", 2)))
	rs := results(t, a, "same id twice")
	if len(rs) != 3 || rs[0].Result != "ok" || rs[1].Result != "exists" || rs[1].Seq != rs[0].Seq || rs[2].Result != "exists_with_different_fields" {
		t.Errorf("same id in one batch: %+v", rs)
	}
}

// TestAccountIdempotency checks exists and exists_with_different_fields
// for accounts.
func TestAccountIdempotency(t *testing.T) {
	n := startCluster1(t)
	body := acs(ac("alice", "USD", `"metadata": {"kyc": "ok"}`), ac("bob", "EUR", `"allow_negative": true`))
	first := results(t, n.post(t, "/v1/accounts", body), "create")
	if len(first) != 2 || first[0].Result != "ok" || first[1].Result != "ok" {
		t.Fatalf("create: %+v", first)
	}
	logs := n.logLengths(t)
	again := results(t, n.post(t, "/v1/accounts", body), "create again")
	for i, r := range again {
		if r.Result != "exists" || r.Seq != first[i].Seq || r.Shard != first[i].Shard {
			t.Errorf("create again [%d]: %+v, want exists at seq %d", i, r, first[i].Seq)
		}
	}
	for _, c := range []struct{ name, body string }{
		{"currency", acs(ac("alice", "EUR", `"metadata": {"kyc": "ok"}`))},
		{"metadata", acs(ac("alice", "USD", `"metadata": {"kyc": "no"}`))},
		{"no metadata", acs(ac("alice", "USD"))},
		{"allow_negative", acs(ac("bob", "EUR"))},
	} {
		rs := results(t, n.post(t, "/v1/accounts", c.body), c.name)
		if len(rs) != 1 || rs[0].Result != "exists_with_different_fields" {
			t.Errorf("changed %s: %+v", c.name, rs)
		}
	}
	if got := n.logLengths(t); !slices.Equal(got, logs) {
		t.Errorf("retries changed the event logs from %v to %v", logs, got)
	}
	if a := n.account(t, "alice"); a.Currency != "USD" {
		t.Errorf("alice: %+v", a)
	}
	// Closing twice: the second answers account_closed and appends nothing.
	c1 := mustOK(t, n.post(t, "/v1/accounts/bob/close", nil), "close")
	logs = n.logLengths(t)
	c2 := mustOK(t, n.post(t, "/v1/accounts/bob/close", nil), "close again")
	var r1, r2 result
	if json.Unmarshal(c1.body, &r1) != nil || json.Unmarshal(c2.body, &r2) != nil || r1.Result != "ok" || r2.Result != "account_closed" {
		t.Errorf("close twice: %s then %s", c1.body, c2.body)
	}
	if got := n.logLengths(t); !slices.Equal(got, logs) {
		t.Errorf("closing again changed the event logs from %v to %v", logs, got)
	}
}
