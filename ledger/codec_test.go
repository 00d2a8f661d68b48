package ledger

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sampleEntry uses every field and flag of the encoding.
func sampleEntry() Entry {
	return Entry{Time: 1_700_000_000_123_456_789, Commands: []Command{
		{Kind: CmdOpenAccounts, Accounts: []Account{
			{ID: "alice", Currency: "USD", AllowNegative: true, Metadata: map[string]string{"kyc": "ok", "tier": "2", "note": "café ✓"}},
			{ID: "bob{eu}", Currency: "EUR"},
		}},
		{Kind: CmdCloseAccount, AccountID: "carol"},
		{Kind: CmdTransfers, Transfers: []Transfer{
			{ID: "t1", Debit: "alice", Credit: "bob{eu}", Amount: 2500, Pending: true, TimeoutSeconds: 30,
				Linked: true, Reference: "invoice 7", Metadata: map[string]string{"order": "42", "": "empty key survives the codec"}},
			{ID: "t2", Debit: "alice", Credit: "bob{eu}", Amount: 100, PostPendingID: "t1", Linked: true},
			{ID: "t3", Debit: "alice", Credit: "bob{eu}", VoidPendingID: "t1"},
			{ID: "t4", Debit: World, Credit: "alice", Amount: math.MaxInt64, Pending: true},
			{ID: "t5", Debit: "alice", Credit: World, Amount: math.MinInt64, TimeoutSeconds: -1, Linked: true},
			{ID: "", Debit: "", Credit: "", Reference: strings.Repeat("r", maxStr)},
		}},
		{Kind: CmdTransfers, Transfers: []Transfer{}},
		{Kind: CmdOpenAccounts, Accounts: []Account{}},
	}}
}

func TestEntryRoundTrip(t *testing.T) {
	for _, e := range []Entry{
		sampleEntry(),
		{Time: 0, Commands: []Command{}},
		{Time: -5, Commands: []Command{{Kind: CmdCloseAccount}}},
		{Time: math.MaxInt64, Commands: []Command{{Kind: CmdTransfers, Transfers: []Transfer{{ID: "x", Amount: 1}}}}},
	} {
		b := e.Encode(nil)
		if b[0] != EntryVersion {
			t.Fatalf("first byte %d", b[0])
		}
		got, err := DecodeEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		want := e
		want.Version = EntryVersion
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
		}
		// A version-1 entry has the same layout and keeps its version.
		v1 := e
		v1.Version = 1
		if b1 := v1.Encode(nil); b1[0] != 1 || !bytes.Equal(b1[1:], b[1:]) {
			t.Fatalf("version 1 encodes as % x", b1)
		} else if got, err := DecodeEntry(b1); err != nil || !reflect.DeepEqual(got, v1) {
			t.Fatalf("version 1 round trip: %+v, %v", got, err)
		}
		// Encode appends and is deterministic, whatever the map order.
		for i := 0; i < 5; i++ {
			if c := e.Encode([]byte("xy")); string(c[:2]) != "xy" || !bytes.Equal(c[2:], b) {
				t.Fatal("Encode is not deterministic or does not append")
			}
		}
	}
}

