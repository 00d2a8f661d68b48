package fsm

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"tally/ledger"
)

// ErrNotFound is returned by reads of an absent account or transfer.
var ErrNotFound = errors.New("not found")

// ErrFuture is returned for a read at a seq not applied yet.
var ErrFuture = errors.New("seq in the future")

// MaxPage bounds a page of events.
const MaxPage = 1000

// view runs fn in a read transaction of the live database and returns the
// seq that transaction reflects.
func (f *FSM) view(fn func(txn *badger.Txn) error) (uint64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var seq uint64
	err := f.db.View(func(txn *badger.Txn) error {
		m, err := readMeta(txn)
		if err != nil {
			return err
		}
		seq = m.Seq
		return fn(txn)
	})
	return seq, err
}

func readMeta(txn *badger.Txn) (meta, error) {
	item, err := txn.Get(keyMeta)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return meta{}, nil
	}
	if err != nil {
		return meta{}, err
	}
	var m meta
	err = item.Value(func(v []byte) error {
		m, err = decodeMeta(v)
		return err
	})
	return m, err
}

// Account returns the committed account with key k and the seq it reflects.
func (f *FSM) Account(k string) (ledger.Account, uint64, error) {
	var a ledger.Account
	seq, err := f.view(func(txn *badger.Txn) error {
		item, err := txn.Get(key(preAcct, k))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return ledger.DecodeAccount(v, &a) })
	})
	if err != nil {
		return ledger.Account{}, 0, fmt.Errorf("account %s: %w", k, err)
	}
	return a, seq, nil
}

// Transfer returns the committed record of transfer id and the seq it
// reflects.
func (f *FSM) Transfer(id string) (ledger.Record, uint64, error) {
	var r ledger.Record
	seq, err := f.view(func(txn *badger.Txn) error {
		rec, ok, err := getRecord(txn, id)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		r = *rec
		return nil
	})
	if err != nil {
		return ledger.Record{}, 0, fmt.Errorf("transfer %s: %w", id, err)
	}
	return r, seq, nil
}

// Events returns up to limit events with seq > after, in order: the
// events of EventsRaw, decoded.
func (f *FSM) Events(after uint64, limit int) ([]ledger.Event, error) {
	evs, err := f.storedEvents(after, limit)
	if err != nil {
		return nil, err
	}
	out := make([]ledger.Event, len(evs))
	for i, s := range evs {
		if out[i], err = s.decode(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// getEvent reads and decodes event seq.
func getEvent(txn *badger.Txn, seq uint64) (ledger.Event, error) {
	var e ledger.Event
	item, err := txn.Get(eventKey(seq))
	if err == nil {
		err = item.Value(func(v []byte) error { return ledger.DecodeEvent(v, &e) })
	}
	if err != nil {
		return e, fmt.Errorf("event %d: %w", seq, err)
	}
	return e, nil
}

// History returns up to limit events that touched account key k: with
// seq > after in ascending order, or with seq < before (0: the newest) in
// descending order.
func (f *FSM) History(k string, after uint64, limit int, desc bool) ([]ledger.Event, error) {
	if !desc && after == math.MaxUint64 {
		// As in Events: after+1 would wrap to the oldest event.
		return nil, nil
	}
	limit = clampLimit(limit)
	var out []ledger.Event
	_, err := f.view(func(txn *badger.Txn) error {
		add := func(seq uint64) (bool, error) {
			e, err := getEvent(txn, seq)
			if err != nil {
				return false, err
			}
			out = append(out, e)
			return len(out) < limit, nil
		}
		if !desc {
			return histAsc(txn, k, after, add)
		}
		if after == 0 {
			return histDesc(txn, k, math.MaxUint64, add)
		}
		return histDesc(txn, k, after-1, add)
	})
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", k, err)
	}
	return out, nil
}

func clampLimit(n int) int {
	if n <= 0 {
		return 100
	}
	return min(n, MaxPage)
}

// HashAt returns the hash-chain value right after seq (the zero hash for
// seq 0).
func (f *FSM) HashAt(seq uint64) (ledger.Hash, error) {
	var h ledger.Hash
	if seq == 0 {
		return h, nil
	}
	_, err := f.view(func(txn *badger.Txn) error {
		item, err := txn.Get(eventKey(seq))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			var e ledger.Event
			err := ledger.DecodeEvent(v, &e)
			h = e.Hash
			return err
		})
	})
	if err != nil {
		return h, fmt.Errorf("hash at %d: %w", seq, err)
	}
	return h, nil
}

