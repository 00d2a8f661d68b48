package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

// The history index holds one key per account per applied entry, not one
// per event: histKey(account, last) names the entry's events that touched
// the account, last being the newest of them, and the value lists their
// seqs in ascending order (the first as a uvarint, then uvarint gaps). A
// batch of 1,000 transfers among 1,000 accounts writes about 870 such keys
// instead of 2,000, and one among 10 hot accounts writes 10.

// histGroups gathers the seqs of a batch's events per account key, in
// the order the accounts first appear.
type histGroups struct {
	order []string
	seqs  map[string][]uint64
}

func (g *histGroups) add(acct string, seq uint64) {
	if g.seqs == nil {
		g.seqs = map[string][]uint64{}
	}
	s, ok := g.seqs[acct]
	if !ok {
		g.order = append(g.order, acct)
	}
	if n := len(s); n == 0 || s[n-1] != seq { // an event may name an account twice
		g.seqs[acct] = append(s, seq)
	}
}

func encodeSeqs(seqs []uint64) []byte {
	b := make([]byte, 0, 2*len(seqs)+8)
	prev := uint64(0)
	for _, s := range seqs {
		b = binary.AppendUvarint(b, s-prev)
		prev = s
	}
	return b
}

// decodeHist returns the seqs one key of the index lists, ascending; the
// key's own seq is the last of them.
func decodeHist(k, v []byte) ([]uint64, error) {
	if len(k) < 8 {
		return nil, errors.New("short history key")
	}
	last := binary.BigEndian.Uint64(k[len(k)-8:])
	if len(v) == 0 {
		// Earlier builds wrote one key per event with an empty value.
		return []uint64{last}, nil
	}
	var seqs []uint64
	prev := uint64(0)
	for len(v) > 0 {
		d, n := binary.Uvarint(v)
		if n <= 0 || (d == 0 && len(seqs) > 0) || prev+d < prev {
			return nil, fmt.Errorf("history key %x: bad seq list", k)
		}
		prev += d
		seqs = append(seqs, prev)
		v = v[n:]
	}
	if seqs[len(seqs)-1] != last {
		return nil, fmt.Errorf("history key %x: seqs do not end at %d", k, last)
	}
	return seqs, nil
}

func readHist(it *badger.Iterator) ([]uint64, error) {
	item := it.Item()
	var seqs []uint64
	err := item.Value(func(v []byte) error {
		var err error
		seqs, err = decodeHist(item.Key(), v)
		return err
	})
	return seqs, err
}

// histAsc calls fn with the seqs above after of account k, ascending,
// until fn returns false.
func histAsc(txn *badger.Txn, k string, after uint64, fn func(seq uint64) (bool, error)) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: histPrefix(k)})
	defer it.Close()
	// The first key whose newest seq is above after holds the first seq
	// above after.
	for it.Seek(histKey(k, after+1)); it.Valid(); it.Next() {
		seqs, err := readHist(it)
		if err != nil {
			return err
		}
		for _, s := range seqs {
			if s <= after {
				continue
			}
			if more, err := fn(s); err != nil || !more {
				return err
			}
		}
	}
	return nil
}

// histDesc calls fn with the seqs at or below upto of account k,
// descending, until fn returns false.
func histDesc(txn *badger.Txn, k string, upto uint64, fn func(seq uint64) (bool, error)) error {
	// The key holding upto's neighbourhood may end above upto: take its
	// seqs at or below upto first, then every key that ends at or below.
	fwd := txn.NewIterator(badger.IteratorOptions{Prefix: histPrefix(k)})
	fwd.Seek(histKey(k, upto))
	if fwd.Valid() {
		seqs, err := readHist(fwd)
		if err != nil {
			fwd.Close()
			return err
		}
		if seqs[len(seqs)-1] > upto {
			for _, s := range slices.Backward(seqs) {
				if s > upto {
					continue
				}
				if more, err := fn(s); err != nil || !more {
					fwd.Close()
					return err
				}
			}
		}
	}
	fwd.Close()
	it := txn.NewIterator(badger.IteratorOptions{Prefix: histPrefix(k), Reverse: true})
	defer it.Close()
	for it.Seek(histKey(k, upto)); it.Valid(); it.Next() {
		seqs, err := readHist(it)
		if err != nil {
			return err
		}
		for _, s := range slices.Backward(seqs) {
			if more, err := fn(s); err != nil || !more {
				return err
			}
		}
	}
	return nil
}
