package fsm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"

	"github.com/dgraph-io/badger/v4"

	"tally/ledger"
)

// Report is the outcome of Verify.
type Report struct {
	Events     uint64      `json:"events"`
	AppliedSeq uint64      `json:"applied_seq"`
	Head       ledger.Hash `json:"head_hash"`
	StateHash  ledger.Hash `json:"state_hash"`
	Accounts   int         `json:"accounts"`
	Records    int         `json:"records"`
}

// Verify rebuilds the shard by folding its event log from seq 1, checking
// every event's balances and hash on the way, then compares what it built
// with the stored accounts, transfer records, open pending index and
// applied head, all read at one point in time. It also checks that every
// currency sums to 0 and that no account is overdrawn.
func (f *FSM) Verify(ctx context.Context) (Report, error) {
	var rep Report
	_, err := f.view(func(txn *badger.Txn) error {
		m, err := readMeta(txn)
		if err != nil {
			return err
		}
		st := ledger.NewState(f.shard, f.shards, nil)
		st.Reserve(int(min(m.Seq, maxReserve)))
		if err := replayAll(ctx, txn, st, &rep); err != nil {
			return err
		}
		if st.Seq != m.Seq || st.Head != m.Head {
			return fmt.Errorf("replay ends at seq %d head %s, state says seq %d head %s", st.Seq, st.Head, m.Seq, m.Head)
		}
		rep.AppliedSeq, rep.Head, rep.StateHash = m.Seq, m.Head, st.StateHash()
		if err := st.CheckBooks(); err != nil {
			return err
		}
		rep.Accounts = len(st.Accounts)
		rep.Records, err = compareStored(txn, st)
		return err
	})
	if err != nil {
		return rep, fmt.Errorf("verify shard %d: %w", f.shard, err)
	}
	return rep, nil
}

// maxReserve bounds the records a replay makes room for at the start.
const maxReserve = 1 << 24

// Replay runs on two goroutines: a reader decodes the stored events and
// checks each one's own hash against its stored bytes, a page at a time,
// while the fold (State.ReplayHashed) applies the pages in order and
// checks the chain, the seqs and the balances. The hash and the decoding
// are half the work and need nothing of the fold, so a shard replays
// about twice as fast on two cores.
const (
	replayPage  = 256
	replayPages = 4 // pages in flight: a few hundred KiB
)

// replayBatch is a page of decoded events; err, when set, is what stopped
// the reader after the page's n events.
type replayBatch struct {
	evs []ledger.EventBuf
	n   int
	err error
}

func replayAll(ctx context.Context, txn *badger.Txn, st *ledger.State, rep *Report) error {
	free := make(chan *replayBatch, replayPages)
	full := make(chan *replayBatch, replayPages)
	// One table of names for the reader: a record replay keeps then holds
	// its own ids, not a copy of its whole event.
	names := &ledger.Names{}
	for range replayPages {
		b := &replayBatch{evs: make([]ledger.EventBuf, replayPage)}
		for i := range b.evs {
			b.evs[i].Names = names
		}
		free <- b
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(full)
		readEvents(ctx, txn, free, full, stop)
	}()
	var err error
	for b := range full {
		for i := 0; i < b.n && err == nil; i++ {
			if err = st.ReplayHashed(&b.evs[i].Event); err == nil {
				rep.Events++
			}
		}
		if err == nil {
			err = b.err
		}
		if err != nil {
			break
		}
		free <- b
	}
	close(stop)
	for range full {
	}
	<-done
	return err
}

// readEvents is replayAll's reader. It owns the iterator; the fold only
// reads the transaction once the reader is done.
func readEvents(ctx context.Context, txn *badger.Txn, free <-chan *replayBatch, full chan<- *replayBatch, stop <-chan struct{}) {
	var b *replayBatch
	get := func() bool {
		select {
		case b = <-free:
			b.n, b.err = 0, nil
			return true
		case <-stop:
			return false
		}
	}
	send := func() bool {
		select {
		case full <- b:
			return true
		case <-stop:
			return false
		}
	}
	if !get() {
		return
	}
	// Values stay in the LSM tree, so Value hands out the block's bytes
	// without a copy; prefetching would copy every one of them.
	it := txn.NewIterator(badger.IteratorOptions{Prefix: preEvent})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if b.n == 0 && ctx.Err() != nil {
			b.err = ctx.Err()
			send()
			return
		}
		item := it.Item()
		slot := &b.evs[b.n]
		err := item.Value(func(v []byte) error {
			if err := slot.Decode(v); err != nil {
				return err
			}
			if !ledger.StoredHashOK(v, &slot.Event) {
				return fmt.Errorf("hash %s is not that of the event", slot.Hash)
			}
			return nil
		})
		if err != nil {
			b.err = fmt.Errorf("event %d: %w", seqOfKey(item.Key()), err)
			send()
			return
		}
		if b.n++; b.n == len(b.evs) && (!send() || !get()) {
			return
		}
	}
	if b.n > 0 {
		send()
	}
}

