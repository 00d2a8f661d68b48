package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"reflect"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"tally/ledger"
)

// TestKindsTable pins the registered kinds: their codes are written in
// Raft logs and their prefixes name keys in every replica's state, so
// neither may change. fsm/DESIGN.md shows the same table.
func TestKindsTable(t *testing.T) {
	want := []struct {
		code     Kind
		name     string
		prefixes []string
	}{
		{KindLedger, "ledger", []string{"a:", "e:", "ga:", "h:", "m:", "p:", "t:"}},
		{KindNode, "node", []string{"n:"}},
		{KindConsumers, "consumers", []string{"c:"}},
		{KindRestore, "restore", []string{"r:"}},
	}
	if len(kinds.list) != len(want) {
		t.Fatalf("%d kinds registered, want %d", len(kinds.list), len(want))
	}
	for i, w := range want {
		k := kinds.list[i]
		var prefixes []string
		for _, p := range k.prefixes {
			prefixes = append(prefixes, string(p))
		}
		if k.code != w.code || k.name != w.name || !reflect.DeepEqual(prefixes, w.prefixes) {
			t.Errorf("kind %d: %d %q %q, want %d %q %q", i, k.code, k.name, prefixes, w.code, w.name, w.prefixes)
		}
		if kinds.byCode[k.code] != k {
			t.Errorf("kind %q is not found by its code", k.name)
		}
	}
}

// TestMustTableRefuses: the table is built once, and a kind that would
// make dispatch or snapshots ambiguous stops the program there.
func TestMustTableRefuses(t *testing.T) {
	mk := func(code Kind, name string, prefixes ...string) *kind {
		k := &kind{code: code, name: name, apply: ledgerKind.apply, load: ledgerKind.load}
		for _, p := range prefixes {
			k.prefixes = append(k.prefixes, []byte(p))
		}
		return k
	}
	noApply := mk(5, "no apply", "x:")
	noApply.apply = nil
	noLoad := mk(5, "no load", "x:")
	noLoad.load = nil
	for _, tc := range []struct {
		name string
		ks   []*kind
		want string // "" : no panic
	}{
		{"the registered kinds", []*kind{ledgerKind, nodeKind, consumerKind, restoreKind}, ""},
		{"a new kind", []*kind{ledgerKind, nodeKind, consumerKind, restoreKind, mk(5, "other", "o:")}, ""},
		{"consumers beside a clashing kind", []*kind{consumerKind, mk(4, "other", "c")}, `key prefix "c" overlaps "c:" of "consumers"`},
		{"duplicate kind", []*kind{ledgerKind, nodeKind, ledgerKind}, "entry kind 1 registered twice"},
		{"duplicate code", []*kind{ledgerKind, nodeKind, mk(KindNode, "offsets", "o:")}, `entry kind 2 registered twice ("node" and "offsets")`},
		{"code 0", []*kind{mk(0, "zero", "z:")}, "has code 0"},
		{"same prefix", []*kind{nodeKind, mk(3, "offsets", "n:")}, `key prefix "n:" overlaps "n:" of "node"`},
		{"longer prefix", []*kind{ledgerKind, mk(3, "offsets", "m:offsets:")}, `key prefix "m:offsets:" overlaps "m:"`},
		{"shorter prefix", []*kind{mk(3, "offsets", "g"), ledgerKind}, `key prefix "ga:" overlaps "g"`},
		{"overlap within a kind", []*kind{mk(3, "offsets", "o:", "o:x")}, `overlaps "o:x" of "offsets"`},
		{"no prefix", []*kind{mk(3, "offsets")}, "lacks apply, load or key prefixes"},
		{"no apply", []*kind{noApply}, "lacks apply"},
		{"no load", []*kind{noLoad}, "lacks apply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tab *table
			msg := func() (msg string) {
				defer func() {
					if r := recover(); r != nil {
						msg = fmt.Sprint(r)
					}
				}()
				tab = mustTable(tc.ks...)
				return ""
			}()
			if tc.want == "" {
				if msg != "" {
					t.Fatalf("panic %q", msg)
				}
				for i := 1; i < len(tab.list); i++ {
					if tab.list[i-1].code >= tab.list[i].code {
						t.Fatalf("kinds not in code order: %d before %d", tab.list[i-1].code, tab.list[i].code)
					}
				}
				return
			}
			if !strings.HasPrefix(msg, "fsm: ") || !strings.Contains(msg, tc.want) {
				t.Fatalf("panic %q, want one with %q", msg, tc.want)
			}
		})
	}
}

