package fsm

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"

	"tally/ledger"
)

// tailLen is how many of the newest applied events a shard keeps in
// memory for the streams that follow its log: about a megabyte or two,
// shared by every stream.
const tailLen = 2048

// tail holds the newest applied events. Streams that follow the log read
// new events from it instead of each opening a Badger read per applied
// batch, so many followers cost the write path little; a stream further
// behind reads Badger as before. It is filled when a batch is published,
// before the applied seq moves, so a reader woken by the new seq finds its
// events here.
type tail struct {
	mu   sync.RWMutex
	ring []*storedEvent
	head int    // index of the oldest event in ring
	n    int    // events held
	last uint64 // seq of the newest event held; the oldest is last-n+1
}

// storedEvent is one event as the log stores it, and its JSON as the API
// serves it: made by the first reader that asks, then shared by the
// others, so that the streams of many readers encode each event once and
// the apply path never does.
type storedEvent struct {
	seq    uint64
	stored []byte
	js     atomic.Pointer[[]byte]
}

// decode returns the event.
func (s *storedEvent) decode() (ledger.Event, error) {
	var e ledger.Event
	if err := ledger.DecodeEvent(s.stored, &e); err != nil {
		return e, fmt.Errorf("event %d: %w", s.seq, err)
	}
	return e, nil
}

// json returns the event's JSON: the stored bytes of a JSON event, the
// encoding of the decoded event for a binary one.
func (s *storedEvent) json() ([]byte, error) {
	if len(s.stored) > 0 && s.stored[0] == '{' {
		return s.stored, nil
	}
	if p := s.js.Load(); p != nil {
		return *p, nil
	}
	e, err := s.decode()
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(&e)
	if err != nil {
		return nil, fmt.Errorf("event %d: %w", s.seq, err)
	}
	s.js.Store(&b)
	return b, nil
}

// reset empties the tail; seq is the applied seq it continues from.
func (t *tail) reset(seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ring == nil {
		t.ring = make([]*storedEvent, tailLen)
	}
	clear(t.ring)
	t.head, t.n, t.last = 0, 0, seq
}

// add appends the events with seqs last+1, last+2, ..., given in their
// stored form.
func (t *tail) add(raw [][]byte) {
	if len(raw) == 0 {
		return
	}
	evs := make([]storedEvent, len(raw))
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, r := range raw {
		i := (t.head + t.n) % len(t.ring)
		t.last++
		evs[k].seq, evs[k].stored = t.last, r
		t.ring[i] = &evs[k]
		if t.n < len(t.ring) {
			t.n++
		} else {
			t.head = (t.head + 1) % len(t.ring)
		}
	}
}

// read returns up to limit events after seq after when the tail holds
// them all (ok false: read storage). The events are shared and must not
// be changed.
func (t *tail) read(after uint64, limit int) (out []*storedEvent, ok bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.ring == nil || after > t.last {
		return nil, false
	}
	if after == t.last {
		return nil, true
	}
	first := t.last - uint64(t.n) + 1
	if after+1 < first {
		return nil, false
	}
	k := int(after + 1 - first)
	m := min(limit, t.n-k)
	out = make([]*storedEvent, m)
	for j := range out {
		out[j] = t.ring[(t.head+k+j)%len(t.ring)]
	}
	return out, true
}