// TestEntryEncodingIsStable pins the wire format: entries already in a
// Raft log must decode the same after an upgrade.
func TestEntryEncodingIsStable(t *testing.T) {
	e := Entry{Time: sec(1000), Commands: []Command{
		{Kind: CmdOpenAccounts, Accounts: []Account{{ID: "a", Currency: "USD", AllowNegative: true, Metadata: map[string]string{"k": "v"}}}},
		{Kind: CmdCloseAccount, AccountID: "a"},
		{Kind: CmdTransfers, Transfers: []Transfer{{ID: "t", Debit: "a", Credit: "b", Amount: 5, Pending: true, Linked: true,
			TimeoutSeconds: 9, PostPendingID: "p", VoidPendingID: "v", Reference: "r", Metadata: map[string]string{"x": "y"}}}},
	}}
	// version, time (zigzag varint of 1e12 ns), 3 commands;
	// open: kind, 1 account, "a", "USD", allow_negative, 1 key "k"="v";
	// close: kind, "a";
	// transfers: kind, 1 transfer, "t", "a", "b", amount 5 (zigzag 10),
	// flags pending|linked, timeout 9 (zigzag 18), "p", "v", "r", "x"="y".
	// Version 2 differs from version 1 only in its first byte.
	const body = "80c0a8ca9a3a" + "03" +
		"01" + "01" + "0161" + "03555344" + "01" + "01016b0176" +
		"02" + "0161" +
		"03" + "01" + "0174" + "0161" + "0162" + "0a" + "03" + "12" + "0170" + "0176" + "0172" + "01" + "01780179"
	for _, v := range []byte{1, 2} {
		e.Version = v
		want := hex.EncodeToString([]byte{v}) + body
		if got := hex.EncodeToString(e.Encode(nil)); got != want {
			t.Fatalf("version %d encoding changed:\n got %s\nwant %s", v, got, want)
		}
		got, err := DecodeEntry(mustHex(t, want))
		if err != nil || !reflect.DeepEqual(got, e) {
			t.Fatalf("pinned bytes of version %d decode to %+v, %v", v, got, err)
		}
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeEntryRejects(t *testing.T) {
	ve := sampleEntry()
	valid := ve.Encode(nil)
	// Every proper prefix of a valid entry is an error, never a panic.
	for n := 0; n < len(valid); n++ {
		if _, err := DecodeEntry(valid[:n]); !errors.Is(err, ErrDecode) {
			t.Fatalf("prefix of %d bytes: %v", n, err)
		}
	}
	se := Entry{Commands: []Command{{Kind: CmdTransfers, Transfers: []Transfer{{ID: "t", Amount: 1}}}}}
	small := se.Encode(nil)
	// small: version, time, count, kind, count, then the transfer: id,
	// debit, credit, amount, flags ...
	flags := 1 + 1 + 1 + 1 + 1 + 2 + 1 + 1 + 1
	for _, tc := range []struct {
		name string
		p    []byte
	}{
		{"empty", nil},
		{"version 0", []byte{0, 0, 0}},
		{"version 3", append([]byte{3}, small[1:]...)},
		{"trailing byte", append(append([]byte(nil), small...), 0)},
		{"unknown kind", []byte{1, 0, 1, 9}},
		{"kind 0", []byte{1, 0, 1, 0}},
		{"bad bool", []byte{1, 0, 1, 1, 1, 1, 'a', 1, 'U', 2, 0}},
		{"bad flags", func() []byte { p := append([]byte(nil), small...); p[flags] = 4; return p }()},
		{"too many commands", append([]byte{1, 0, 0xff, 0x3f}, make([]byte, 9000)...)},
		{"count beyond input", []byte{1, 0, 100, 3, 0}},
		{"transfer count beyond input", []byte{1, 0, 1, 3, 0xfe, 0x3f}},
		{"too many metadata keys", []byte{1, 0, 1, 1, 1, 1, 'a', 1, 'U', 0, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"string too long", append([]byte{1, 0, 1, 2, 0x81, 0x20}, make([]byte, maxStr+1)...)},
		{"string beyond input", []byte{1, 0, 1, 2, 5, 'a'}},
		{"varint overflow", []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0}},
	} {
		if _, err := DecodeEntry(tc.p); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// A forged count cannot make the decoder allocate for it.
	forged := []byte{1, 0, 1, 3, 0xfe, 0x3f, 0}
	allocs := testing.AllocsPerRun(100, func() { _, _ = DecodeEntry(forged) })
	if allocs > 10 {
		t.Fatalf("decoding a forged count allocates %v times", allocs)
	}
}

// FuzzDecodeEntry: decoding arbitrary bytes never panics; whatever
// decodes re-encodes, canonically and no longer than the input, to bytes
// that decode to the same value.
func FuzzDecodeEntry(f *testing.F) {
	for _, e := range fuzzSeeds() {
		f.Add(e.Encode(nil))
		e.Version = 1
		f.Add(e.Encode(nil))
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{1, 0x80, 0x00, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		e, err := DecodeEntry(p)
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("error does not wrap ErrDecode: %v", err)
			}
			return
		}
		b := e.Encode(nil)
		if len(b) > len(p) {
			t.Fatalf("%d bytes re-encode to %d", len(p), len(b))
		}
		again, err := DecodeEntry(b)
		if err != nil {
			t.Fatalf("re-encoding does not decode: %v", err)
		}
		if !reflect.DeepEqual(e, again) {
			t.Fatalf("round trip differs:\n%+v\n%+v", e, again)
		}
		if !bytes.Equal(again.Encode(nil), b) {
			t.Fatal("encoding is not canonical")
		}
	})
}

// fuzzSeeds are entries over the accounts fuzzState opens: b, c, d (USD,
// b may go negative), f (EUR), x (another shard's), and the open pending
// transfer p (b to c, 30 s timeout).
func fuzzSeeds() []Entry {
	at := sec(2000)
	return []Entry{
		sampleEntry(),
		{Time: at, Commands: []Command{{Kind: CmdTransfers, Transfers: []Transfer{
			xfer("t1", "b", "c", 10), hold("t2", "c", "d", 5, 3), linked(post("t3", "p", "b", "c", 0)), void("t4", "t2", "c", "d"),
			deposit("t5", "d", 7), withdraw("t6", "d", 8), xfer("t7", "b", "f", 1), xfer("t8", "b", "x", 1), xfer("t9", "x", "b", 1),
		}}}},
		{Time: at, Commands: []Command{
			{Kind: CmdTransfers, Transfers: []Transfer{linked(xfer("t1", "b", "c", math.MaxInt64)), linked(xfer("t2", "c", "d", 1)), xfer("t3", "d", "b", 2)}},
			{Kind: CmdCloseAccount, AccountID: "c"},
			{Kind: CmdTransfers, Transfers: []Transfer{post("t4", "p", "b", "c", 3), xfer("t1", "b", "c", math.MaxInt64), void("t5", "p", "b", "c")}},
		}},
		{Time: math.MaxInt64 - 1, Commands: []Command{{Kind: CmdTransfers, Transfers: []Transfer{hold("t1", "b", "c", 1, MaxTimeoutSeconds), linked(hold("t2", "b", "d", 2, 1)), xfer("t3", "d", "c", 1)}}}},
		{Time: at, Commands: []Command{
			{Kind: CmdOpenAccounts, Accounts: []Account{{ID: "g", Currency: "USD"}, {ID: "b", Currency: "EUR"}, {ID: "x", Currency: "USD"}}},
			{Kind: CmdTransfers, Transfers: []Transfer{deposit("t1", "g", 4), linked(xfer("t2", "g", "b", 4)), xfer("t3", "b", "g", 9)}},
		}},
	}
}

// fuzzState is shard 0 of two with a few accounts and an open pending
// transfer, for entries to act on.
func fuzzState(t testing.TB) *harness {
	h := newHarness(t, 0, 2)
	for id, shard := range map[string]int{"b": 0, "c": 0, "d": 0, "f": 0, "g": 0, "x": 1} {
		if ShardOf(id, 2) != shard {
			t.Fatalf("%s is on shard %d", id, ShardOf(id, 2))
		}
	}
	h.open("b", "USD", true)
	h.open("c", "USD", false)
	h.open("d", "USD", false)
	h.open("f", "EUR", false)
	h.must(deposit("d1", "c", 100), deposit("d2", "d", 100), deposit("d3", "f", 100), hold("p", "b", "c", 50, 30))
	h.flush()
	return h
}

// FuzzExecute feeds whatever decodes into Execute, as a replica applies a
// Raft entry: it must never panic, the books must balance after every
// command, every item gets a result, and the log must replay, directly
// and from JSON, to the same state.
func FuzzExecute(f *testing.F) {
	for _, e := range fuzzSeeds() {
		f.Add(e.Encode(nil))
		e.Version = 1
		f.Add(e.Encode(nil))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		e, err := DecodeEntry(p)
		if err != nil {
			return
		}
		h := fuzzState(t)
		h.version = e.Version // the entry's events are hashed as its version says
		h.begin(e.Time)
		for i := range e.Commands {
			c := &e.Commands[i]
			res := h.exec(c)
			want := map[Kind]int{CmdOpenAccounts: len(c.Accounts), CmdCloseAccount: 1, CmdTransfers: len(c.Transfers)}[c.Kind]
			if len(res) != want {
				t.Fatalf("command %d: %d results for %d items", i, len(res), want)
			}
			for _, r := range res {
				if r.Result == "" || r.Shard != 0 {
					t.Fatalf("command %d: result %+v", i, r)
				}
			}
		}
		h.flush()
		// Let every hold expire, at the latest log time there is.
		at := h.st.Time + Time(time.Hour)
		if at < h.st.Time {
			at = math.MaxInt64
		}
		h.begin(at)
		h.flush()
		direct := NewState(0, 2, nil)
		for _, ev := range h.events {
			if err := direct.Replay(ev); err != nil {
				t.Fatalf("replay: %v", err)
			}
		}
		viaJSON := replayJSON(t, 0, 2, h.events)
		for _, st := range []*State{direct, viaJSON} {
			if st.Seq != h.st.Seq || st.Head != h.st.Head || st.StateHash() != h.st.StateHash() {
				t.Fatalf("replay ends at seq %d head %s, live seq %d head %s", st.Seq, st.Head, h.st.Seq, h.st.Head)
			}
		}
	})
}
