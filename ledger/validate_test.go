package ledger

import (
	"strings"
	"testing"
)

func TestValidID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"a", true},
		{"alice", true},
		{"Alice-01_x.y:z", true},
		{"alice{eu}", true},
		{"a@b", true},
		{"@world", true}, // valid shape; reserved is a separate check
		{strings.Repeat("x", MaxIDLen), true},
		{"", false},
		{strings.Repeat("x", MaxIDLen+1), false},
		{"a b", false},
		{"a/b", false},
		{"a\x00", false},
		{"é", false},
		{"a\n", false},
		{"a+b", false},
		{"a,b", false},
	} {
		if got := ValidID(tc.id); got != tc.want {
			t.Errorf("ValidID(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

func TestValidCurrency(t *testing.T) {
	for _, tc := range []struct {
		cur  string
		want bool
	}{
		{"USD", true},
		{"POINTS", true},
		{"X", true},
		{"ABCDEFGHIJ12", true},
		{"", false},
		{"ABCDEFGHIJ123", false},
		{"usd", false},
		{"US D", false},
		{"US-D", false},
		{"ÜSD", false},
	} {
		if got := ValidCurrency(tc.cur); got != tc.want {
			t.Errorf("ValidCurrency(%q) = %v, want %v", tc.cur, got, tc.want)
		}
	}
}

func TestValidMetadata(t *testing.T) {
	big := map[string]string{"k": strings.Repeat("v", MaxMetaBytes-1)}
	over := map[string]string{"k": strings.Repeat("v", MaxMetaBytes)}
	keys := map[string]string{}
	for i := 0; i < MaxMetaKeys; i++ {
		keys[string(rune('a'+i))] = ""
	}
	for _, tc := range []struct {
		name string
		m    map[string]string
		want bool
	}{
		{"nil", nil, true},
		{"empty", map[string]string{}, true},
		{"one", map[string]string{"kyc": "ok"}, true},
		{"exactly 1 KiB", big, true},
		{"over 1 KiB", over, false},
		{"16 keys", keys, true},
		{"empty key", map[string]string{"": "v"}, false},
		{"empty value", map[string]string{"k": ""}, true},
	} {
		if got := ValidMetadata(tc.m); got != tc.want {
			t.Errorf("%s: ValidMetadata = %v, want %v", tc.name, got, tc.want)
		}
	}
	keys["q"] = ""
	if ValidMetadata(keys) {
		t.Error("17 keys accepted")
	}
}

func TestCheckAccount(t *testing.T) {
	for _, tc := range []struct {
		acc  Account
		want Code // "" means valid
	}{
		{Account{ID: "alice", Currency: "USD"}, ""},
		{Account{ID: "alice", Currency: "USD", AllowNegative: true, Metadata: map[string]string{"a": "b"}}, ""},
		{Account{ID: "", Currency: "USD"}, InvalidID},
		{Account{ID: "@me", Currency: "USD"}, InvalidID},
		{Account{ID: "a/b", Currency: "bad"}, InvalidID}, // id first
		{Account{ID: "alice", Currency: "usd"}, CurrencyInvalid},
		{Account{ID: "alice", Currency: "usd", Metadata: map[string]string{"": ""}}, CurrencyInvalid}, // currency before metadata
		{Account{ID: "alice", Currency: "USD", Metadata: map[string]string{"": ""}}, MetadataInvalid},
		{Account{ID: "alice", Currency: "USD", Metadata: map[string]string{"": ""}, Closed: true}, MetadataInvalid},
		{Account{ID: "alice", Currency: "USD", Closed: true}, InvalidRequest},
		{Account{ID: "alice", Currency: "USD", DebitsPosted: 1}, InvalidRequest},
		{Account{ID: "alice", Currency: "USD", CreditsPosted: 1}, InvalidRequest},
		{Account{ID: "alice", Currency: "USD", DebitsPending: 1}, InvalidRequest},
		{Account{ID: "alice", Currency: "USD", CreditsPending: 1}, InvalidRequest},
	} {
		p := CheckAccount(&tc.acc)
		switch {
		case tc.want == "" && p != nil:
			t.Errorf("CheckAccount(%+v) = %v, want nil", tc.acc, p)
		case tc.want != "" && (p == nil || p.Code != tc.want || p.Msg == "" || !strings.HasPrefix(p.Error(), string(tc.want)+": ")):
			t.Errorf("CheckAccount(%+v) = %v, want %s", tc.acc, p, tc.want)
		}
	}
}

// TestCheckTransferAgreesWithExecute runs every result-code case through
// the stateless edge check too: where Execute answers with a code the
// edge can know, CheckTransfer must give the same code; where the answer
// needs state, CheckTransfer must let the transfer through.
func TestCheckTransferAgreesWithExecute(t *testing.T) {
	stateless := map[Code]bool{InvalidID: true, InvalidRequest: true, LimitExceeded: true, AmountInvalid: true, AccountsMustBeDifferent: true}
	for _, tc := range codeCases {
		if tc.code == Exists || tc.code == ExistsWithDifferentFields {
			continue
		}
		p := CheckTransfer(&tc.tr)
		stateNeeded := !stateless[tc.code] ||
			tc.code == LimitExceeded && len(tc.tr.Reference) <= MaxReferenceLen && ValidMetadata(tc.tr.Metadata) ||
			tc.code == AmountInvalid && tc.tr.Resolves() != "" && tc.tr.Amount >= 0
		switch {
		case stateNeeded && p != nil:
			t.Errorf("%s: CheckTransfer = %v, Execute answers %s", tc.name, p, tc.code)
		case !stateNeeded && (p == nil || p.Code != tc.code):
			t.Errorf("%s: CheckTransfer = %v, want %s", tc.name, p, tc.code)
		}
	}
}

func TestCheckTransfer(t *testing.T) {
	for _, tc := range []struct {
		name string
		tr   Transfer
		want Code
	}{
		{"plain", xfer("t", "a", "b", 1), ""},
		{"max amount", xfer("t", "a", "b", maxAmt), ""},
		{"deposit", deposit("t", "a", 1), ""},
		{"withdrawal", withdraw("t", "a", 1), ""},
		{"post all", post("t", "p", "a", "b", 0), ""},
		{"void", void("t", "p", "a", "b"), ""},
		{"pending with max timeout", hold("t", "a", "b", 1, MaxTimeoutSeconds), ""},
		{"linked", linked(xfer("t", "a", "b", 1)), ""},
		{"clearing debit", xfer("t", "@clearing:0", "b", 1), InvalidID},
		{"empty credit", xfer("t", "a", "", 1), InvalidID},
		{"post of a reserved id", post("t", "@p", "a", "b", 0), InvalidID},
		{"post of an invalid id", post("t", "p q", "a", "b", 0), InvalidID},
		{"invalid debit before amount", xfer("t", "", "b", 0), InvalidID},
		{"post and void", both(xfer("t", "a", "b", 0), "p"), InvalidRequest},
		{"pending void", func() Transfer { t := void("t", "p", "a", "b"); t.Pending = true; return t }(), InvalidRequest},
		{"timeout on a post", func() Transfer { t := post("t", "p", "a", "b", 0); t.TimeoutSeconds = 1; return t }(), InvalidRequest},
		{"zero amount", xfer("t", "a", "b", 0), AmountInvalid},
		{"same accounts", xfer("t", "a", "a", 1), AccountsMustBeDifferent},
		{"same accounts on a post", post("t", "p", "a", "a", 0), AccountsMustBeDifferent},
	} {
		p := CheckTransfer(&tc.tr)
		if got := Code(""); p != nil {
			got = p.Code
			if got != tc.want {
				t.Errorf("%s: CheckTransfer = %v, want %q", tc.name, p, tc.want)
			}
		} else if tc.want != "" {
			t.Errorf("%s: CheckTransfer = nil, want %s", tc.name, tc.want)
		}
	}
	if p := CheckTransferID(&Transfer{ID: "ok", Debit: "a/b"}); p != nil {
		t.Errorf("CheckTransferID looked past the id: %v", p)
	}
}

func TestCheckChains(t *testing.T) {
	for _, tc := range []struct {
		name string
		ts   []Transfer
		ok   bool
	}{
		{"empty", nil, true},
		{"one", []Transfer{xfer("a", "x", "y", 1)}, true},
		{"closed chain", []Transfer{linked(xfer("a", "x", "y", 1)), xfer("b", "x", "y", 1)}, true},
		{"chain then single", []Transfer{linked(xfer("a", "x", "y", 1)), xfer("b", "x", "y", 1), xfer("c", "x", "y", 1)}, true},
		{"lone linked", []Transfer{linked(xfer("a", "x", "y", 1))}, false},
		{"open at the end", []Transfer{xfer("a", "x", "y", 1), linked(xfer("b", "x", "y", 1))}, false},
	} {
		p := CheckChains(tc.ts)
		if (p == nil) != tc.ok || (p != nil && p.Code != InvalidRequest) {
			t.Errorf("%s: CheckChains = %v", tc.name, p)
		}
	}
}
