package ledger

import (
	"bytes"
	"encoding/json"
	"testing"
)

// Seal encodes an event once for both its hash and its stored bytes; the
// stored bytes must be exactly what encoding the sealed event gives (its
// JSON for an event of a version-1 entry, its binary form otherwise), and
// the hash what ComputeHash gives.
func TestSealMatchesEncodingAndHash(t *testing.T) {
	for _, v := range []byte{1, 2} {
		sealMatches(t, v)
	}
}

func sealMatches(t *testing.T, version byte) {
	st := NewState(0, 1, nil)
	st.BeginEntry(1, 1_700_000_000_000_000_000, version)
	acct := func(id, cur string) Account {
		return Account{ID: id, Currency: cur, Metadata: map[string]string{"k": "v\"<>&"}}
	}
	st.Execute(&Command{Kind: CmdOpenAccounts, Accounts: []Account{acct("a", "USD"), acct("b", "USD")}})
	st.Execute(&Command{Kind: CmdTransfers, Transfers: []Transfer{
		{ID: "f", Debit: World, Credit: "a", Amount: 100},
		{ID: "p", Debit: "a", Credit: "b", Amount: 5, Pending: true, Metadata: map[string]string{"note": "é"}},
		{ID: "x", Debit: "a", Credit: "b", Amount: 1 << 40}, // rejected
	}})
	c := st.Flush()
	if len(c.Events) < 5 {
		t.Fatalf("want at least 5 events, got %d", len(c.Events))
	}
	for _, e := range c.Events {
		if e.Raw == nil {
			t.Fatalf("event %d not sealed", e.Seq)
		}
		if h := e.ComputeHash(); e.Hash != h {
			t.Fatalf("event %d: hash %s, ComputeHash %s", e.Seq, e.Hash, h)
		}
		if e.Enc != EncodingOf(version) {
			t.Fatalf("event %d of a version %d entry has encoding %d", e.Seq, version, e.Enc)
		}
		want, err := json.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		if e.Enc == EncBinary {
			want = e.AppendBinary(nil)
		}
		if !bytes.Equal(e.Raw, want) {
			t.Fatalf("event %d:\nraw  %s\nwant %s", e.Seq, e.Raw, want)
		}
	}
}
