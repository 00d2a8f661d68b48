// Package fsm is the state machine of one shard: a raft.BatchingFSM that
// applies ledger commands and persists the event log, the balances, the
// transfer records and the applied Raft index in Badger, all in one
// transaction per batch. It is the only package that persists ledger state.
// Raft log entries carry one of the kinds registered in kinds.go.
package fsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"tally/internal/plant"
	"tally/ledger"
)

// FSM is one shard's state machine. Raft calls ApplyBatch, Snapshot and
// Restore from its FSM goroutine (never concurrently with each other);
// the read methods are safe for concurrent use from any goroutine and never
// block apply for long: they read committed Badger state.
type FSM struct {
	dir    string
	shard  int
	shards int
	log    *slog.Logger

	mu      sync.RWMutex // guards db against the swap in Restore
	db      *badger.DB
	st      *ledger.State // owned by the FSM goroutine
	ids     *idFilter     // record ids; FSM goroutine only
	applied meta          // owned by the FSM goroutine

	index   atomic.Uint64 // applied Raft index, for readers
	seq     atomic.Uint64 // applied seq, for readers
	nextExp atomic.Int64  // see ledger.State.NextExpiry; 0: none

	waitMu sync.Mutex
	waitCh chan struct{} // closed and replaced after every batch

	txn *badger.Txn // the batch being written; FSM goroutine only

	nodesMu sync.Mutex
	nodes   map[string]string // node directory, replaced on change

	rest      RestoreState  // restore.go; FSM goroutine only
	epoch     atomic.Uint64 // rest.Epoch once restored, for readers
	inRestore atomic.Bool   // rest.Restoring, for readers

	offMu   sync.Mutex
	offsets map[string]uint64 // consumer offsets (consumers.go)

	sagaMu    sync.Mutex
	sagas     map[string]ledger.Record // open sagas, for the driver (sagas.go)
	sagaDelta []ledger.Record          // the batch's saga records; FSM goroutine only
	sagaCh    chan struct{}            // closed and replaced when sagas change

	tail      tail     // the newest applied events, for streams (tail.go)
	tailDelta [][]byte // the batch's events; FSM goroutine only

	afterCommit func() // tests: crash between the commits of an oversize entry

	snaps     sync.WaitGroup // open snapshot read transactions
	snapStats SnapshotStats  // snapshots written (snapshot.go)
	closed    atomic.Bool
}

// Options configure Open.
type Options struct {
	Dir    string // the shard's state directory
	Shard  int
	Shards int
	Logger *slog.Logger // the caller names the shard in it
}

// Open opens (or creates) the shard's state in opts.Dir and loads the
// balances and open pending transfers into memory.
func Open(opts Options) (*FSM, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	f := &FSM{dir: opts.Dir, shard: opts.Shard, shards: opts.Shards,
		log: opts.Logger, waitCh: make(chan struct{})}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return nil, fmt.Errorf("fsm: %w", err)
	}
	cur, err := f.current()
	if err != nil {
		return nil, err
	}
	db, err := openDB(filepath.Join(f.dir, cur))
	if err != nil {
		return nil, err
	}
	if err := rollbackIfDirty(db, f.log); err != nil {
		db.Close()
		return nil, err
	}
	if err := f.load(db); err != nil {
		db.Close()
		return nil, err
	}
	return f, nil
}

// current returns the name of the live state directory, from the CURRENT
// file that Restore replaces atomically.
func (f *FSM) current() (string, error) {
	b, err := os.ReadFile(filepath.Join(f.dir, "CURRENT"))
	if errors.Is(err, os.ErrNotExist) {
		return "state-0", writeFileSync(filepath.Join(f.dir, "CURRENT"), []byte("state-0\n"))
	}
	if err != nil {
		return "", fmt.Errorf("fsm: read CURRENT: %w", err)
	}
	name := strings.TrimSpace(string(b))
	if !strings.HasPrefix(name, "state-") || strings.ContainsAny(name, "/\\") {
		return "", fmt.Errorf("fsm: CURRENT names %q", name)
	}
	return name, nil
}

// openDB opens Badger with options chosen for a 2-core machine and one
// writer per shard.
func openDB(dir string) (*badger.DB, error) {
	opts := badger.DefaultOptions(dir).
		// Commits are not fsynced: the Raft log is, on every replica,
		// before anything is acknowledged, and the state is derived from
		// it. Badger recovers a prefix of its commits after a power loss;
		// entries after the persisted applied index are replayed (and
		// those at or below it skipped); a snapshot syncs Badger before
		// its marker, so the state is never behind it. A synced commit
		// per batch cost a third of the one-transfer-per-request
		// throughput (fsm/DESIGN.md).
		WithSyncWrites(false).
		// One writer (the FSM goroutine): conflict detection is wasted work.
		WithDetectConflicts(false).
		// Memory, per shard: up to two 16 MiB memtables (their arenas are
		// on the Go heap) and small caches, so that a node of 4 shards
		// stays within its 512 MiB budget under the benchmark. A 16 MiB
		// memtable allows about 2.4 MiB per transaction; a larger entry
		// is written across several (see writer.large).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(8).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(8 << 20).
		// A compaction builds up to eight tables at once, each in a buffer
		// of twice the table size: with 2 MiB tables, the compactions of a
		// node of 4 shards with a few million events held about 300 MiB
		// of heap. Snappy stays: without it the heap of those compactions
		// fell by half but the tables took twice the disk, and their
		// mapped pages twice the resident memory.
		WithBaseTableSize(1 << 20).
		WithNumCompactors(2).
		// Every value stays in the LSM tree (no value log): the largest is
		// an event or record of a few KiB, and a full snapshot stream's
		// size is then known from the keys alone (snapstore.go).
		WithValueThreshold(1 << 20).
		WithLogger(nil)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("fsm: open badger %s: %w", dir, err)
	}
	return db, nil
}

