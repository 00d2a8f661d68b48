package fsm

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/dgraph-io/badger/v4"
)

// preUndo prefixes the pre-images of an oversize entry's writes: "m:u" and
// the written key; the value is 1 and the key's old value, or 0 when the
// key did not exist. They let Open roll a partly written entry back to the
// applied index, so the state on disk never falls behind a snapshot marker
// (snapshot.go), which a reset to an empty state would.
var preUndo = []byte("m:u")

// saveUndo writes the current value of every key kvs writes, before any of
// them is written, in as many transactions as it takes. The dirty marker
// is committed after them: Badger keeps a prefix of its commits, so with
// the marker on disk all the pre-images are too.
func (w *writer) saveUndo(kvs []kv) {
	seen := make(map[string]bool, len(kvs))
	for _, x := range kvs {
		if seen[string(x.k)] {
			continue
		}
		seen[string(x.k)] = true
		v := []byte{0}
		item, err := w.txn.Get(x.k)
		switch {
		case err == nil:
			old, err := item.ValueCopy(nil)
			if err != nil {
				panic(fmt.Sprintf("fsm: shard %d: read %q: %v", w.f.shard, x.k, err))
			}
			v = append([]byte{1}, old...)
		case !errors.Is(err, badger.ErrKeyNotFound):
			panic(fmt.Sprintf("fsm: shard %d: read %q: %v", w.f.shard, x.k, err))
		}
		u := kv{k: append(append([]byte{}, preUndo...), x.k...), v: v}
		if w.size+estimate(u) > w.maxSize || w.n+1 > w.maxCount {
			w.flush()
		}
		w.set(u)
		w.size += estimate(u)
		w.n++
		w.undo = append(w.undo, u.k)
	}
}

// dropUndo deletes the pre-images once the commit that deleted the dirty
// marker is done. If it does not finish, Open deletes what is left.
func (w *writer) dropUndo() {
	if err := deleteKeys(w.f.db, w.undo); err != nil {
		panic(fmt.Sprintf("fsm: shard %d: %v", w.f.shard, err))
	}
	w.undo = nil
}

// rollbackIfDirty returns a state that holds part of an oversize entry to
// the applied index it had before that entry, from the pre-images, then
// deletes them. The rollback is idempotent: a crash during it leaves the
// marker, and the next Open does it again.
func rollbackIfDirty(db *badger.DB, log *slog.Logger) error {
	err := db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(keyDirty)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return dropUndo(db)
	case err != nil:
		return fmt.Errorf("fsm: read dirty marker: %w", err)
	}
	log.Warn("state holds a partly written entry; rolling it back")
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	n := 0
	err = db.View(func(txn *badger.Txn) error {
		return eachValue(txn, preUndo, func(k, v []byte) error {
			if len(v) == 0 || v[0] > 1 {
				return fmt.Errorf("pre-image of %q: bad value", k[len(preUndo):])
			}
			key := append([]byte{}, k[len(preUndo):]...)
			n++
			if v[0] == 0 {
				return wb.Delete(key)
			}
			return wb.Set(key, append([]byte{}, v[1:]...))
		})
	})
	if err == nil {
		err = wb.Flush()
	}
	if err == nil {
		err = db.Update(func(txn *badger.Txn) error { return txn.Delete(keyDirty) })
	}
	if err != nil {
		return fmt.Errorf("fsm: roll back a partly written entry: %w", err)
	}
	log.Info("rolled back a partly written entry", "keys", n)
	return dropUndo(db)
}

// dropUndo deletes every pre-image.
func dropUndo(db *badger.DB) error {
	var keys [][]byte
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: preUndo})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil {
		return err
	}
	return deleteKeys(db, keys)
}

// deleteKeys deletes keys in as many transactions as it takes.
func deleteKeys(db *badger.DB, keys [][]byte) error {
	if len(keys) == 0 {
		return nil
	}
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range keys {
		if err := wb.Delete(k); err != nil {
			return fmt.Errorf("fsm: delete pre-images: %w", err)
		}
	}
	return wb.Flush()
}
