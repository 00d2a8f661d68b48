package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"tally/ledger"
)

// withVersion rewrites the ledger entries of a generated log in codec
// version v, enveloped; other entries stay as they are.
func withVersion(t *testing.T, data [][]byte, v func(i int) byte) [][]byte {
	t.Helper()
	out := make([][]byte, len(data))
	for i, d := range data {
		k, p, err := decodeEnvelope(d)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = d
		if k.code == KindLedger {
			e, err := ledger.DecodeEntry(p)
			if err != nil {
				t.Fatal(err)
			}
			e.Version = v(i)
			out[i] = enveloped(&e)
		}
	}
	return out
}

// firstBytes counts the first byte of every value under each of the
// given prefixes.
func firstBytes(t *testing.T, f *FSM, prefixes ...[]byte) map[string]map[byte]int {
	t.Helper()
	out := map[string]map[byte]int{}
	_, err := f.view(func(txn *badger.Txn) error {
		for _, p := range prefixes {
			out[string(p)] = map[byte]int{}
			if err := eachValue(txn, p, func(_, v []byte) error {
				out[string(p)][v[0]]++
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestStoredFormsByEntryVersion: one log applied as version-1 entries
// stores JSON values, as the builds before the binary encoding did, and
// as version-2 entries binary ones; both reach the same state under
// different hash chains, every read serves both alike, and a log that
// switches from the one to the other (an upgrade) verifies.
func TestStoredFormsByEntryVersion(t *testing.T) {
	data := newGen(31).data(200)
	logs := map[string][][]byte{
		"v1":      withVersion(t, data, func(int) byte { return 1 }),
		"v2":      withVersion(t, data, func(int) byte { return 2 }),
		"upgrade": withVersion(t, data, func(i int) byte { return map[bool]byte{true: 1, false: 2}[i < len(data)/2] }),
	}
	fs := map[string]*FSM{}
	for name, l := range logs {
		fs[name] = open(t, t.TempDir())
		applyIn(fs[name], logsOf(1, l), 9)
		verify(t, fs[name])
	}
	v1, v2, up := status(t, fs["v1"]), status(t, fs["v2"]), status(t, fs["upgrade"])
	if v1.AppliedSeq != v2.AppliedSeq || v1.AppliedSeq != up.AppliedSeq || v1.Accounts != v2.Accounts ||
		v1.Accounts != up.Accounts || v1.Pending != v2.Pending || v1.Pending != up.Pending {
		t.Fatalf("the versions reach different states: %+v, %+v, %+v", v1, v2, up)
	}
	if v1.Head == v2.Head || v1.Head == up.Head || v2.Head == up.Head {
		t.Fatal("the versions hash alike")
	}
	for name, want := range map[string]byte{"v1": '{', "v2": ledger.EncBinary} {
		for p, counts := range firstBytes(t, fs[name], preEvent, preAcct, preRec) {
			if len(counts) != 1 || counts[want] == 0 {
				t.Errorf("%s: values under %s start with %v, want only %q", name, p, counts, want)
			}
		}
	}
	for p, counts := range firstBytes(t, fs["upgrade"], preEvent, preRec) {
		if counts['{'] == 0 || counts[ledger.EncBinary] == 0 {
			t.Errorf("upgrade: values under %s start with %v, want both forms", p, counts)
		}
	}

	// Reads: the same events but for their hashes and encoding, each one's
	// hash recomputed from the JSON a stream serves.
	evs1, evs2 := allEvents(t, fs["v1"]), allEvents(t, fs["v2"])
	for i := range evs1 {
		a, b := evs1[i], evs2[i]
		if a.Enc != ledger.EncJSON || b.Enc != ledger.EncBinary {
			t.Fatalf("event %d: encodings %d and %d", a.Seq, a.Enc, b.Enc)
		}
		a.PrevHash, a.Hash, a.Enc = ledger.Hash{}, ledger.Hash{}, 0
		b.PrevHash, b.Hash, b.Enc = ledger.Hash{}, ledger.Hash{}, 0
		if ja, jb := asJSON(a), asJSON(b); ja != jb {
			t.Fatalf("event %d reads differently:\n%s\n%s", a.Seq, ja, jb)
		}
	}
	for _, e := range evs1 {
		for _, b := range e.Balances {
			k := ledger.AccountKey(b.Account, b.Currency)
			want, _, err := fs["v1"].Account(k)
			for _, name := range []string{"v2", "upgrade"} {
				got, _, err2 := fs[name].Account(k)
				if err != nil || err2 != nil || asJSON(got) != asJSON(want) {
					t.Fatalf("%s: account %s reads %+v (%v), v1 %+v (%v)", name, k, got, err2, want, err)
				}
			}
		}
	}
	for name, f := range fs {
		_, seq := f.Applied()
		for after := uint64(0); after < seq; after += MaxPage {
			raw, err := f.EventsRaw(after, MaxPage)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range raw {
				var e ledger.Event
				if err := json.Unmarshal(r, &e); err != nil || e.ComputeHash() != e.Hash {
					t.Fatalf("%s: event JSON %s does not give its hash (%v)", name, r, err)
				}
				if h, err := f.HashAt(e.Seq); err != nil || h != e.Hash {
					t.Fatalf("%s: HashAt(%d) = %s, %v", name, e.Seq, h, err)
				}
			}
		}
		for _, e := range evs1 {
			if e.Type != ledger.TransferPosted {
				continue
			}
			r, _, err := f.Transfer(e.Data.Transfer.ID)
			if err != nil || r.Seq != e.Seq {
				t.Fatalf("%s: transfer %s: %+v, %v", name, e.Data.Transfer.ID, r, err)
			}
			k := ledger.AccountKey(e.Balances[0].Account, e.Balances[0].Currency)
			a, err := f.AccountAt(k, e.Seq)
			if err != nil || a.CreditsPosted != e.Balances[0].CreditsPosted || a.DebitsPosted != e.Balances[0].DebitsPosted {
				t.Fatalf("%s: %s at %d: %+v, %v", name, k, e.Seq, a, err)
			}
		}
	}
}

func asJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TestTailServesJSON: the tail holds the stored form and makes each
// binary event's JSON once, for every reader.
func TestTailServesJSON(t *testing.T) {
	f := open(t, t.TempDir())
	e := ledger.Entry{Time: t0, Commands: []ledger.Command{
		{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{{ID: "a", Currency: "USD"}}},
		transfers(xfer("f", ledger.World, "a", 5))}}
	old := ledger.Entry{Time: t0, Version: 1, Commands: []ledger.Command{
		{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{{ID: "b", Currency: "USD"}}},
		transfers(xfer("g", ledger.World, "b", 5))}}
	f.ApplyBatch([]*raft.Log{entryLog(1, e), {Index: 2, Term: 1, Type: raft.LogCommand, Data: bareV1(old)}})
	evs, ok := f.tail.read(0, 10)
	if !ok || len(evs) != 4 {
		t.Fatalf("tail: %d events, %v", len(evs), ok)
	}
	for i, s := range evs {
		js, err := s.json()
		if err != nil {
			t.Fatal(err)
		}
		again, _ := s.json()
		binary := i < 2
		if binary != (s.stored[0] == ledger.EncBinary) || binary != bytes.Contains(js, []byte(`"enc":2`)) || &js[0] != &again[0] {
			t.Errorf("event %d: stored % x..., JSON %s (made once: %v)", s.seq, s.stored[:1], js, &js[0] == &again[0])
		}
		if !binary && !bytes.Equal(js, s.stored) {
			t.Errorf("event %d: a JSON event is served as stored", s.seq)
		}
	}
	if fmt.Sprint(evs[3].seq) != "4" {
		t.Fatalf("seqs %d..%d", evs[0].seq, evs[3].seq)
	}
}