func seqOfKey(k []byte) uint64 {
	if len(k) != len(preEvent)+8 {
		return 0
	}
	return binary.BigEndian.Uint64(k[len(preEvent):])
}

// compareStored checks the stored derived state against the replay and
// returns the number of transfer records. A stored value and a replayed
// one are equal when their binary encodings are: the encoding holds every
// field, and empty and nil metadata alike.
func compareStored(txn *badger.Txn, st *ledger.State) (int, error) {
	stored := 0
	var want, got []byte
	err := eachValue(txn, preAcct, func(k, v []byte) error {
		stored++
		var a ledger.Account
		if err := ledger.DecodeAccount(v, &a); err != nil {
			return fmt.Errorf("account %s: %w", k[len(preAcct):], err)
		}
		r := st.Accounts[string(k[len(preAcct):])]
		if r == nil {
			return fmt.Errorf("stored account %s was not replayed", k[len(preAcct):])
		}
		want, got = r.AppendBinary(want[:0]), a.AppendBinary(got[:0])
		if !bytes.Equal(want, got) {
			return fmt.Errorf("stored account %s differs from replay: stored %+v, replay %+v", k[len(preAcct):], a, *r)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if stored != len(st.Accounts) {
		return 0, fmt.Errorf("%d accounts stored, %d replayed", stored, len(st.Accounts))
	}
	records, err := compareRecords(txn, st)
	if err != nil {
		return records, err
	}
	open := 0
	err = eachValue(txn, preOpen, func(k, _ []byte) error {
		open++
		return nil
	})
	if err != nil {
		return records, err
	}
	if open != st.Pending() {
		return records, fmt.Errorf("%d open pending transfers stored, %d replayed", open, st.Pending())
	}
	return records, nil
}

// recordDigest sums a keyed hash of each record's id and binary encoding.
// Equal sums and counts over the stored and the replayed records mean
// equal sets, but for a chance of 2^-64; the key is random, so a record
// cannot be forged to collide.
type recordDigest struct {
	seed maphash.Seed
	sum  uint64
	n    int
	buf  []byte
}

func (d *recordDigest) add(id string, enc []byte) {
	d.buf = binary.AppendUvarint(d.buf[:0], uint64(len(id)))
	d.buf = append(append(d.buf, id...), enc...)
	d.sum += maphash.Bytes(d.seed, d.buf)
	d.n++
}

// compareRecords checks that the stored transfer records are those replay
// made, every one and no other (an extra one, an id that would wrongly
// answer "exists", shows in the count), and returns their number. It
// digests the two sides at once, on two goroutines, without looking one
// up in the other; only when they differ does it look for the record
// that does.
func compareRecords(txn *badger.Txn, st *ledger.State) (int, error) {
	seed := maphash.MakeSeed()
	replayed := recordDigest{seed: seed}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var enc []byte
		// A replayed state holds exactly the records the replay wrote.
		st.EachRecord(func(r *ledger.Record) {
			enc = r.AppendBinary(enc[:0])
			replayed.add(r.Transfer.ID, enc)
		})
	}()
	stored := recordDigest{seed: seed}
	err := eachRecord(txn, func(id string, v []byte) error {
		if len(v) > 0 && v[0] == ledger.EncBinary {
			stored.add(id, v) // canonical, or the exact check below fails it
			return nil
		}
		var r ledger.Record
		if err := ledger.DecodeRecord(v, &r); err != nil {
			return fmt.Errorf("record %s: %w", id, err)
		}
		stored.add(id, r.AppendBinary(nil))
		return nil
	})
	<-done
	if err != nil {
		return stored.n, err
	}
	if stored.n == replayed.n && stored.sum == replayed.sum {
		return stored.n, nil
	}
	if err := findRecordDiff(txn, st); err != nil {
		return stored.n, err
	}
	if stored.n != replayed.n {
		return stored.n, fmt.Errorf("%d transfer records stored, %d replayed", stored.n, replayed.n)
	}
	return stored.n, errors.New("the stored transfer records differ from the replayed ones")
}

// eachRecord calls fn with every stored record's id and value, in key
// order; v is valid only during the call.
func eachRecord(txn *badger.Txn, fn func(id string, v []byte) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: preRec})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		id := string(item.Key()[len(preRec):])
		if err := item.Value(func(v []byte) error { return fn(id, v) }); err != nil {
			return err
		}
	}
	return nil
}

// findRecordDiff names a stored record that replay did not make or made
// otherwise.
func findRecordDiff(txn *badger.Txn, st *ledger.State) error {
	var want []byte
	return eachRecord(txn, func(id string, v []byte) error {
		r, ok := st.Record(id)
		if !ok {
			return fmt.Errorf("stored record %s was not replayed", id)
		}
		var s ledger.Record
		if err := ledger.DecodeRecord(v, &s); err != nil {
			return fmt.Errorf("record %s: %w", id, err)
		}
		if want = r.AppendBinary(want[:0]); !bytes.Equal(s.AppendBinary(nil), want) {
			return fmt.Errorf("stored record %s differs from replay: stored %+v, replay %+v", id, s, r)
		}
		return nil
	})
}