// Status is a summary of the committed state.
type Status struct {
	AppliedIndex uint64      `json:"applied_index"`
	AppliedSeq   uint64      `json:"applied_seq"`
	Head         ledger.Hash `json:"head_hash"`
	StateHash    ledger.Hash `json:"state_hash"`
	Accounts     int         `json:"accounts"`
	Pending      int         `json:"pending"`
}

// Status loads the committed balances at one point in time and digests
// them. It costs a scan of the accounts: for operators and tests, not for
// the request path.
func (f *FSM) Status() (Status, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st, m, err := loadState(f.db, f.shard, f.shards)
	if err != nil {
		return Status{}, err
	}
	return Status{AppliedIndex: m.Index, AppliedSeq: m.Seq, Head: m.Head,
		StateHash: st.StateHash(), Accounts: len(st.Accounts), Pending: st.Pending()}, nil
}

// AccountAt returns account key k as it was right after seq: its balances
// from the newest event at or before seq that touched it. It wraps
// ErrNotFound when the account did not exist yet.
func (f *FSM) AccountAt(k string, seq uint64) (ledger.Account, error) {
	var a ledger.Account
	_, err := f.view(func(txn *badger.Txn) error {
		if m, err := readMeta(txn); err != nil || m.Seq < seq {
			return fmt.Errorf("%w: seq %d is not applied here yet (applied %d)", ErrFuture, seq, m.Seq)
		}
		item, err := txn.Get(key(preAcct, k))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if err := item.Value(func(v []byte) error { return ledger.DecodeAccount(v, &a) }); err != nil {
			return err
		}
		var at uint64
		if err := histDesc(txn, k, seq, func(s uint64) (bool, error) { at = s; return false, nil }); err != nil {
			return err
		}
		if at == 0 {
			return ErrNotFound
		}
		e, err := getEvent(txn, at)
		if err != nil {
			return err
		}
		for _, b := range e.Balances {
			if ledger.AccountKey(b.Account, b.Currency) == k {
				a.DebitsPosted, a.CreditsPosted = b.DebitsPosted, b.CreditsPosted
				a.DebitsPending, a.CreditsPending = b.DebitsPending, b.CreditsPending
				if a.Closed {
					a.Closed, err = closedBy(txn, k, seq)
				}
				return err
			}
		}
		return fmt.Errorf("event %d does not carry %s", at, k)
	})
	if err != nil {
		return ledger.Account{}, fmt.Errorf("account %s at seq %d: %w", k, seq, err)
	}
	return a, nil
}

// closedBy reports whether the closed account k was closed at or before
// seq: it looks for the AccountClosed event from the newest event back.
func closedBy(txn *badger.Txn, k string, seq uint64) (bool, error) {
	closed, found := false, false
	err := histDesc(txn, k, math.MaxUint64, func(at uint64) (bool, error) {
		e, err := getEvent(txn, at)
		if err != nil {
			return false, err
		}
		if e.Type == ledger.AccountClosedEv {
			closed, found = at <= seq, true
		}
		return !found, nil
	})
	return closed, err
}

