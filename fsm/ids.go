package fsm

import (
	"fmt"
	"hash/maphash"

	"github.com/dgraph-io/badger/v4"
)

// idFilter answers "is there no record with this id?" without reading
// Badger. Every new transfer asks that question, and for a new id Badger
// has to search each memtable and the tables above the bloom filters to
// say no. The filter may say "maybe" for an absent id (then Badger is
// asked), never "no" for a present one: it holds every record id written,
// added before the write commits, and is rebuilt from the t: keys at open
// and after a restore. It is a chain of bloom filters, each twice as large
// as the one before, so it grows with the log at about 1.3 bytes per id
// and a false-positive rate near 1%. Only the FSM goroutine uses it.
type idFilter struct {
	seed  maphash.Seed
	parts []*bloom
}

type bloom struct {
	bits  []uint64
	n     int // ids added
	limit int // ids it is sized for
}

const (
	bloomFirst  = 1 << 16 // ids in the first part
	bloomBitsID = 10      // bits per id: about 1% false positives with 7 probes
	bloomProbes = 7
)

func newIDFilter() *idFilter { return &idFilter{seed: maphash.MakeSeed()} }

func (f *idFilter) add(id string) {
	last := len(f.parts) - 1
	if last < 0 || f.parts[last].n >= f.parts[last].limit {
		limit := bloomFirst
		if last >= 0 {
			limit = 2 * f.parts[last].limit
		}
		f.parts = append(f.parts, &bloom{bits: make([]uint64, limit*bloomBitsID/64), limit: limit})
		last++
	}
	b := f.parts[last]
	h := maphash.String(f.seed, id)
	for i := range uint64(bloomProbes) {
		bit := b.probe(h, i)
		b.bits[bit/64] |= 1 << (bit % 64)
	}
	b.n++
}

// mayContain reports false only if id was never added.
func (f *idFilter) mayContain(id string) bool {
	h := maphash.String(f.seed, id)
	for _, b := range f.parts {
		if b.has(h) {
			return true
		}
	}
	return false
}

// probe is the bit of the i-th probe for hash h (double hashing).
func (b *bloom) probe(h, i uint64) uint64 {
	return (h + i*(h>>32|1)) % uint64(len(b.bits)*64)
}

func (b *bloom) has(h uint64) bool {
	for i := range uint64(bloomProbes) {
		bit := b.probe(h, i)
		if b.bits[bit/64]&(1<<(bit%64)) == 0 {
			return false
		}
	}
	return true
}

// loadIDs builds the filter from the record keys of db (keys only).
func loadIDs(db *badger.DB) (*idFilter, error) {
	f := newIDFilter()
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: preRec})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			f.add(string(it.Item().Key()[len(preRec):]))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: load record ids: %w", err)
	}
	return f, nil
}
