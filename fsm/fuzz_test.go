package fsm

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"tally/ledger"
)

// FuzzDecodeNode: decodeNode never panics, accepts only what names a node,
// and what it accepts encodes back to the same node.
func FuzzDecodeNode(f *testing.F) {
	f.Add(appendNode(nil, "n1", "10.0.0.1:8080"))
	f.Add(appendNode(nil, "n1", ""))
	f.Add(appendNode(nil, strings.Repeat("n", 256), "x"))
	f.Add([]byte{0x80, 0x01})
	f.Add([]byte{})
	f.Add([]byte{ledger.EntryVersion, 0, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		id, addr, err := decodeNode(p)
		if err != nil {
			return
		}
		if id == "" || len(id) > 256 || len(addr) > 256 {
			t.Fatalf("decodeNode(%q) accepted id %q addr %q", p, id, addr)
		}
		_, payload, err := decodeEnvelope(EncodeNode(id, addr))
		if err != nil {
			t.Fatal(err)
		}
		id2, addr2, err := decodeNode(payload)
		if err != nil || id2 != id || addr2 != addr {
			t.Fatalf("re-encoding %q %q decodes to %q %q, %v", id, addr, id2, addr2, err)
		}
	})
}

// FuzzApplyEntry hands arbitrary bytes to the FSM as a command entry. It
// must either apply them or panic with the FSM's documented message for an
// undecodable entry ("fsm: shard S: entry N: ..."), having changed
// nothing; any other panic is a bug that would stop every replica. Applied
// entries must leave a hash chain that replays.
func FuzzApplyEntry(f *testing.F) {
	g := newGen(14)
	for _, d := range g.data(40) {
		f.Add(d)
	}
	f.Add(EncodeNode("n1", "h"))
	f.Add(bareNodeEntry("n2", "h"))
	f.Add([]byte{bareNode, 3})
	f.Add([]byte{})
	f.Add([]byte{ledger.EntryVersion})
	f.Add([]byte{envelopeV1})
	f.Add(AppendHeader(nil, 3))
	f.Add(EncodeOffset(OffsetChange{Op: OffsetSet, Name: "sink", Seq: 1}))
	f.Add(EncodeOffset(OffsetChange{Op: OffsetResetEnd, Name: "sink"}))
	f.Add(enveloped(&ledger.Entry{Time: t0}))
	big := ledger.Entry{Time: 1 << 62, Commands: []ledger.Command{transfers(
		ledger.Transfer{ID: "p", Debit: ledger.World, Credit: "acct-1", Amount: 1 << 62, Pending: true, TimeoutSeconds: ledger.MaxTimeoutSeconds},
		ledger.Transfer{ID: "q", Debit: "acct-1", Credit: ledger.World, Amount: -1, Reference: "\xff"})}}
	f.Add(bareV1(big))
	f.Add(enveloped(&big))

	fsm := open(f, f.TempDir())
	var applied int
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, seq := fsm.Applied()
		l := &raft.Log{Index: idx + 1, Term: 1, Type: raft.LogCommand, Data: data}
		var resp interface{}
		msg := func() (msg string) {
			defer func() {
				if r := recover(); r != nil {
					msg = fmt.Sprintf("%T %v", r, r)
					if s, ok := r.(string); ok {
						msg = s
					}
				}
			}()
			resp = fsm.ApplyBatch([]*raft.Log{l})[0]
			return ""
		}()
		if msg != "" {
			prefix := fmt.Sprintf("fsm: shard 0: entry %d: ", l.Index)
			if !strings.HasPrefix(msg, prefix) || !(strings.Contains(msg, ledger.ErrDecode.Error()) ||
				strings.Contains(msg, "node entry") || strings.Contains(msg, errOffsetEntry.Error()) ||
				strings.Contains(msg, errEnvelope.Error())) {
				t.Fatalf("entry %x: panic %q is not the undecodable-entry panic", data, msg)
			}
			if i, s := fsm.Applied(); i != idx || s != seq {
				t.Fatalf("entry %x: a rejected entry moved the state from %d/%d to %d/%d", data, idx, seq, i, s)
			}
			return
		}
		if i, _ := fsm.Applied(); i != l.Index {
			t.Fatalf("entry %x: applied index %d, want %d", data, i, l.Index)
		}
		if e, err := decodeLedger(data); err == nil {
			r, ok := resp.(*Response)
			if !ok || len(r.Results) != len(e.Commands) {
				t.Fatalf("entry %x: response %s for %d commands", data, show(resp), len(e.Commands))
			}
		} else if _, ok := resp.(*OffsetResponse); !ok && resp != nil {
			t.Fatalf("node entry %x answered %s", data, show(resp))
		}
		// Every new event must hash to itself when read back, or verify
		// (and replicas that restore it) would disagree with the live state.
		_, now := fsm.Applied()
		evs, err := fsm.Events(seq, MaxPage)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(evs)) != min(now-seq, MaxPage) {
			t.Fatalf("entry %x: %d events read back, seq moved %d", data, len(evs), now-seq)
		}
		for _, e := range evs {
			if e.ComputeHash() != e.Hash {
				t.Fatalf("entry %x: event %d read back does not hash to its stored hash", data, e.Seq)
			}
		}
		if applied++; applied%64 == 0 {
			if _, err := fsm.Verify(t.Context()); err != nil {
				t.Fatalf("after entry %x: %v", data, err)
			}
		}
	})
}