// SeqAt returns the seq of the last event at or before log time t: 0
// when the first event is later than t (or there is none), the applied
// seq when every event is at or before t. Log time never decreases along
// a shard's log (ledger.State.Begin keeps the later of the stamped time
// and the previous entry's), so a binary search over the events, keyed by
// seq, finds it in O(log n) reads.
func (f *FSM) SeqAt(t ledger.Time) (uint64, error) {
	var seq uint64
	_, err := f.view(func(txn *badger.Txn) error {
		m, err := readMeta(txn)
		if err != nil {
			return err
		}
		if m.Time <= t {
			// Every event's time is at most the last entry's.
			seq = m.Seq
			return nil
		}
		seq, err = searchTime(m.Seq, t, func(s uint64) (ledger.Time, error) { return eventTime(txn, s) })
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("seq at %d: %w", t, err)
	}
	return seq, nil
}

// searchTime returns the largest seq in [1, n] whose time is at most t, or
// 0 when there is none, reading timeOf about log2(n) times. Times must not
// decrease with seq; equal times are allowed, and the last of them wins.
func searchTime(n uint64, t ledger.Time, timeOf func(seq uint64) (ledger.Time, error)) (uint64, error) {
	lo, hi := uint64(0), n // the answer is in [lo, hi]
	for lo < hi {
		mid := hi - (hi-lo)/2 // in (lo, hi]: the loop always shrinks
		at, err := timeOf(mid)
		if err != nil {
			return 0, err
		}
		if at <= t {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo, nil
}

// eventTime reads the log time of event seq.
func eventTime(txn *badger.Txn, seq uint64) (ledger.Time, error) {
	e, err := getEvent(txn, seq)
	return e.Time, err
}

// AccountAtTime returns account key k as it was right after the last event
// of the shard at or before log time t, and that event's seq. It wraps
// ErrNotFound when the account did not exist yet at t. A t after the last
// applied event answers as of that event.
func (f *FSM) AccountAtTime(k string, t ledger.Time) (ledger.Account, uint64, error) {
	seq, err := f.SeqAt(t)
	if err != nil {
		return ledger.Account{}, 0, fmt.Errorf("account %s: %w", k, err)
	}
	if seq == 0 {
		return ledger.Account{}, 0, fmt.Errorf("account %s at %d: %w", k, t, ErrNotFound)
	}
	// Events up to seq never change, so a second read transaction agrees
	// with the one that found seq.
	a, err := f.AccountAt(k, seq)
	return a, seq, err
}

// Sagas returns up to limit (all, when limit < 0) of the sagas this shard
// started that are still open, or of those it aborted, and the seq they
// reflect.
func (f *FSM) Sagas(aborted bool, limit int) ([]ledger.Record, uint64, error) {
	if limit >= 0 {
		limit = clampLimit(limit)
	} else {
		limit = int(^uint(0) >> 1)
	}
	prefix := preOpen
	if aborted {
		prefix = preAborted
	}
	var out []ledger.Record
	seq, err := f.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid() && len(out) < limit; it.Next() {
			id := string(it.Item().Key()[len(prefix):])
			r, ok, err := getRecord(txn, id)
			if err != nil || !ok {
				return fmt.Errorf("saga %s without record: %v", id, err)
			}
			if r.Saga != nil {
				out = append(out, *r)
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("sagas: %w", err)
	}
	return out, seq, nil
}

// Audit reads a shard's books at one applied seq: every account at one
// point and sums the balances per
// currency; it also returns the clearing accounts of the saga legs.
func (f *FSM) Audit() (ledger.ShardBooks, error) {
	a := ledger.ShardBooks{Shard: f.shard, Sums: map[string]string{}}
	sums := map[string]*big.Int{}
	seq, err := f.view(func(txn *badger.Txn) error {
		return eachValue(txn, preAcct, func(_, v []byte) error {
			var acc ledger.Account
			if err := ledger.DecodeAccount(v, &acc); err != nil {
				return err
			}
			s := sums[acc.Currency]
			if s == nil {
				s = new(big.Int)
				sums[acc.Currency] = s
			}
			s.Add(s, big.NewInt(acc.Balance()))
			if strings.HasPrefix(acc.ID, ledger.ClearingPrefix) {
				a.Clearing = append(a.Clearing, acc)
			}
			return nil
		})
	})
	if err != nil {
		return ledger.ShardBooks{}, fmt.Errorf("audit: %w", err)
	}
	a.Seq = seq
	for cur, s := range sums {
		a.Sums[cur] = s.String()
	}
	return a, nil
}

// EventsRaw returns the JSON of up to limit events with seq > after, in
// order, as the API serves them (the events of Events, encoded), for a
// reader that passes them on as they are (a stream). The newest events
// come from memory (tail.go), where each event's JSON is made once for
// every stream, older ones from storage. The values must not be changed.
func (f *FSM) EventsRaw(after uint64, limit int) ([][]byte, error) {
	evs, err := f.storedEvents(after, limit)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(evs))
	for i, s := range evs {
		if out[i], err = s.json(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// storedEvents returns up to limit events with seq > after, in order, in
// their stored form: from the tail when it holds them, else from storage.
func (f *FSM) storedEvents(after uint64, limit int) ([]*storedEvent, error) {
	if after == math.MaxUint64 {
		return nil, nil
	}
	limit = clampLimit(limit)
	if out, ok := f.tail.read(after, limit); ok {
		return out, nil
	}
	var out []*storedEvent
	_, err := f.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: preEvent, PrefetchValues: true, PrefetchSize: min(limit, 100)})
		defer it.Close()
		for it.Seek(eventKey(after + 1)); it.Valid() && len(out) < limit; it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out = append(out, &storedEvent{seq: after + uint64(len(out)) + 1, stored: v})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("events after %d: %w", after, err)
	}
	return out, nil
}
