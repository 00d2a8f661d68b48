package fsm

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"tally/internal/failpoint"
	"tally/internal/plant"
	"tally/ledger"
)

// Response is what ApplyBatch returns for one ledger entry: the results of
// each command, in order. Entries of other kinds, and entries skipped on
// replay, return nil.
type Response struct {
	Results [][]ledger.Result
}

// Apply applies one log entry. Raft uses ApplyBatch; this serves the
// raft.FSM interface.
func (f *FSM) Apply(l *raft.Log) interface{} { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies committed entries in one Badger transaction (more only
// when they do not fit one), together with the applied index, so a crash
// leaves either all of an entry or none of it. Entries at or below the
// persisted applied index were applied before a restart and are skipped.
// Each command entry goes to its kind (kinds.go). An entry that cannot be
// decoded, or of a kind this build does not know, panics: diverging
// replicas are worse than a stopped one.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	if failpoint.Enabled {
		failpoint.Crash("crash-before-apply")
	}
	out := make([]interface{}, len(logs))
	f.mu.RLock()
	defer f.mu.RUnlock()
	w := f.newWriter()
	f.txn = w.txn
	for i, l := range logs {
		if l.Index <= f.applied.Index {
			continue
		}
		if l.Type != raft.LogCommand {
			w.entry(l.Index, nil)
			continue
		}
		k, payload, err := decodeEnvelope(l.Data)
		if err != nil {
			panic(fmt.Sprintf("fsm: shard %d: entry %d: %v", f.shard, l.Index, err))
		}
		resp, kvs, err := k.apply(f, l.Index, payload)
		if err != nil {
			panic(fmt.Sprintf("fsm: shard %d: entry %d: %s: %v", f.shard, l.Index, k.name, err))
		}
		w.entry(l.Index, kvs)
		out[i] = resp
	}
	w.commit()
	w.txn.Discard()
	f.txn = nil
	if failpoint.Enabled {
		failpoint.Crash("crash-after-apply")
	}
	f.publish()
	return out
}

// ledgerKind is the ledger's commands, and the events, balances, records
// and indexes they leave. It also owns the applied position (m:), which
// names the ledger's seq and head hash with the Raft index.
var ledgerKind = &kind{
	code:     KindLedger,
	name:     "ledger",
	prefixes: [][]byte{preAcct, preEvent, preAborted, preHist, preMeta, preOpen, preRec},
	apply:    (*FSM).applyLedger,
	load:     (*FSM).loadLedger,
}

// applyLedger executes the commands of one ledger.Entry.
func (f *FSM) applyLedger(index uint64, payload []byte) (any, []kv, error) {
	e, err := ledger.DecodeEntry(payload)
	if err != nil {
		return nil, nil, err
	}
	if f.rest.Restoring {
		// Nothing may land between restored events (restore.go): no
		// results, which the proposer reports as an unknown outcome.
		return &Response{}, nil, nil
	}
	// The entry's own version says how its events are hashed and how
	// its effects are stored, so every replica agrees whatever it would
	// propose itself.
	f.st.BeginEntry(index, e.Time, e.Version)
	res := make([][]ledger.Result, len(e.Commands))
	for j := range e.Commands {
		res[j] = f.st.Execute(&e.Commands[j])
	}
	return &Response{Results: res}, f.changes(f.st.Flush(), ledger.EncodingOf(e.Version)), nil
}

// loadLedger loads the balances, the open pending transfers, the applied
// position and the record id filter.
func (f *FSM) loadLedger(db *badger.DB) (func(), error) {
	st, m, err := loadState(db, f.shard, f.shards)
	if err != nil {
		return nil, err
	}
	ids, err := loadIDs(db)
	if err != nil {
		return nil, err
	}
	st.SetStore(f)
	return func() {
		f.st, f.ids, f.applied = st, ids, m
		f.loadSagas(st)
		f.tail.reset(m.Seq)
		f.tailDelta = nil
	}, nil
}

type kv struct {
	k, v []byte
	del  bool
}

// changes turns a batch's changes into Badger writes: events, history
// index, accounts, records and the open-pending index. Events are stored
// as Seal made them; accounts and records in enc, the form of the
// entry's events: JSON for a version-1 entry, as the builds before the
// binary encoding wrote them, binary otherwise.
func (f *FSM) changes(c ledger.Changes, enc uint8) []kv {
	out := make([]kv, 0, len(c.Events)*3+len(c.Accounts)+len(c.Records))
	var hist histGroups
	for i := range c.Events {
		e := &c.Events[i]
		v := e.Raw
		if v == nil {
			v = storedForm(e)
		}
		out = append(out, kv{k: eventKey(e.Seq), v: v})
		f.tailDelta = append(f.tailDelta, v)
		for _, b := range e.Balances {
			hist.add(ledger.AccountKey(b.Account, b.Currency), e.Seq)
		}
	}
	for _, a := range hist.order {
		seqs := hist.seqs[a]
		out = append(out, kv{k: histKey(a, seqs[len(seqs)-1]), v: encodeSeqs(seqs)})
	}
	for _, a := range c.Accounts {
		out = append(out, kv{k: key(preAcct, a.Key()), v: storedValue(enc, a)})
	}
	for _, r := range c.Records {
		out = append(out, kv{k: key(preRec, r.Transfer.ID), v: storedValue(enc, r)})
		f.ids.add(r.Transfer.ID) // before the commit: the filter never misses a stored id
		if r.Tracked() {
			out = append(out, kv{k: key(preOpen, r.Transfer.ID), del: !r.Open()})
		}
		if r.Saga != nil {
			f.noteSaga(r)
			if r.Saga.Step == ledger.StepAborted {
				out = append(out, kv{k: key(preAborted, r.Transfer.ID)})
			}
		}
	}
	return out
}

