package fsm

import "sync"

// tailLen is how many of the newest applied events a shard keeps in
// memory for the streams that follow its log: about a megabyte or two,
// shared by every stream.
const tailLen = 2048

// tail holds the stored bytes of the newest applied events. Streams that
// follow the log read new events from it instead of each opening a Badger
// read per applied batch, so many followers cost the write path little;
// a stream further behind reads Badger as before. It is filled when a
// batch is published, before the applied seq moves, so a reader woken by
// the new seq finds its events here.
type tail struct {
	mu   sync.RWMutex
	ring [][]byte
	head int    // index of the oldest event in ring
	n    int    // events held
	last uint64 // seq of the newest event held; the oldest is last-n+1
}

// reset empties the tail; seq is the applied seq it continues from.
func (t *tail) reset(seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ring == nil {
		t.ring = make([][]byte, tailLen)
	}
	t.head, t.n, t.last = 0, 0, seq
}

// add appends the events with seqs last+1, last+2, ...
func (t *tail) add(raw [][]byte) {
	if len(raw) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range raw {
		i := (t.head + t.n) % len(t.ring)
		t.ring[i] = r
		if t.n < len(t.ring) {
			t.n++
		} else {
			t.head = (t.head + 1) % len(t.ring)
		}
		t.last++
	}
}

// read returns up to limit events after seq after when the tail holds
// them all (ok false: read storage). The slices are shared and must not
// be changed.
func (t *tail) read(after uint64, limit int) (out [][]byte, ok bool) {
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
	out = make([][]byte, m)
	for j := range out {
		out[j] = t.ring[(t.head+k+j)%len(t.ring)]
	}
	return out, true
}