// TestEnvelope decodes every form an entry has had on the Raft log. The
// bare forms are what logs written before the envelope hold; a bare
// ledger entry is always of codec version 1.
func TestEnvelope(t *testing.T) {
	node := mustHex(t, "d1 02 6e31 0d 31302e302e302e313a38303830") // n1 at 10.0.0.1:8080, before the envelope
	open := ledger.Entry{Time: t0, Commands: []ledger.Command{{Kind: ledger.CmdOpenAccounts,
		Accounts: []ledger.Account{{ID: "a", Currency: "USD"}}}}}
	bareLedger := bareV1(open)
	v2 := open.Encode(nil)
	for _, tc := range []struct {
		name    string
		data    []byte
		kind    Kind
		payload []byte
	}{
		{"bare ledger", bareLedger, KindLedger, bareLedger},
		{"enveloped ledger", append([]byte{0xE1, 0x01}, bareLedger...), KindLedger, bareLedger},
		{"enveloped ledger, version 2", append([]byte{0xE1, 0x01}, v2...), KindLedger, v2},
		{"bare node", node, KindNode, node[1:]},
		{"enveloped node", append([]byte{0xE1, 0x02}, node[1:]...), KindNode, node[1:]},
		{"EncodeNode", EncodeNode("n1", "10.0.0.1:8080"), KindNode, node[1:]},
		{"AppendHeader", enveloped(&open), KindLedger, v2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, p, err := decodeEnvelope(tc.data)
			if err != nil || k.code != tc.kind || !bytes.Equal(p, tc.payload) {
				t.Fatalf("decodeEnvelope(%x) = %v, %x, %v; want kind %d, %x", tc.data, k, p, err, tc.kind, tc.payload)
			}
		})
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOldEntriesApply applies a log in the forms written before the
// envelope (ledger entries of version 1) and the same log in the
// envelope: both give the same responses, state and node directory.
func TestOldEntriesApply(t *testing.T) {
	var bare, env [][]byte
	for i, d := range newGen(21).data(300) {
		k, p, err := decodeEnvelope(d)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		switch k.code {
		case KindLedger:
			e, err := ledger.DecodeEntry(p)
			if err != nil {
				t.Fatalf("entry %d: %v", i, err)
			}
			p = bareV1(e)
			bare = append(bare, p)
			env = append(env, AppendHeader(nil, KindLedger))
			env[len(env)-1] = append(env[len(env)-1], p...)
		case KindNode:
			bare = append(bare, append([]byte{0xD1}, p...))
			env = append(env, append(AppendHeader(nil, KindNode), p...))
		}
	}
	old, cur := open(t, t.TempDir()), open(t, t.TempDir())
	sameResponses(t, applyIn(old, logsOf(1, bare), 7), applyIn(cur, logsOf(1, env), 7))
	if s, c := status(t, old), status(t, cur); s != c {
		t.Fatalf("old forms: %+v, envelope: %+v", s, c)
	}
	if len(cur.Nodes()) == 0 || !maps.Equal(old.Nodes(), cur.Nodes()) {
		t.Fatalf("old forms: nodes %v, envelope: %v", old.Nodes(), cur.Nodes())
	}
	verify(t, old)
}

// kindCases has, for every registered kind, entries of that kind and a
// check of the state they leave. TestKindRoundTrip fails for a registered
// kind without one.
var kindCases = map[Kind]struct {
	entries [][]byte
	check   func(t *testing.T, f *FSM)
}{
	KindLedger: {
		entries: [][]byte{
			enveloped(&ledger.Entry{Time: t0, Commands: []ledger.Command{
				{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{{ID: "a", Currency: "USD"}, {ID: "b", Currency: "USD"}}},
				transfers(xfer("fund", ledger.World, "a", 100)),
			}}),
			bareV1(ledger.Entry{Time: t0 + 1, Commands: []ledger.Command{
				transfers(xfer("pay", "a", "b", 30), ledger.Transfer{ID: "hold", Debit: "a", Credit: "b", Amount: 5, Pending: true}),
			}}),
		},
		check: func(t *testing.T, f *FSM) {
			t.Helper()
			if a, _, err := f.Account(ledger.AccountKey("b", "USD")); err != nil || a.CreditsPosted != 30 || a.DebitsPending != 0 || a.CreditsPending != 5 {
				t.Fatalf("account b: %+v %v", a, err)
			}
			if r, _, err := f.Transfer("hold"); err != nil || !r.Open() {
				t.Fatalf("transfer hold: %+v %v", r, err)
			}
			if s := status(t, f); s.AppliedSeq == 0 || s.Pending != 1 {
				t.Fatalf("status %+v", s)
			}
			verify(t, f)
		},
	},
	KindConsumers: {
		entries: [][]byte{
			enveloped(&ledger.Entry{Time: t0, Commands: []ledger.Command{
				{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{{ID: "a", Currency: "USD"}, {ID: "b", Currency: "USD"}}},
			}}),
			EncodeOffset(OffsetChange{Op: OffsetSet, Name: "sink", Seq: 1}),
			EncodeOffset(OffsetChange{Op: OffsetSet, Name: "sink", Seq: 2}),
			EncodeOffset(OffsetChange{Op: OffsetResetEnd, Name: "late"}),
			EncodeOffset(OffsetChange{Op: OffsetSet, Name: "gone", Seq: 1}),
			EncodeOffset(OffsetChange{Op: OffsetDelete, Name: "gone"}),
			EncodeOffset(OffsetChange{Op: OffsetReset, Name: "again", Seq: 0}),
		},
		check: func(t *testing.T, f *FSM) {
			t.Helper()
			if got, want := f.Offsets(), map[string]uint64{"sink": 2, "late": 2, "again": 0}; !maps.Equal(got, want) {
				t.Fatalf("offsets %v, want %v", got, want)
			}
		},
	},
	KindRestore: {
		entries: restoreEntries(1, sourceLog(), 3),
		check: func(t *testing.T, f *FSM) {
			t.Helper()
			if f.Epoch() != 1 || f.rest.Restoring {
				t.Fatalf("epoch %d, restoring %v", f.Epoch(), f.rest.Restoring)
			}
			if a, _, err := f.Account(ledger.AccountKey("b", "USD")); err != nil || a.CreditsPosted != 30 || a.CreditsPending != 5 {
				t.Fatalf("account b: %+v %v", a, err)
			}
			verify(t, f)
		},
	},
	KindNode: {
		entries: [][]byte{EncodeNode("n1", "h1:80"), bareNodeEntry("n2", "h2:80"), EncodeNode("n3", "h3:80"), EncodeNode("n3", "")},
		check: func(t *testing.T, f *FSM) {
			t.Helper()
			if got, want := f.Nodes(), map[string]string{"n1": "h1:80", "n2": "h2:80"}; !maps.Equal(got, want) {
				t.Fatalf("nodes %v, want %v", got, want)
			}
		},
	},
}

// TestKindRoundTrip applies each kind's entries through Apply, then
// takes a snapshot, restores it into an empty FSM and reopens that: the
// kind's state is the same at each step, and its part of the snapshot
// holds its keys and no other kind's.
func TestKindRoundTrip(t *testing.T) {
	for _, k := range kinds.list {
		t.Run(k.name, func(t *testing.T) {
			tc, ok := kindCases[k.code]
			if !ok {
				t.Fatalf("kind %d (%s) has no round-trip case", k.code, k.name)
			}
			f := open(t, t.TempDir())
			for i, d := range tc.entries {
				f.Apply(&raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: d})
			}
			tc.check(t, f)
			want := status(t, f)

			stream := snapshotOf(t, f)
			parts := snapParts(t, stream)
			if len(parts[k.code]) == 0 {
				t.Fatalf("the snapshot has no keys in the %s part", k.name)
			}
			dir := t.TempDir()
			g := open(t, dir)
			if err := g.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
				t.Fatal(err)
			}
			tc.check(t, g)
			if s := status(t, g); s != want {
				t.Fatalf("restored %+v, want %+v", s, want)
			}
			if err := g.Close(); err != nil {
				t.Fatal(err)
			}
			g = open(t, dir)
			tc.check(t, g)
			if !bytes.Equal(snapshotOf(t, g), stream) {
				t.Fatal("a snapshot of the restored state differs from the one restored")
			}
		})
	}
}