// load reads every entry kind's state from db and makes db the live
// database.
func (f *FSM) load(db *badger.DB) error {
	installs, err := f.loadKinds(db)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.db = db
	for _, install := range installs {
		install()
	}
	f.mu.Unlock()
	f.publish()
	return nil
}

// loadState builds a ledger state from the committed contents of db.
func loadState(db *badger.DB, shard, shards int) (*ledger.State, meta, error) {
	st := ledger.NewState(shard, shards, nil)
	var m meta
	err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(keyMeta)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if m, err = decodeMeta(v); err != nil {
				return err
			}
		}
		if err := eachValue(txn, preAcct, func(_, v []byte) error {
			var a ledger.Account
			if err := ledger.DecodeAccount(v, &a); err != nil {
				return err
			}
			st.Accounts[a.Key()] = &a
			return nil
		}); err != nil {
			return fmt.Errorf("load accounts: %w", err)
		}
		return eachValue(txn, preOpen, func(k, _ []byte) error {
			r, ok, err := getRecord(txn, string(k[len(preOpen):]))
			if err != nil || !ok {
				return fmt.Errorf("open pending %q without record: %v", k, err)
			}
			st.Load(r)
			return nil
		})
	})
	if err != nil {
		return nil, meta{}, fmt.Errorf("fsm: load shard %d: %w", shard, err)
	}
	st.Seq, st.Head, st.Time, st.Index = m.Seq, m.Head, m.Time, m.Index
	return st, m, nil
}

func eachValue(txn *badger.Txn, prefix []byte, fn func(k, v []byte) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if err := fn(item.KeyCopy(nil), v); err != nil {
			return err
		}
	}
	return nil
}

func getRecord(txn *badger.Txn, id string) (*ledger.Record, bool, error) {
	item, err := txn.Get(key(preRec, id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	var r ledger.Record
	err = item.Value(func(v []byte) error { return ledger.DecodeRecord(v, &r) })
	if err != nil {
		return nil, false, err
	}
	return &r, true, nil
}

// publish makes the applied position visible to readers and wakes waiters.
func (f *FSM) publish() {
	f.publishSagas()
	f.tail.add(f.tailDelta)
	f.tailDelta = f.tailDelta[:0]
	f.index.Store(f.applied.Index)
	f.seq.Store(f.applied.Seq)
	if t, ok := f.st.NextExpiry(); ok && !f.rest.Restoring {
		f.nextExp.Store(int64(t))
	} else {
		f.nextExp.Store(0)
	}
	f.waitMu.Lock()
	close(f.waitCh)
	f.waitCh = make(chan struct{})
	f.waitMu.Unlock()
}

// Snapshots returns the counts of the snapshots this replica wrote.
func (f *FSM) Snapshots() *SnapshotStats { return &f.snapStats }

// Applied returns the applied Raft index and seq.
func (f *FSM) Applied() (index, seq uint64) { return f.index.Load(), f.seq.Load() }

// NextExpiry returns the log time by which an open pending transfer may
// have expired, if there is one.
func (f *FSM) NextExpiry() (ledger.Time, bool) {
	t := f.nextExp.Load()
	return ledger.Time(t), t != 0
}

// WaitIndex blocks until the applied Raft index reaches idx or ctx ends.
func (f *FSM) WaitIndex(ctx context.Context, idx uint64) error {
	return f.wait(ctx, func() bool { return f.index.Load() >= idx })
}

// WaitSeq blocks until the applied seq reaches seq or ctx ends.
func (f *FSM) WaitSeq(ctx context.Context, seq uint64) error {
	return f.wait(ctx, func() bool { return f.seq.Load() >= seq })
}

func (f *FSM) wait(ctx context.Context, done func() bool) error {
	for {
		f.waitMu.Lock()
		ch := f.waitCh
		f.waitMu.Unlock()
		if done() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close closes the database. It is idempotent.
func (f *FSM) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	f.snaps.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.db.Close(); err != nil {
		return fmt.Errorf("fsm: close shard %d: %w", f.shard, err)
	}
	return nil
}

// Record implements ledger.Store for the FSM goroutine: it reads the
// transaction being written, so records from earlier entries of the same
// batch are seen.
func (f *FSM) Record(id string) (*ledger.Record, bool) {
	if plant.NoIdem {
		return nil, false
	}
	if !f.ids.mayContain(id) {
		return nil, false // saves a Badger search for every new id
	}
	txn := f.txn
	if txn == nil {
		txn = f.db.NewTransaction(false)
		defer txn.Discard()
	}
	r, ok, err := getRecord(txn, id)
	if err != nil {
		// A record that cannot be read would make this replica decide
		// differently from the others: stop instead.
		panic(fmt.Sprintf("fsm: shard %d: read record %q: %v", f.shard, id, err))
	}
	return r, ok
}

var _ raft.BatchingFSM = (*FSM)(nil)
