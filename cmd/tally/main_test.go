package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"tally/client"
)

// run executes the CLI with args against addr and returns what it printed
// and the error main would print and exit 1 on.
func run(t *testing.T, addr string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runCtx(t, context.Background(), addr, args...)
}

// runCtx is run with a context, which an interrupt would cancel.
func runCtx(t *testing.T, ctx context.Context, addr string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := newRootCmd(&app{})
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append([]string{"--addr", addr}, args...))
	err = cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// mustRun is run for a command that must succeed.
func mustRun(t *testing.T, addr string, args ...string) string {
	t.Helper()
	out, stderr, err := run(t, addr, args...)
	if err != nil {
		t.Fatalf("tally %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, stderr)
	}
	return out
}

// fields returns the whitespace-separated fields of the table line that
// starts with first.
func fields(t *testing.T, table, first string) []string {
	t.Helper()
	for line := range strings.SplitSeq(table, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == first {
			return f
		}
	}
	t.Fatalf("no line starting with %q in:\n%s", first, table)
	return nil
}

// setup creates alice and bob in USD and gives alice 10000.
func setup(t *testing.T) *fakeLedger {
	t.Helper()
	f := newFakeLedger(t)
	mustRun(t, f.addr(), "account", "create", "alice", "bob", "--currency", "USD", "--meta", "kyc=ok")
	mustRun(t, f.addr(), "deposit", "alice", "10000", "--id", "dep-1")
	return f
}

func TestAccountCreateAndBalance(t *testing.T) {
	f := newFakeLedger(t)
	out := mustRun(t, f.addr(), "account", "create", "alice", "--currency", "USD", "--meta", "kyc=ok", "--allow-negative")
	if got := fields(t, out, "alice"); got[1] != "ok" {
		t.Errorf("create result %v", got)
	}
	sent := f.last(t, "POST", "/v1/accounts")
	if !strings.Contains(sent.Body, `"allow_negative":true`) || !strings.Contains(sent.Body, `"metadata":{"kyc":"ok"}`) {
		t.Errorf("request body %s", sent.Body)
	}
	// Creating it again with the same fields is fine; with others it fails.
	mustRun(t, f.addr(), "account", "create", "alice", "--currency", "USD", "--meta", "kyc=ok", "--allow-negative")
	out, _, err := run(t, f.addr(), "account", "create", "alice", "--currency", "EUR")
	if err == nil || !strings.Contains(err.Error(), "exists_with_different_fields") {
		t.Errorf("err = %v, want exists_with_different_fields", err)
	}
	if got := fields(t, out, "alice"); got[1] != "exists_with_different_fields" {
		t.Errorf("the result is printed before failing: %v", got)
	}

	mustRun(t, f.addr(), "deposit", "alice", "10000", "--id", "dep-1")
	out = mustRun(t, f.addr(), "balance", "alice")
	got := fields(t, out, "alice")
	if strings.Join(got[:6], " ") != "alice USD 10000 10000 0 0" {
		t.Errorf("balance line %v\n%s", got, out)
	}
	if !strings.HasPrefix(out, "ACCOUNT") {
		t.Errorf("want a header line:\n%s", out)
	}

	out = mustRun(t, f.addr(), "--json", "balance", "alice")
	var v client.AccountView
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Balance != 10000 || v.Currency != "USD" {
		t.Errorf("json %q: %+v %v", out, v, err)
	}

	out = mustRun(t, f.addr(), "account", "get", "alice")
	for _, want := range [][]string{{"balance", "10000"}, {"allow_negative", "true"}, {"metadata", "kyc=ok"}, {"closed", "false"}} {
		if got := fields(t, out, want[0]); got[1] != want[1] {
			t.Errorf("account get %s = %v, want %s", want[0], got, want[1])
		}
	}
}

func TestReadFlagsReachTheQuery(t *testing.T) {
	f := setup(t)
	tests := []struct {
		args []string
		path string
		want string
	}{
		{[]string{"balance", "alice", "--stale", "--min-seq", "3"}, "/v1/accounts/alice", "consistency=stale&min_seq=3"},
		{[]string{"balance", "alice", "--at-seq", "2"}, "/v1/accounts/alice", "at_seq=2"},
		{[]string{"balance", "@world", "--currency", "USD", "--shard", "0"}, "/v1/accounts/@world", "currency=USD&shard=0"},
		{[]string{"account", "get", "alice"}, "/v1/accounts/alice", ""},
	}
	for _, tt := range tests {
		mustRun(t, f.addr(), append([]string{"--timeout", "0"}, tt.args...)...)
		if got := f.last(t, "GET", tt.path).Query; got != tt.want {
			t.Errorf("%v: query %q, want %q", tt.args, got, tt.want)
		}
	}
	out := mustRun(t, f.addr(), "balance", "@world", "--currency", "USD")
	if got := fields(t, out, "@world"); got[2] != "-10000" {
		t.Errorf("@world balance %v", got)
	}
}

func TestTransfer(t *testing.T) {
	f := setup(t)
	out := mustRun(t, f.addr(), "transfer", "alice", "bob", "2500", "--id", "t-1", "--reference", "invoice 7", "--meta", "k=v")
	if got := fields(t, out, "t-1"); got[1] != "ok" || got[2] != "posted" {
		t.Errorf("result %v", got)
	}
	sent := f.last(t, "POST", "/v1/transfers")
	want := `{"transfers":[{"id":"t-1","debit":"alice","credit":"bob","amount":2500,"reference":"invoice 7","metadata":{"k":"v"}}]}`
	if strings.TrimSpace(sent.Body) != want {
		t.Errorf("body\n got %s\nwant %s", sent.Body, want)
	}
	// A retry with the same id changes nothing and succeeds.
	out = mustRun(t, f.addr(), "transfer", "alice", "bob", "2500", "--id", "t-1", "--reference", "invoice 7", "--meta", "k=v")
	if got := fields(t, out, "t-1"); got[1] != "exists" {
		t.Errorf("retry result %v", got)
	}
	if got := fields(t, mustRun(t, f.addr(), "balance", "bob"), "bob"); got[2] != "2500" {
		t.Errorf("bob %v", got)
	}

	out = mustRun(t, f.addr(), "transfer", "get", "t-1")
	for _, want := range [][]string{{"debit", "alice"}, {"amount", "2500"}, {"status", "posted"}, {"reference", "invoice"}} {
		if got := fields(t, out, want[0]); got[1] != want[1] {
			t.Errorf("transfer get %s = %v, want %s", want[0], got, want[1])
		}
	}
	out = mustRun(t, f.addr(), "--json", "transfer", "get", "t-1")
	var v client.TransferView
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Amount != 2500 || v.Status != "posted" {
		t.Errorf("json %q: %+v %v", out, v, err)
	}
}

func TestRejectedTransferFails(t *testing.T) {
	f := setup(t)
	tests := []struct {
		name    string
		args    []string
		id      string
		result  string
		wantErr string
	}{
		{"insufficient funds", []string{"transfer", "alice", "bob", "20000", "--id", "big"}, "big", "insufficient_funds", "transfer big rejected: insufficient_funds"},
		{"a rejected id stays rejected", []string{"transfer", "alice", "bob", "20000", "--id", "big"}, "big", "exists", "transfer big was rejected earlier: insufficient_funds"},
		{"unknown account", []string{"transfer", "alice", "carol", "1", "--id", "c"}, "c", "credit_account_not_found", "credit_account_not_found"},
		{"withdraw too much", []string{"withdraw", "bob", "1", "--id", "w"}, "w", "insufficient_funds", "insufficient_funds"},
		{"different fields", []string{"deposit", "alice", "5", "--id", "dep-1"}, "dep-1", "exists_with_different_fields", "exists_with_different_fields"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := run(t, f.addr(), tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
			if got := fields(t, out, tt.id); got[1] != tt.result {
				t.Errorf("printed result %v, want %s", got, tt.result)
			}
		})
	}
	out, _, err := run(t, f.addr(), "--json", "transfer", "alice", "bob", "20000", "--id", "big2")
	var res struct{ Results []map[string]any }
	if err == nil || json.Unmarshal([]byte(out), &res) != nil || res.Results[0]["result"] != "insufficient_funds" {
		t.Errorf("json: err %v, out %q", err, out)
	}
}

func TestGeneratedIDIsPrinted(t *testing.T) {
	f := setup(t)
	out := mustRun(t, f.addr(), "transfer", "alice", "bob", "100")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	id := strings.Fields(lines[len(lines)-1])[0]
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(id) {
		t.Fatalf("generated id %q is not 16 hex digits:\n%s", id, out)
	}
	if sent := f.last(t, "POST", "/v1/transfers"); !strings.Contains(sent.Body, `"id":"`+id+`"`) {
		t.Errorf("printed id %s is not the one sent: %s", id, sent.Body)
	}
	out2 := mustRun(t, f.addr(), "deposit", "bob", "100")
	if id2 := strings.Fields(strings.Split(strings.TrimSpace(out2), "\n")[1])[0]; id2 == id {
		t.Errorf("two generated ids are equal: %s", id)
	}
}

func TestUnknownOutcomeNamesTheID(t *testing.T) {
	f := setup(t)
	f.fail = func(r *http.Request) (int, string) {
		if r.URL.Path == "/v1/transfers" {
			return 504, `{"error": {"code": "outcome_unknown", "message": "deadline passed"}}`
		}
		return 0, ""
	}
	_, _, err := run(t, f.addr(), "transfer", "alice", "bob", "100")
	if err == nil || !regexp.MustCompile(`^transfer ([0-9a-f]{16}): outcome_unknown: deadline passed \(HTTP 504\) \(retry with --id ([0-9a-f]{16})\)$`).MatchString(err.Error()) {
		t.Errorf("err = %v", err)
	}
	_, _, err = run(t, f.addr(), "transfer", "alice", "bob", "100", "--id", "mine")
	if err == nil || err.Error() != "transfer mine: outcome_unknown: deadline passed (HTTP 504)" {
		t.Errorf("err = %v", err)
	}
}

func TestPendingPostAndVoid(t *testing.T) {
	f := setup(t)
	mustRun(t, f.addr(), "transfer", "alice", "bob", "3000", "--pending", "--timeout", "1h", "--id", "hold-1")
	if sent := f.last(t, "POST", "/v1/transfers"); !strings.Contains(sent.Body, `"pending":true,"timeout_seconds":3600`) {
		t.Errorf("pending body %s", sent.Body)
	}
	got := fields(t, mustRun(t, f.addr(), "balance", "alice"), "alice")
	if got[2] != "10000" || got[3] != "7000" || got[4] != "3000" {
		t.Errorf("alice during the hold %v", got)
	}

	out := mustRun(t, f.addr(), "transfer", "--post", "hold-1", "--amount", "2000", "--id", "post-1")
	if got := fields(t, out, "post-1"); got[1] != "ok" {
		t.Errorf("post result %v", got)
	}
	// The post names the pending transfer's accounts, looked up first.
	sent := f.last(t, "POST", "/v1/transfers")
	want := `{"transfers":[{"id":"post-1","debit":"alice","credit":"bob","amount":2000,"post_pending_id":"hold-1"}]}`
	if strings.TrimSpace(sent.Body) != want {
		t.Errorf("post body\n got %s\nwant %s", sent.Body, want)
	}
	if got := fields(t, mustRun(t, f.addr(), "balance", "bob"), "bob"); got[2] != "2000" {
		t.Errorf("bob after the post %v", got)
	}

	mustRun(t, f.addr(), "transfer", "alice", "bob", "500", "--pending", "--id", "hold-2")
	out = mustRun(t, f.addr(), "transfer", "--void", "hold-2", "--id", "void-2")
	if got := fields(t, out, "void-2"); got[1] != "ok" || got[2] != "voided" {
		t.Errorf("void result %v", got)
	}
	out, _, err := run(t, f.addr(), "transfer", "--void", "hold-2", "--id", "void-3")
	if err == nil || !strings.Contains(err.Error(), "pending_already_resolved") {
		t.Errorf("second void: err %v\n%s", err, out)
	}
	if _, _, err := run(t, f.addr(), "transfer", "--post", "nope"); err == nil || err.Error() != "pending transfer nope does not exist" {
		t.Errorf("post of a missing pending transfer: %v", err)
	}
	out = mustRun(t, f.addr(), "transfer", "get", "hold-2")
	if got := fields(t, out, "resolved_by"); got[1] != "void-2" {
		t.Errorf("resolved_by %v", got)
	}
}

func TestArgumentValidation(t *testing.T) {
	f := newFakeLedger(t)
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"transfer", "alice", "bob", "12.50"}, `amount "12.50" must be a positive integer in minor units`},
		{[]string{"transfer", "alice", "bob", "0"}, `amount "0" must be an integer in minor units from 1`},
		{[]string{"transfer", "alice", "bob", "1e3"}, `amount "1e3" must be a positive integer`},
		{[]string{"transfer", "alice", "bob", "99999999999999999999"}, `must be an integer in minor units from 1 to 9223372036854775807`},
		{[]string{"deposit", "alice", "+5"}, `amount "+5" must be a positive integer`},
		{[]string{"deposit", "alice", "-5"}, `unknown shorthand flag: '5'`},
		{[]string{"withdraw", "alice", "ten"}, `amount "ten" must be a positive integer`},
		{[]string{"transfer", "alice", "bob"}, "want DEBIT CREDIT AMOUNT, got 2 arguments"},
		{[]string{"transfer", "alice", "alice", "5"}, "debit and credit must be different accounts"},
		{[]string{"transfer", "al ice", "bob", "5"}, `debit "al ice" must be an account id or @world`},
		{[]string{"transfer", "alice", "bob", "5", "--id", "bad id"}, `transfer id "bad id" must be`},
		{[]string{"transfer", "alice", "bob", "5", "--timeout", "30s"}, "needs --pending"},
		{[]string{"transfer", "alice", "bob", "5", "--pending", "--timeout", "1500ms"}, "whole number of seconds"},
		{[]string{"transfer", "alice", "bob", "5", "--amount", "3"}, "--amount is only for --post"},
		{[]string{"transfer", "--post", "p", "--void", "p"}, "none of the others can be"},
		{[]string{"transfer", "--post", "p", "alice"}, "--post and --void take no DEBIT CREDIT AMOUNT"},
		{[]string{"transfer", "--post", "p", "--amount", "x"}, `amount "x" must be a positive integer`},
		{[]string{"transfer", "alice", "bob", "5", "--meta", "novalue"}, `--meta "novalue" must be key=value`},
		{[]string{"account", "create", "alice"}, `required flag(s) "currency" not set`},
		{[]string{"account", "create", "alice", "--currency", "usd"}, `currency "usd" must be 1 to 12 uppercase`},
		{[]string{"account", "create", "@bank", "--currency", "USD"}, "ids starting with @ are reserved"},
		{[]string{"balance", "@world"}, "@world needs --currency"},
		{[]string{"history", "alice", "--order", "sideways"}, `--order "sideways" must be asc or desc`},
		{[]string{"events", "--limit", "5000"}, "--limit 5000 must be 1 to 1000"},
		{[]string{"cluster", "transfer-leader", "x"}, `shard "x" must be a shard number`},
		{[]string{"bench", "--accounts", "1"}, "--accounts must be at least 2"},
		{[]string{"bench", "--cross-shard", "2"}, "--cross-shard must be 0 to 1"},
		{[]string{"balance", "alice", "--nope"}, "unknown flag: --nope (see tally balance --help)"},
	}
	for _, tt := range tests {
		_, _, err := run(t, f.addr(), tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("tally %s: err = %v, want %q", strings.Join(tt.args, " "), err, tt.wantErr)
		}
	}
	if n := f.requests(); n != 0 {
		t.Errorf("%d requests were sent for invalid input", n)
	}
}

