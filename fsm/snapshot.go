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
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"tally/internal/failpoint"
)

// snapMagic starts every full snapshot stream: one part per entry kind.
// snapMagicV1 started the streams written before there were parts (every
// key, in key order); Restore still reads them. markMagic starts a
// snapshot marker: what Persist writes (see Snapshot).
const (
	snapMagic   = "TALLYSNAP2\n"
	snapMagicV1 = "TALLYSNAP1\n"
	markMagic   = "TALLYMARK1\n"
)

// maxSnapItem bounds one key or value read from a snapshot stream.
const maxSnapItem = 64 << 20

// Snapshot opens a read-only Badger transaction at the applied index.
// Persist syncs Badger and writes only a marker naming that position: the
// state in Badger is the snapshot, so a snapshot for log compaction costs
// the same whatever the shard's history. A full stream is built from
// Badger only when Raft opens the snapshot to send it to a follower
// (SnapshotStore).
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	f.snaps.Add(1)
	return &snapshot{f: f, db: f.db, txn: f.db.NewTransaction(false), done: f.snaps.Done, stats: &f.snapStats}, nil
}

type snapshot struct {
	f     *FSM
	db    *badger.DB
	txn   *badger.Txn
	done  func()
	stats *SnapshotStats
}

// SnapshotStats counts the snapshots a replica has written: how many, and
// the time and bytes they took in all, for operators who watch whether
// snapshots grow with history. Sent counts the full streams built for
// followers. Safe for concurrent use.
type SnapshotStats struct {
	Count     atomic.Int64
	Nanos     atomic.Int64 // total time spent writing them
	Bytes     atomic.Int64 // total bytes written
	Sent      atomic.Int64 // full streams built for followers
	SentBytes atomic.Int64
}

// countingWriter counts what passes through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// A marker is markMagic and the applied position it stands for, encoded as
// m:applied; its state is the replica's own Badger, synced first.
func encodeMark(m meta) []byte { return append([]byte(markMagic), m.encode()...) }

// readMark reads the marker at the start of br, if there is one: ok says
// whether br starts with markMagic, err whether the marker is bad.
func readMark(br *bufio.Reader) (m meta, ok bool, err error) {
	if head, _ := br.Peek(len(markMagic)); string(head) != markMagic {
		return meta{}, false, nil
	}
	b, err := io.ReadAll(io.LimitReader(br, 1<<10))
	if err == nil {
		m, err = decodeMeta(b[len(markMagic):])
	}
	if err != nil {
		return meta{}, true, fmt.Errorf("snapshot marker: %w", err)
	}
	return m, true, nil
}

// Persist makes the state durable up to the snapshot's position and
// writes a marker naming it. Badger commits are not synced (fsm/DESIGN.md),
// so the sync is what lets Raft drop the log entries the marker covers:
// after it, the state on disk is never behind the newest snapshot.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if failpoint.Enabled {
		failpoint.Crash("crash-snapshot")
	}
	start := time.Now()
	m, err := readMeta(s.txn)
	if err == nil {
		err = s.db.Sync()
	}
	var n int
	if err == nil {
		n, err = sink.Write(encodeMark(m))
	}
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return err
	}
	s.stats.Count.Add(1)
	s.stats.Nanos.Add(int64(time.Since(start)))
	s.stats.Bytes.Add(int64(n))
	return nil
}

// write writes the full stream of the snapshot's view: each registered
// kind's part after a magic line, the kind's code, then every key under
// its prefixes as length-prefixed records, ended by a zero key length. A
// zero code ends the stream.
func (s *snapshot) write(out io.Writer) error {
	w := bufio.NewWriterSize(out, 1<<20)
	if _, err := w.WriteString(snapMagic); err != nil {
		return err
	}
	for _, k := range kinds.list {
		if err := w.WriteByte(byte(k.code)); err != nil {
			return err
		}
		if err := s.writePart(w, k); err != nil {
			return fmt.Errorf("%s part: %w", k.name, err)
		}
	}
	if err := w.WriteByte(0); err != nil {
		return err
	}
	return w.Flush()
}

// writePart writes the records of every key k owns and the part's end.
func (s *snapshot) writePart(w *bufio.Writer, k *kind) error {
	var hdr []byte
	for _, p := range k.prefixes {
		it := s.txn.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: true, PrefetchSize: 256})
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
				it.Close()
				return err
			}
		}
		it.Close()
	}
	return w.WriteByte(0)
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
	br := bufio.NewReaderSize(rc, 1<<20)
	// A marker stands for this replica's own state: there is nothing to
	// load, only to check that the state covers it.
	if m, ok, err := readMark(br); ok {
		if err != nil {
			return fmt.Errorf("fsm: restore shard %d: %w", f.shard, err)
		}
		return f.covers(m)
	}
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
	if err := readSnapshot(br, db); err != nil {
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

// readSnapshot writes the keys of a snapshot stream into db. A fresh
// directory is swapped in only when complete, so a WriteBatch's lack of
// atomicity does not matter here.
func readSnapshot(r io.Reader, db *badger.DB) error {
	br := bufio.NewReaderSize(r, 1<<20)
	magic := make([]byte, len(snapMagic))
	if _, err := io.ReadFull(br, magic); err != nil {
		return errors.New("not a tally snapshot")
	}
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	var err error
	switch string(magic) {
	case snapMagic:
		err = readParts(br, wb)
	case snapMagicV1:
		err = readItems(br, wb, nil)
	default:
		return errors.New("not a tally snapshot")
	}
	if err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	return db.Sync()
}

// readParts reads one part per kind, in code order. A kind may have no
// part (a stream written before the kind existed); a kind this build does
// not know, a part out of order, or a key outside its kind fails the
// restore rather than losing state.
func readParts(br *bufio.Reader, wb *badger.WriteBatch) error {
	last := 0
	for {
		code, err := br.ReadByte()
		if err != nil {
			return fmt.Errorf("read part kind: %w", err)
		}
		if code == 0 {
			return nil
		}
		k := kinds.byCode[code]
		switch {
		case k == nil:
			return fmt.Errorf("part of unknown entry kind %d", code)
		case int(code) <= last:
			return fmt.Errorf("part of entry kind %d after kind %d", code, last)
		}
		last = int(code)
		if err := readItems(br, wb, k); err != nil {
			return fmt.Errorf("%s part: %w", k.name, err)
		}
	}
}

// readItems writes records up to a zero key length into wb; each key must
// belong to k, if k is not nil.
func readItems(br *bufio.Reader, wb *badger.WriteBatch, k *kind) error {
	for {
		kl, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("read key length: %w", err)
		}
		if kl == 0 {
			return nil
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
		if k != nil && !k.owns(buf[:kl]) {
			return fmt.Errorf("key %q is not the kind's", buf[:kl])
		}
		if err := wb.Set(buf[:kl], buf[kl:]); err != nil {
			return err
		}
	}
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
