package ledger

import (
	"encoding/json"
	"testing"
	"time"
)

// replayJSON stores events the way the fsm does, as JSON, and folds them
// into a fresh state.
func replayJSON(t *testing.T, shard, shards int, evs []Event) *State {
	t.Helper()
	st := NewState(shard, shards, nil)
	for _, e := range evs {
		b, err := json.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		var back Event
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if err := st.Replay(back); err != nil {
			t.Fatalf("replay from JSON: %v", err)
		}
	}
	return st
}

func TestReplayRebuildsState(t *testing.T) {
	h := fixture(t)
	h.transfers(linked(xfer("c1", "alice", "bob", 5)), xfer("c2", "alice", "ghost", 1))
	h.must(withMeta(withRef(hold("p9", "alice", "bob", 7, 100), "ref"), 3, 4))
	h.flush()
	h.advance(time.Hour)
	h.flush()
	st := replayJSON(t, 0, 1, h.events)
	if st.Seq != h.st.Seq || st.Head != h.st.Head || st.StateHash() != h.st.StateHash() {
		t.Fatalf("replayed seq %d head %s, live seq %d head %s", st.Seq, st.Head, h.st.Seq, h.st.Head)
	}
	for id := range h.store {
		got, _ := st.Record(id)
		want, _ := h.st.Record(id)
		if !got.Transfer.Same(&want.Transfer) || got.Result != want.Result || got.Status != want.Status ||
			got.Seq != want.Seq || got.ResolvedBy != want.ResolvedBy || got.ResolvedAmount != want.ResolvedAmount || got.ExpiresAt != want.ExpiresAt {
			t.Fatalf("record %s: replayed %+v, live %+v", id, got, want)
		}
	}
}

func TestReplayDetectsTampering(t *testing.T) {
	h := fixture(t)
	h.flush()
	evs := h.events
	for _, tc := range []struct {
		name   string
		tamper func(evs []Event)
	}{
		{"amount", func(evs []Event) { tr := *evs[6].Data.Transfer; tr.Amount++; evs[6].Data.Transfer = &tr }},
		{"stored balance", func(evs []Event) {
			evs[6].Balances = append([]Balance(nil), evs[6].Balances...)
			evs[6].Balances[0].CreditsPosted++
		}},
		{"hash", func(evs []Event) { evs[3].Hash[0] ^= 1 }},
		{"prev hash", func(evs []Event) { evs[3].PrevHash[0] ^= 1 }},
		{"time", func(evs []Event) { evs[3].Time++ }},
		{"time goes back", func(evs []Event) { evs[3].Time = 0 }},
		{"gap", func(evs []Event) { evs[3].Seq++ }},
		{"result", func(evs []Event) {
			for i := range evs {
				if evs[i].Type == TransferRejected {
					evs[i].Data.Result = CurrencyMismatch
				}
			}
		}},
		{"unknown type", func(evs []Event) { evs[3].Type = "Bogus" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := append([]Event(nil), evs...)
			tc.tamper(cp)
			st := NewState(0, 1, nil)
			var err error
			for _, e := range cp {
				if err = st.Replay(e); err != nil {
					break
				}
			}
			if err == nil {
				t.Fatal("replay accepted a tampered log")
			}
		})
	}
}

// TestNonUTF8NeverReachesTheLog: events are hashed and stored as JSON,
// which replaces invalid UTF-8, so a string with such bytes in an event
// would make the stored log fail its own hash chain on replay.
func TestNonUTF8NeverReachesTheLog(t *testing.T) {
	h := newHarness(t, 0, 1)
	h.open("a", "USD", true)
	h.open("b", "USD", false)
	res := h.exec(&Command{Kind: CmdOpenAccounts, Accounts: []Account{{ID: "c", Currency: "USD", Metadata: map[string]string{"k": "\xff"}}}})
	if res[0].Result != MetadataInvalid {
		t.Fatalf("open with non-UTF-8 metadata: %s", res[0].Result)
	}
	seq := h.st.Seq
	for _, tr := range []Transfer{
		withRef(xfer("t1", "a", "b", 1), "caf\xe9"),
		{ID: "t2", Debit: "a", Credit: "b", Amount: 1, Metadata: map[string]string{"k": "\xff"}},
		{ID: "t3", Debit: "a", Credit: "b", Amount: 1, Metadata: map[string]string{"\xff": "v"}},
		xfer("t4", "a\xff", "b", 1),
		xfer("t5", "a", "b\xc3", 1),
		post("t6", "p\xff", "a", "b", 0),
		withRef(xfer("t7", "a", "ghost", 1), "\xff"),
	} {
		r := h.do(tr)
		if r.Result == OK || r.Status != StatusRejected {
			t.Fatalf("%s: %+v", tr.ID, r)
		}
		if p := CheckTransfer(&tr); p == nil {
			t.Fatalf("%s passes the edge check", tr.ID)
		}
	}
	// Valid UTF-8 beyond ASCII is fine.
	h.must(withRef(xfer("t8", "a", "b", 1), "café ✓"))
	h.flush()
	for _, e := range h.events[seq:] {
		if e.Type != TransferPosted {
			t.Fatalf("event %d %s %s reached the log", e.Seq, e.Type, e.Data.Result)
		}
	}
	if st := replayJSON(t, 0, 1, h.events); st.Head != h.st.Head {
		t.Fatal("replayed head differs")
	}
}