func TestAccountClose(t *testing.T) {
	f := setup(t)
	out := mustRun(t, f.addr(), "account", "close", "bob")
	if got := fields(t, out, "bob"); got[1] != "ok" {
		t.Errorf("close %v", got)
	}
	// Closing again is not an error: the account is closed, as asked.
	out = mustRun(t, f.addr(), "account", "close", "bob")
	if got := fields(t, out, "bob"); got[1] != "account_closed" {
		t.Errorf("second close %v", got)
	}
	if _, _, err := run(t, f.addr(), "account", "close", "carol"); err == nil || !strings.Contains(err.Error(), "account_not_found") {
		t.Errorf("close of a missing account: %v", err)
	}
	if _, _, err := run(t, f.addr(), "transfer", "alice", "bob", "1"); err == nil || !strings.Contains(err.Error(), "account_closed") {
		t.Errorf("transfer to a closed account: %v", err)
	}
}

func TestNotFoundAndErrors(t *testing.T) {
	f := setup(t)
	if _, _, err := run(t, f.addr(), "balance", "carol"); err == nil || err.Error() != "account_not_found: account carol does not exist (HTTP 404)" {
		t.Errorf("err = %v", err)
	}
	if _, _, err := run(t, f.addr(), "transfer", "get", "nope"); err == nil || !strings.Contains(err.Error(), "transfer_not_found") {
		t.Errorf("err = %v", err)
	}
	f.fail = func(*http.Request) (int, string) {
		return 503, `{"error": {"code": "unavailable", "message": "no leader for shard 0"}}`
	}
	if _, _, err := run(t, f.addr(), "cluster", "status"); err == nil || err.Error() != "unavailable: no leader for shard 0 (HTTP 503)" {
		t.Errorf("err = %v", err)
	}
}

