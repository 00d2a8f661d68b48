package fsm

import (
	"encoding/json"
	"fmt"
	"testing"
)

func TestTail(t *testing.T) {
	var tl tail
	if _, ok := tl.read(0, 10); ok {
		t.Fatal("an unset tail answered")
	}
	tl.reset(100)
	if out, ok := tl.read(100, 10); !ok || len(out) != 0 {
		t.Fatalf("caught up: %v %v", out, ok)
	}
	var raw [][]byte
	for seq := 101; seq <= 100+tailLen+5; seq++ {
		raw = append(raw, []byte(fmt.Sprint(seq)))
	}
	tl.add(raw)
	last := uint64(100 + tailLen + 5)
	tests := []struct {
		after uint64
		limit int
		ok    bool
		first string
		n     int
	}{
		{after: 100, limit: 10, ok: false}, // fell out of the ring: storage
		{after: 105, limit: 3, ok: true, first: "106", n: 3},
		{after: last - 2, limit: 10, ok: true, first: fmt.Sprint(last - 1), n: 2},
		{after: last, limit: 10, ok: true, n: 0},
		{after: last + 1, limit: 10, ok: false}, // beyond what is applied
	}
	for _, tt := range tests {
		out, ok := tl.read(tt.after, tt.limit)
		if ok != tt.ok || len(out) != tt.n || (tt.n > 0 && string(out[0].stored) != tt.first) {
			t.Errorf("read(%d, %d): %d events (first %q), ok %v; want %d (first %q), ok %v",
				tt.after, tt.limit, len(out), firstOf(out), ok, tt.n, tt.first, tt.ok)
		}
		for j := 1; j < len(out); j++ {
			if seq := tt.after + uint64(j) + 1; fmt.Sprint(seq) != string(out[j].stored) || out[j].seq != seq {
				t.Fatalf("read(%d): event %d is %s (seq %d)", tt.after, j, out[j].stored, out[j].seq)
			}
		}
	}
}

func firstOf(out []*storedEvent) string {
	if len(out) == 0 {
		return ""
	}
	return string(out[0].stored)
}

// TestEventsRawFromTailAndStorage: the events a stream reads are the
// stored ones, whether the tail or Badger serves them.
func TestEventsRawFromTailAndStorage(t *testing.T) {
	f := open(t, t.TempDir())
	g := newGen(7)
	applyIn(f, logsOf(1, g.data(300)), 7)
	_, seq := f.Applied()
	var fromTail [][]byte
	for after := uint64(0); after < seq; {
		page, err := f.EventsRaw(after, 100)
		if err != nil || len(page) == 0 {
			t.Fatalf("EventsRaw(%d): %d events, %v", after, len(page), err)
		}
		fromTail = append(fromTail, page...)
		after += uint64(len(page))
	}
	stored := map[uint64]string{}
	for after := uint64(0); after < seq; {
		page, err := f.Events(after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			stored[e.Seq] = e.Hash.String()
		}
		after = page[len(page)-1].Seq
	}
	if uint64(len(fromTail)) != seq {
		t.Fatalf("%d events read, %d applied", len(fromTail), seq)
	}
	for i, raw := range fromTail {
		var e struct {
			Seq  uint64 `json:"seq"`
			Hash string `json:"hash"`
		}
		if err := json.Unmarshal(raw, &e); err != nil || e.Seq != uint64(i+1) || stored[e.Seq] != e.Hash {
			t.Fatalf("event %d: seq %d hash %s, stored %s (%v)", i+1, e.Seq, e.Hash, stored[e.Seq], err)
		}
	}
}
