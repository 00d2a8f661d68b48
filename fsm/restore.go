package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"tally/ledger"
)

// A shard restored from a backup gets its events through its own Raft
// log, in restore entries, so every replica (and a node that joins later,
// by replication or a snapshot) applies the same events to the same
// state: each event is checked against the chain, folded as verify folds
// it, and stored verbatim (same seq, same hash). The restore state says
// where the shard is:
//
//	never restored    epoch 0
//	restoring         the first events entry has applied; ledger entries
//	                  change nothing and answer no results (so no write,
//	                  expiry or saga step lands between restored events)
//	restored          the finish entry has applied: the cut and epoch are
//	                  recorded, and the shard takes writes again
//
// A restore entry that does not fit the state (events for a shard that
// has other events or is restored, a gap in the chain, a finish at
// another seq or head) changes nothing and answers why
// (RestoreResponse): every replica refuses it alike.

var (
	preRestore = []byte("r:")
	keyRestore = []byte("r:state")
)

var restoreKind = &kind{
	code:     KindRestore,
	name:     "restore",
	prefixes: [][]byte{preRestore},
	apply:    (*FSM).applyRestore,
	load:     (*FSM).loadRestore,
}

// Restore entry operations.
const (
	restoreEvents byte = 1
	restoreFinish byte = 2
)

// RestoreState is a shard's restore state.
type RestoreState struct {
	Epoch     uint64      // 0: never restored
	Restoring bool        // events are being restored; ledger entries wait
	Seq       uint64      // the cut: the seq the restore ended at
	Head      ledger.Hash // and the hash-chain head there
}

func (s RestoreState) encode() []byte {
	b := []byte{0}
	if s.Restoring {
		b[0] = 1
	}
	b = binary.AppendUvarint(b, s.Epoch)
	b = binary.AppendUvarint(b, s.Seq)
	return append(b, s.Head[:]...)
}

func decodeRestoreState(b []byte) (RestoreState, error) {
	var s RestoreState
	if len(b) < 1+2+32 || b[0] > 1 {
		return s, fmt.Errorf("restore state: %d bytes", len(b))
	}
	s.Restoring = b[0] == 1
	var n, m int
	s.Epoch, n = binary.Uvarint(b[1:])
	if n <= 0 {
		return s, errors.New("restore state: bad epoch")
	}
	s.Seq, m = binary.Uvarint(b[1+n:])
	if m <= 0 || len(b) != 1+n+m+32 {
		return s, errors.New("restore state: bad cut")
	}
	copy(s.Head[:], b[1+n+m:])
	return s, nil
}

// RestoreResponse answers a restore entry: Err says why it was refused
// (nothing changed), empty when it applied.
type RestoreResponse struct {
	Err string
}

// EncodeRestoreEvents is an entry that appends events, in their stored
// form and in seq order, to a shard being restored to epoch epoch.
func EncodeRestoreEvents(epoch uint64, events [][]byte) []byte {
	b := AppendHeader(nil, KindRestore)
	b = append(b, restoreEvents)
	b = binary.AppendUvarint(b, epoch)
	b = binary.AppendUvarint(b, uint64(len(events)))
	for _, e := range events {
		b = binary.AppendUvarint(b, uint64(len(e)))
		b = append(b, e...)
	}
	return b
}

// EncodeRestoreFinish is the entry that ends a restore to epoch epoch at
// the cut (seq, head), which the shard's log must have reached.
func EncodeRestoreFinish(epoch, seq uint64, head ledger.Hash) []byte {
	b := AppendHeader(nil, KindRestore)
	b = append(b, restoreFinish)
	b = binary.AppendUvarint(b, epoch)
	b = binary.AppendUvarint(b, seq)
	return append(b, head[:]...)
}

// restoreEntry is a decoded restore entry.
type restoreEntry struct {
	op     byte
	epoch  uint64
	events [][]byte // subslices of the payload
	seq    uint64
	head   ledger.Hash
}

func decodeRestore(p []byte) (restoreEntry, error) {
	var e restoreEntry
	if len(p) < 2 {
		return e, errors.New("restore entry: short")
	}
	e.op, p = p[0], p[1:]
	uv := func() uint64 {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			p = nil
			return 0
		}
		p = p[n:]
		return v
	}
	e.epoch = uv()
	if e.epoch == 0 {
		return e, errors.New("restore entry: epoch 0")
	}
	switch e.op {
	case restoreEvents:
		n := uv()
		if n == 0 || n > uint64(len(p)) {
			return e, fmt.Errorf("restore entry: %d events", n)
		}
		for range n {
			l := uv()
			if l == 0 || l > uint64(len(p)) {
				return e, errors.New("restore entry: bad event length")
			}
			e.events, p = append(e.events, p[:l]), p[l:]
		}
	case restoreFinish:
		e.seq = uv()
		if len(p) != 32 {
			return e, errors.New("restore entry: bad head")
		}
		copy(e.head[:], p)
		p = nil
	default:
		return e, fmt.Errorf("restore entry: unknown op %d", e.op)
	}
	if len(p) != 0 {
		return e, errors.New("restore entry: trailing bytes")
	}
	return e, nil
}