func TestHistoryAndEvents(t *testing.T) {
	f := setup(t)
	mustRun(t, f.addr(), "transfer", "alice", "bob", "2500", "--id", "t-1")
	out := mustRun(t, f.addr(), "history", "alice")
	if got := fields(t, out, "0"); len(got) < 2 {
		t.Fatalf("history:\n%s", out)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		f := strings.Fields(line)
		switch f[3] {
		case "AccountOpened", "TransferPosted":
		default:
			t.Errorf("history line %v", f)
		}
	}
	lastLine := strings.Fields(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])
	if want := []string{"TransferPosted", "t-1", "alice", "->", "bob", "2500", "7500"}; strings.Join(lastLine[3:], " ") != strings.Join(want, " ") {
		t.Errorf("last history line %v, want ... %v", lastLine, want)
	}

	_, stderr, err := run(t, f.addr(), "history", "alice", "--limit", "1")
	if err != nil || !strings.Contains(stderr, "more: tally history alice --after 1 --limit 1") {
		t.Errorf("next page hint: %v %q", err, stderr)
	}
	if q := f.last(t, "GET", "/v1/accounts/alice/history").Query; !strings.Contains(q, "limit=1") {
		t.Errorf("history query %q", q)
	}

	for _, args := range [][]string{{"events"}} {
		out := mustRun(t, f.addr(), append(args, "--shard", "0", "--after", "1")...)
		if got := fields(t, out, "0"); got[1] != "2" || got[3] != "AccountOpened" || got[4] != "bob" {
			t.Errorf("%v first line %v", args, got)
		}
		if q := f.last(t, "GET", "/v1/shards/0/events").Query; !strings.Contains(q, "after=1") {
			t.Errorf("events query %q", q)
		}
	}
	out = mustRun(t, f.addr(), "--json", "events")
	var page client.EventPage
	if err := json.Unmarshal([]byte(out), &page); err != nil || len(page.Events) != 4 || page.Events[3].Data.Transfer.ID != "t-1" {
		t.Errorf("events json: %v %+v", err, page)
	}
	if _, _, err := run(t, f.addr(), "events", "--shard", "9"); !client.IsNotFound(err) {
		t.Errorf("missing shard: %v", err)
	}
}

func TestEveryCommandHasAnExample(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() == "help" || c.Name() == "completion" {
			return // cobra's own
		}
		if c.Example == "" {
			t.Errorf("%s has no Example", c.CommandPath())
		}
		if c.Short == "" {
			t.Errorf("%s has no Short", c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newRootCmd(&app{}))
}

func TestCompletion(t *testing.T) {
	out := mustRun(t, "127.0.0.1:1", "completion", "bash")
	if !strings.Contains(out, "__start_tally") {
		t.Errorf("bash completion does not look like one:\n%.200s", out)
	}
}

func TestAddrFromEnvironment(t *testing.T) {
	t.Setenv("TALLY_ADDR", "10.0.0.1:9999")
	a := &app{}
	cmd := newRootCmd(a)
	cmd.SetArgs([]string{"--help"})
	cmd.SetOut(&bytes.Buffer{})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if a.addr != "10.0.0.1:9999" {
		t.Errorf("addr %q, want the environment's", a.addr)
	}
}