// TestSnapshotParts: after a random log, every key in Badger belongs to
// exactly one kind and is in that kind's part of the snapshot, once.
func TestSnapshotParts(t *testing.T) {
	dir := t.TempDir()
	f := open(t, dir)
	applyIn(f, logsOf(1, newGen(22).data(200)), 9)
	parts := snapParts(t, snapshotOf(t, f))
	inParts := map[string]Kind{}
	for code, keys := range parts {
		for _, k := range keys {
			if _, dup := inParts[k]; dup {
				t.Fatalf("key %q twice in the snapshot", k)
			}
			inParts[k] = code
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	n := 0
	withBadger(t, dir, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			key := it.Item().KeyCopy(nil)
			var owners []Kind
			for _, k := range kinds.list {
				if k.owns(key) {
					owners = append(owners, k.code)
				}
			}
			if len(owners) != 1 || inParts[string(key)] != owners[0] {
				t.Errorf("key %q: owned by %v, in the part of %d", key, owners, inParts[string(key)])
			}
			n++
		}
		return nil
	})
	if n != len(inParts) {
		t.Fatalf("%d keys in Badger, %d in the snapshot", n, len(inParts))
	}
}

// TestRestoreV1Snapshot restores a stream in the format written before
// snapshots had parts: every key, in key order.
func TestRestoreV1Snapshot(t *testing.T) {
	src := open(t, t.TempDir())
	applyIn(src, logsOf(1, newGen(23).data(120)), 16)
	g := open(t, t.TempDir())
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotV1(t, src)))); err != nil {
		t.Fatal(err)
	}
	if s, w := status(t, g), status(t, src); s != w {
		t.Fatalf("restored %+v, want %+v", s, w)
	}
	if len(g.Nodes()) == 0 || !maps.Equal(g.Nodes(), src.Nodes()) {
		t.Fatalf("restored nodes %v, want %v", g.Nodes(), src.Nodes())
	}
	verify(t, g)
	if !bytes.Equal(snapshotOf(t, g), snapshotOf(t, src)) {
		t.Fatal("the restored state snapshots differently from its source")
	}
}