// storedForm is the stored form of an event that Seal left without one.
func storedForm(e *ledger.Event) []byte {
	if e.Enc == ledger.EncJSON {
		return mustJSON(e)
	}
	return e.AppendBinary(nil)
}

// storedValue is an account's or record's stored form for enc: each is
// encoded once, in the form it is stored in.
func storedValue(enc uint8, v interface{ AppendBinary([]byte) []byte }) []byte {
	if enc == ledger.EncJSON {
		return mustJSON(v)
	}
	return v.AppendBinary(nil)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("fsm: encode %T: %v", v, err))
	}
	return b
}

// writer packs entries into Badger transactions. An entry's writes never
// straddle two transactions unless the entry alone is too large for one;
// then the dirty marker guards the gap (see resetIfDirty).
type writer struct {
	f        *FSM
	txn      *badger.Txn
	size, n  int64
	maxSize  int64
	maxCount int64
	pending  bool     // txn holds writes not yet committed
	undo     [][]byte // pre-image keys of an oversize entry (undo.go)
	last     meta
}

func (f *FSM) newWriter() *writer {
	db := f.db
	return &writer{f: f, txn: db.NewTransaction(true), last: f.applied,
		maxSize: db.MaxBatchSize() * 8 / 10, maxCount: db.MaxBatchCount() * 8 / 10}
}

// estimate is a generous bound of Badger's own accounting of one write.
func estimate(x kv) int64 { return int64(len(x.k)+len(x.v)) + 32 }

func (w *writer) entry(index uint64, kvs []kv) {
	var size int64
	for _, x := range kvs {
		size += estimate(x)
	}
	n := int64(len(kvs)) + 1
	if w.pending && (w.size+size > w.maxSize || w.n+n > w.maxCount) {
		w.commit()
	}
	if size > w.maxSize || n > w.maxCount {
		w.large(index, kvs)
	} else {
		for _, x := range kvs {
			w.set(x)
		}
		w.size += size
		w.n += n
	}
	w.pending = true
	w.last = meta{Index: index, Seq: w.f.st.Seq, Head: w.f.st.Head, Time: w.f.st.Time}
	w.f.applied = w.last
}

// large writes one oversized entry across several transactions between a
// dirty marker and the commit that clears it with the new applied index,
// after the pre-images that let Open roll it back (undo.go).
func (w *writer) large(index uint64, kvs []kv) {
	w.saveUndo(kvs)
	mark := binary.BigEndian.AppendUint64(nil, index)
	w.set(kv{k: keyDirty, v: mark})
	w.flush()
	for _, x := range kvs {
		if w.size+estimate(x) > w.maxSize || w.n+1 > w.maxCount {
			w.flush()
		}
		w.set(x)
		w.size += estimate(x)
		w.n++
	}
	w.set(kv{k: keyDirty, del: true})
}

func (w *writer) set(x kv) {
	var err error
	if x.del {
		err = w.txn.Delete(x.k)
	} else {
		err = w.txn.Set(x.k, x.v)
	}
	if err != nil {
		panic(fmt.Sprintf("fsm: shard %d: write: %v", w.f.shard, err))
	}
}

// flush commits what the transaction holds, without touching the applied
// index, and starts a new one.
func (w *writer) flush() {
	if failpoint.Enabled {
		if err := failpoint.Err("fsync-error"); err != nil {
			panic(fmt.Sprintf("fsm: shard %d: commit: %v", w.f.shard, err))
		}
	}
	if err := w.txn.Commit(); err != nil {
		// The state cannot be persisted: stopping is the only safe answer;
		// after a restart the boot rule replays from the last good index.
		panic(fmt.Sprintf("fsm: shard %d: commit: %v", w.f.shard, err))
	}
	if w.f.afterCommit != nil {
		w.f.afterCommit()
	}
	w.txn = w.f.db.NewTransaction(true)
	w.f.txn = w.txn
	w.size, w.n = 0, 0
}

// commit writes the applied index with the effects and commits, if any
// entry was added since the last commit.
func (w *writer) commit() {
	if !w.pending {
		return
	}
	if !plant.NoApplied {
		w.set(kv{k: keyMeta, v: w.last.encode()})
	}
	w.flush()
	w.pending = false
	if w.undo != nil {
		w.dropUndo()
	}
}
