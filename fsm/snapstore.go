package fsm

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// SnapshotStore wraps the store Raft keeps its snapshots in. The FSM's own
// snapshots are markers (see Snapshot); when Raft opens one, to send it to
// a follower that is too far behind for the log, the store builds the full
// stream from the state in Badger instead. That stream is a point in time
// at or after the marker's position: the follower restores it and skips
// the entries it already covers, as after any restore (fsm/DESIGN.md).
// Full streams received from a leader are stored and opened as they are.
func (f *FSM) SnapshotStore(inner raft.SnapshotStore) raft.SnapshotStore {
	return &snapStore{SnapshotStore: inner, f: f}
}

type snapStore struct {
	raft.SnapshotStore
	f *FSM
}

// Open returns the snapshot's stream: a stored full stream as it is, or
// for a marker a full stream of the state, with the stream's size in the
// meta, as Raft sends it ahead of the stream.
func (s *snapStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(rc)
	m, ok, err := readMark(br)
	if !ok {
		return meta, readCloser{br, rc}, nil
	}
	rc.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("fsm: snapshot %s: %w", id, err)
	}
	return s.f.openFull(meta, m)
}

type readCloser struct {
	io.Reader
	io.Closer
}

// openFull streams the whole state as of now, which must be at or after
// the marker m. Raft sends the size ahead of the stream, so the size is
// taken first from the keys and value sizes alone (every value is stored
// inline in the LSM, see openDB), then the stream is piped from the same
// read transaction: nothing is copied to disk, and a leader that retries a
// follower that is down reads no values.
func (f *FSM) openFull(meta *raft.SnapshotMeta, m meta) (*raft.SnapshotMeta, io.ReadCloser, error) {
	if err := f.covers(m); err != nil {
		return nil, nil, err
	}
	snap, err := f.Snapshot()
	if err != nil {
		return nil, nil, err
	}
	s := snap.(*snapshot)
	size := s.size()
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		cw := &countingWriter{w: pw}
		err := s.write(cw)
		if err == nil && cw.n != size {
			err = fmt.Errorf("fsm: shard %d: snapshot stream of %d bytes, %d announced", f.shard, cw.n, size)
		}
		if err == nil {
			f.snapStats.Sent.Add(1)
			f.snapStats.SentBytes.Add(size)
		}
		pw.CloseWithError(err)
	}()
	out := *meta
	out.Size = size
	return &out, &fullStream{PipeReader: pr, done: done, release: s.Release}, nil
}

// size returns the length of the full stream write would produce.
func (s *snapshot) size() int64 {
	var hdr [binary.MaxVarintLen64]byte
	n := int64(len(snapMagic)) + 1 // the magic line and the end
	for _, k := range kinds.list {
		n += 2 // the code and the part's end
		for _, p := range k.prefixes {
			it := s.txn.NewIterator(badger.IteratorOptions{Prefix: p})
			for it.Rewind(); it.Valid(); it.Next() {
				item := it.Item()
				kl, vl := uint64(len(item.Key())), uint64(item.ValueSize())
				n += int64(binary.PutUvarint(hdr[:], kl)+binary.PutUvarint(hdr[:], vl)) + int64(kl+vl)
			}
			it.Close()
		}
	}
	return n
}

// covers checks that the state holds everything the marker stands for,
// and the same history: the event at the marker's seq has its head hash.
// It fails when the state directory lost writes Raft has compacted away,
// which this replica cannot recover by itself.
func (f *FSM) covers(m meta) error {
	idx, _ := f.Applied()
	if idx < m.Index {
		return fmt.Errorf("fsm: shard %d: state at index %d is behind its snapshot marker at %d: "+
			"the state directory lost writes; remove this node from the cluster, delete its data directory and join it again",
			f.shard, idx, m.Index)
	}
	h, err := f.HashAt(m.Seq)
	if err != nil {
		return fmt.Errorf("fsm: shard %d: snapshot marker at seq %d: %w", f.shard, m.Seq, err)
	}
	if h != m.Head {
		return fmt.Errorf("fsm: shard %d: snapshot marker at seq %d names head %s, the state has %s", f.shard, m.Seq, m.Head, h)
	}
	return nil
}

// fullStream is a full snapshot stream being written by a goroutine.
type fullStream struct {
	*io.PipeReader
	done    chan struct{}
	release func()
}

// Close stops the writer, waits for it and ends the read transaction.
func (s *fullStream) Close() error {
	s.PipeReader.Close()
	<-s.done
	s.release()
	return nil
}
