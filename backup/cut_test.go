package backup

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"tally/ledger"
)

// fakeLog is a shard's events and the seqs of its records.
type fakeLog struct {
	events  []ledger.Event // events[i] has seq i+1
	records map[string]uint64
}

func (l *fakeLog) Event(seq uint64) (ledger.Event, error) {
	if seq == 0 || seq > uint64(len(l.events)) {
		return ledger.Event{}, fmt.Errorf("no event %d", seq)
	}
	return l.events[seq-1], nil
}

func (l *fakeLog) RecordSeq(id string) (uint64, bool, error) {
	s, ok := l.records[id]
	return s, ok, nil
}

// sagaWorld builds shards' logs from steps, each one event at the next
// second of log time.
type sagaWorld struct {
	logs []*fakeLog
	now  time.Time
}

func newWorld(n int) *sagaWorld {
	w := &sagaWorld{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	for range n {
		w.logs = append(w.logs, &fakeLog{records: map[string]uint64{}})
	}
	return w
}

func (w *sagaWorld) add(sh int, typ ledger.EventType, d ledger.Data, rec string) uint64 {
	l := w.logs[sh]
	w.now = w.now.Add(time.Millisecond)
	seq := uint64(len(l.events) + 1)
	l.events = append(l.events, ledger.Event{Shard: sh, Seq: seq, Time: ledger.Time(w.now.UnixNano()), Type: typ, Data: d})
	if rec != "" {
		l.records[rec] = seq
	}
	return seq
}

func (w *sagaWorld) plain(sh int) uint64 {
	return w.add(sh, ledger.TransferPosted, ledger.Data{}, "")
}

func (w *sagaWorld) hold(src, dst int, id string) uint64 {
	return w.add(src, ledger.SagaDebitHeld, ledger.Data{Transfer: &ledger.Transfer{ID: id}, Peer: &dst}, id)
}

func (w *sagaWorld) credit(src, dst int, id string) uint64 {
	return w.add(dst, ledger.SagaCredited, ledger.Data{Transfer: &ledger.Transfer{ID: id}, Peer: &src}, ledger.SagaKey(src, id))
}

func (w *sagaWorld) reject(src, dst int, id string) uint64 {
	return w.add(dst, ledger.SagaCreditRejected, ledger.Data{Transfer: &ledger.Transfer{ID: id}, Peer: &src, Result: "x"}, ledger.SagaKey(src, id))
}

func (w *sagaWorld) end(src, dst int, id string, typ ledger.EventType) uint64 {
	return w.add(src, typ, ledger.Data{PendingID: id, Peer: &dst}, "")
}

func (w *sagaWorld) cut(t *testing.T, heads ...uint64) []uint64 {
	t.Helper()
	logs := make([]Log, len(w.logs))
	for i, l := range w.logs {
		logs[i] = l
	}
	got, err := Cut(logs, heads)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestCutKeepsSagasWhole(t *testing.T) {
	tests := []struct {
		name  string
		build func(w *sagaWorld) (heads, want []uint64)
	}{
		{"no sagas", func(w *sagaWorld) ([]uint64, []uint64) {
			w.plain(0)
			w.plain(1)
			return []uint64{1, 1}, []uint64{1, 1}
		}},
		{"credit inside, hold outside", func(w *sagaWorld) ([]uint64, []uint64) {
			w.plain(0)
			w.plain(1)
			w.hold(0, 1, "x") // seq 2 on shard 0, beyond its head
			w.credit(0, 1, "x")
			w.plain(1)
			return []uint64{1, 3}, []uint64{1, 1}
		}},
		{"hold beyond the replica's applied seq", func(w *sagaWorld) ([]uint64, []uint64) {
			w.plain(0)
			w.credit(0, 1, "x") // shard 0's replica has not applied the hold
			return []uint64{1, 1}, []uint64{1, 0}
		}},
		{"completion inside, decision outside", func(w *sagaWorld) ([]uint64, []uint64) {
			w.hold(0, 1, "x")
			w.plain(1)
			w.credit(0, 1, "x")
			w.end(0, 1, "x", ledger.SagaCompleted)
			w.plain(0)
			return []uint64{3, 1}, []uint64{1, 1}
		}},
		{"abort inside, rejection outside", func(w *sagaWorld) ([]uint64, []uint64) {
			w.hold(0, 1, "x")
			w.reject(0, 1, "x")
			w.end(0, 1, "x", ledger.SagaAborted)
			return []uint64{2, 0}, []uint64{1, 0}
		}},
		{"in flight: hold inside, credit outside", func(w *sagaWorld) ([]uint64, []uint64) {
			w.plain(1)
			w.hold(0, 1, "x")
			w.credit(0, 1, "x")
			return []uint64{1, 1}, []uint64{1, 1}
		}},
		{"a chain across three shards", func(w *sagaWorld) ([]uint64, []uint64) {
			w.plain(0)
			w.plain(1)
			w.plain(2)
			w.hold(0, 1, "a")   // 0:2
			w.credit(0, 1, "a") // 1:2
			w.hold(1, 2, "b")   // 1:3
			w.credit(1, 2, "b") // 2:2
			w.end(0, 1, "a", ledger.SagaCompleted)
			w.end(1, 2, "b", ledger.SagaCompleted)
			// Shard 0 cut before its hold: a's credit leaves shard 1, and
			// with it b's hold (later), so b's credit leaves shard 2.
			return []uint64{1, 4, 2}, []uint64{1, 1, 1}
		}},
		{"whole sagas stay", func(w *sagaWorld) ([]uint64, []uint64) {
			for i := range 5 {
				id := fmt.Sprint("s", i)
				w.hold(i%2, 1-i%2, id)
				w.credit(i%2, 1-i%2, id)
				w.end(i%2, 1-i%2, id, ledger.SagaCompleted)
			}
			return []uint64{8, 7}, []uint64{8, 7}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(3)
			heads, want := tc.build(w)
			w.logs = w.logs[:len(heads)]
			if got := w.cut(t, heads...); !slices.Equal(got, want) {
				t.Fatalf("cut of %v = %v, want %v", heads, got, want)
			}
		})
	}
}

// TestCutRandom runs random saga traffic, takes heads at random points
// of it, and checks the rule on every event inside the cut that Cut
// returns.
func TestCutRandom(t *testing.T) {
	for seed := range 50 {
		w := newWorld(3)
		type open struct {
			id       string
			src, dst int
			decided  bool
		}
		var live []*open
		rnd := uint64(seed*7919 + 1)
		next := func(n int) int { rnd = rnd*6364136223846793005 + 1442695040888963407; return int(rnd>>33) % n }
		for i := 0; i < 300; i++ {
			switch next(4) {
			case 0:
				src := next(3)
				dst := (src + 1 + next(2)) % 3
				id := fmt.Sprintf("t%d", i)
				w.hold(src, dst, id)
				live = append(live, &open{id: id, src: src, dst: dst})
			case 1, 2:
				if len(live) == 0 {
					continue
				}
				k := next(len(live))
				o := live[k]
				if !o.decided {
					if next(4) == 0 {
						w.reject(o.src, o.dst, o.id)
					} else {
						w.credit(o.src, o.dst, o.id)
					}
					o.decided = true
				} else {
					w.end(o.src, o.dst, o.id, ledger.SagaCompleted)
					live = append(live[:k], live[k+1:]...)
				}
			default:
				w.plain(next(3))
			}
		}
		heads := make([]uint64, 3)
		for i, l := range w.logs {
			heads[i] = uint64(len(l.events)) - uint64(next(10))
		}
		cut := w.cut(t, heads...)
		for i, l := range w.logs {
			if cut[i] > heads[i] {
				t.Fatalf("seed %d: cut %v above heads %v", seed, cut, heads)
			}
			for seq := uint64(1); seq <= cut[i]; seq++ {
				e := l.events[seq-1]
				logs := []Log{w.logs[0], w.logs[1], w.logs[2]}
				if ok, err := whole(logs, cut, i, &e); err != nil || !ok {
					t.Fatalf("seed %d: cut %v (heads %v): shard %d event %d (%s) breaks the rule", seed, cut, heads, i, seq, e.Type)
				}
			}
		}
	}
}