// applyRestore applies one restore entry.
func (f *FSM) applyRestore(_ uint64, payload []byte) (any, []kv, error) {
	e, err := decodeRestore(payload)
	if err != nil {
		return nil, nil, err
	}
	if why := f.restoreRefusal(e.epoch); why != "" {
		return refuse("%s", why)
	}
	if e.op == restoreFinish {
		return f.finishRestore(e)
	}
	evs := make([]ledger.Event, len(e.events))
	seq, head, tm := f.st.Seq, f.st.Head, f.st.Time
	for i, raw := range e.events {
		ev := &evs[i]
		if err := ledger.DecodeEvent(raw, ev); err != nil {
			return refuse("shard %d: restored event %d: %v", f.shard, seq+1, err)
		}
		if !ledger.StoredHashOK(raw, ev) || ev.Shard != f.shard {
			return refuse("shard %d: restored event %d: not this shard's, or its hash is not that of the event", f.shard, seq+1)
		}
		// The links the fold below checks again: a break must be refused
		// here, with nothing changed, not stop every replica there.
		if err := ledger.Follows(ev, seq, head, tm); err != nil {
			return refuse("shard %d: restored event does not follow the chain: %v", f.shard, err)
		}
		ev.Raw = append([]byte(nil), raw...)
		seq, head, tm = ev.Seq, ev.Hash, ev.Time
	}
	for i := range evs {
		// The chain was checked above; a fold that fails now means the
		// file's balances lie, which the restoring node checked before
		// proposing: stop rather than keep half an entry.
		if err := f.st.ReplayHashed(&evs[i]); err != nil {
			return nil, nil, fmt.Errorf("restore: %w", err)
		}
	}
	f.setRest(RestoreState{Epoch: e.epoch, Restoring: true})
	c := f.st.Flush()
	c.Events = evs
	// The open sagas reach the saga driver only when the restore
	// finishes: a saga step now would land between restored events.
	n := len(f.sagaDelta)
	out := f.changes(c, ledger.EncBinary)
	f.sagaDelta = f.sagaDelta[:n]
	return &RestoreResponse{}, append(out, kv{k: keyRestore, v: f.rest.encode()}), nil
}

// finishRestore ends a restore at the cut it names.
func (f *FSM) finishRestore(e restoreEntry) (any, []kv, error) {
	if f.st.Seq != e.seq || f.st.Head != e.head {
		return refuse("shard %d is at seq %d head %s, the cut is seq %d head %s", f.shard, f.st.Seq, f.st.Head, e.seq, e.head)
	}
	f.setRest(RestoreState{Epoch: e.epoch, Seq: e.seq, Head: e.head})
	for _, r := range f.st.OpenSagas() {
		f.sagaDelta = append(f.sagaDelta, copySaga(&r))
	}
	return &RestoreResponse{}, []kv{{k: keyRestore, v: f.rest.encode()}}, nil
}

// restoreRefusal says why no restore entry of epoch may apply now, or ""
// when one may: the shard must be empty or being restored to that epoch,
// and never restored before. Event entries and the finish entry alike.
func (f *FSM) restoreRefusal(epoch uint64) string {
	rs := f.rest
	switch {
	case rs.Epoch != 0 && !rs.Restoring:
		return fmt.Sprintf("shard %d was restored already (epoch %d)", f.shard, rs.Epoch)
	case !rs.Restoring && f.st.Seq != 0:
		return fmt.Sprintf("shard %d has %d events: a restore needs an empty shard", f.shard, f.st.Seq)
	case rs.Restoring && rs.Epoch != epoch:
		return fmt.Sprintf("shard %d is being restored to epoch %d, not %d", f.shard, rs.Epoch, epoch)
	}
	return ""
}

func refuse(format string, args ...any) (any, []kv, error) {
	return &RestoreResponse{Err: fmt.Sprintf(format, args...)}, nil, nil
}

// loadRestore reads the restore state.
func (f *FSM) loadRestore(db *badger.DB) (func(), error) {
	var rs RestoreState
	err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(keyRestore)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			rs, err = decodeRestoreState(v)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: load shard %d: %w", f.shard, err)
	}
	return func() {
		f.setRest(rs)
		if !rs.Restoring {
			return
		}
		// Installed after the ledger's view: its open sagas wait for the
		// finish entry, as they did when applied.
		f.sagaMu.Lock()
		f.sagas = map[string]ledger.Record{}
		f.sagaMu.Unlock()
	}, nil
}

// setRest sets the restore state and what readers see of it.
func (f *FSM) setRest(rs RestoreState) {
	f.rest = rs
	f.inRestore.Store(rs.Restoring)
	if !rs.Restoring {
		f.epoch.Store(rs.Epoch)
	}
}

// Restoring reports whether the shard is being restored: it has restored
// events but not yet the finish entry. It is safe for concurrent use.
func (f *FSM) Restoring() bool { return f.inRestore.Load() }

// Epoch returns the shard's restore epoch: 0 for a shard never restored,
// else one more than that of the cluster its backup came from. It is
// safe for concurrent use.
func (f *FSM) Epoch() uint64 { return f.epoch.Load() }

// EventsStored returns up to limit events with seq > after, in order, in
// their stored form, for a backup (which restores them verbatim). The
// values must not be changed.
func (f *FSM) EventsStored(after uint64, limit int) ([][]byte, error) {
	evs, err := f.storedEvents(after, limit)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(evs))
	for i, s := range evs {
		out[i] = s.stored
	}
	return out, nil
}