// snapshotV1 writes f's state as the snapshot format before parts did:
// "TALLYSNAP1\n", every key and value in key order, a zero key length.
func snapshotV1(t *testing.T, f *FSM) []byte {
	t.Helper()
	rs, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Release()
	var out bytes.Buffer
	out.WriteString(snapMagicV1)
	it := rs.(*snapshot).txn.NewIterator(badger.IteratorOptions{PrefetchValues: true})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			t.Fatal(err)
		}
		out.Write(snapItem(it.Item().Key(), v))
	}
	out.WriteByte(0)
	return out.Bytes()
}

// snapItem is one record of a snapshot stream.
func snapItem(k, v []byte) []byte {
	b := binary.AppendUvarint(nil, uint64(len(k)))
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(append(b, k...), v...)
}

// snapParts reads a snapshot stream of the current format: the keys of
// each kind's part.
func snapParts(t *testing.T, stream []byte) map[Kind][]string {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(stream))
	magic := make([]byte, len(snapMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapMagic {
		t.Fatalf("magic %q, %v", magic, err)
	}
	out := map[Kind][]string{}
	for {
		code, err := br.ReadByte()
		if err != nil {
			t.Fatal(err)
		}
		if code == 0 {
			break
		}
		out[Kind(code)] = []string{}
		for {
			kl, err := binary.ReadUvarint(br)
			if err != nil {
				t.Fatal(err)
			}
			if kl == 0 {
				break
			}
			vl, err := binary.ReadUvarint(br)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, kl+vl)
			if _, err := io.ReadFull(br, buf); err != nil {
				t.Fatal(err)
			}
			out[Kind(code)] = append(out[Kind(code)], string(buf[:kl]))
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("bytes after the end of the snapshot (%v)", err)
	}
	return out
}
