package fsm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"tally/internal/failpoint"
)

// snapMagic starts every snapshot stream.
const snapMagic = "TALLYSNAP1\n"

// maxSnapItem bounds one key or value read from a snapshot stream.
const maxSnapItem = 64 << 20

// Snapshot opens a read-only Badger transaction: a point-in-time view of
// everything applied so far, which Persist streams while apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	f.snaps.Add(1)
	return &snapshot{txn: f.db.NewTransaction(false), done: f.snaps.Done}, nil
}

type snapshot struct {
	txn  *badger.Txn
	done func()
}

// Persist writes every key and value as length-prefixed records after a
// magic line; a zero key length ends the stream.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if failpoint.Enabled {
		failpoint.Crash("crash-snapshot")
	}
	if err := s.write(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) write(out io.Writer) error {
	w := bufio.NewWriterSize(out, 1<<20)
	if _, err := w.WriteString(snapMagic); err != nil {
		return err
	}
	it := s.txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 256})
	defer it.Close()
	var hdr []byte
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		err := item.Value(func(v []byte) error {
			hdr = binary.AppendUvarint(hdr[:0], uint64(len(item.Key())))
			hdr = binary.AppendUvarint(hdr, uint64(len(v)))
			if _, err := w.Write(hdr); err != nil {
				return err
			}
			if _, err := w.Write(item.Key()); err != nil {
				return err
			}
			_, err := w.Write(v)
			return err
		})
		if err != nil {
			return err
		}
	}
	if err := w.WriteByte(0); err != nil {
		return err
	}
	return w.Flush()
}

// Release ends the read transaction.
func (s *snapshot) Release() {
	s.txn.Discard()
	s.done()
}

// Restore loads a snapshot into a fresh directory and swaps it in only when
// it is complete, so a failed restore leaves the old state untouched.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	cur, err := f.current()
	if err != nil {
		return err
	}
	n, _ := strconv.Atoi(strings.TrimPrefix(cur, "state-"))
	next := fmt.Sprintf("state-%d", n+1)
	path := filepath.Join(f.dir, next)
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	db, err := openDB(path)
	if err != nil {
		return err
	}
	if err := readSnapshot(rc, db); err != nil {
		db.Close()
		os.RemoveAll(path)
		return fmt.Errorf("fsm: restore shard %d: %w", f.shard, err)
	}
	installs, err := f.loadKinds(db)
	if err != nil {
		db.Close()
		os.RemoveAll(path)
		return fmt.Errorf("fsm: restore shard %d: %w", f.shard, err)
	}
	f.snaps.Wait()
	f.mu.Lock()
	old := f.db
	if err := writeFileSync(filepath.Join(f.dir, "CURRENT"), []byte(next+"\n")); err != nil {
		f.mu.Unlock()
		db.Close()
		return err
	}
	f.db = db
	for _, install := range installs {
		install()
	}
	f.mu.Unlock()
	if err := old.Close(); err != nil {
		f.log.Warn("close replaced state", "err", err)
	}
	if err := os.RemoveAll(filepath.Join(f.dir, cur)); err != nil {
		f.log.Warn("remove replaced state", "err", err)
	}
	f.publish()
	f.log.Info("restored snapshot", "applied_index", f.applied.Index, "seq", f.applied.Seq)
	return nil
}

func readSnapshot(r io.Reader, db *badger.DB) error {
	br := bufio.NewReaderSize(r, 1<<20)
	magic := make([]byte, len(snapMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapMagic {
		return errors.New("not a tally snapshot")
	}
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	for {
		kl, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("read key length: %w", err)
		}
		if kl == 0 {
			break
		}
		vl, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("read value length: %w", err)
		}
		if kl > maxSnapItem || vl > maxSnapItem {
			return fmt.Errorf("snapshot item of %d+%d bytes", kl, vl)
		}
		buf := make([]byte, kl+vl)
		if _, err := io.ReadFull(br, buf); err != nil {
			return fmt.Errorf("read item: %w", err)
		}
		// A fresh directory is swapped in only when complete, so a
		// WriteBatch's lack of atomicity does not matter here.
		if err := wb.Set(buf[:kl], buf[kl:]); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	return db.Sync()
}

// writeFileSync replaces a small file atomically and durably.
func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	fh, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("fsm: %w", err)
	}
	if _, err := fh.Write(b); err != nil {
		fh.Close()
		return fmt.Errorf("fsm: write %s: %w", tmp, err)
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return fmt.Errorf("fsm: sync %s: %w", tmp, err)
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("fsm: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("fsm: %w", err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("fsm: %w", err)
	}
	defer d.Close()
	return d.Sync()
}
