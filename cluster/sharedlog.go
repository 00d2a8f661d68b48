package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// The Raft logs of all shards of a node live in one raft-boltdb store, so
// that the appends of shards that are ready together share one bolt
// commit and its fdatasyncs (DESIGN.md, "Shared log store").
const (
	indexBits = 48
	// markerIndex is, in every shard's key space, the key of the marker
	// that records which of the shard's indexes are present.
	markerIndex = 1<<indexBits - 1
	// MaxLogIndex is the largest Raft index a shard's view stores.
	MaxLogIndex = markerIndex - 1
	// MaxLogShards bounds the shards of one shared store.
	MaxLogShards  = 1 << (64 - indexBits)
	markerVersion = 1
)

// ErrLogClosed is returned by writes after SharedLog.Close.
var ErrLogClosed = errors.New("shared log store closed")

// key maps index i of a shard to its key in the shared store.
func key(shard, i uint64) uint64 { return shard<<indexBits | i }

// LogStats counts the work of a shared log store since it was opened.
type LogStats struct {
	// Commits are bolt write transactions; each fdatasyncs twice (the
	// pages, then the meta page).
	Commits uint64
	// Appends are the StoreLogs calls of the shards they served.
	Appends uint64
	// Entries are the Raft entries written, markers not counted.
	Entries uint64
	// Deletes are the DeleteRange calls that deleted something.
	Deletes uint64
}

// SharedLog is one raft-boltdb store (sync on) that holds the Raft logs
// of every shard of a node. Shard returns a shard's raft.LogStore. Writes
// are a group commit: a caller that finds no commit running writes what
// is queued, its own call included, in one bolt transaction; calls that
// arrive meanwhile queue, and the first of them writes them all next.
type SharedLog struct {
	inner *raftboltdb.BoltStore
	views []*ShardLog

	mu      sync.Mutex
	queue   []*logReq
	writing bool       // a caller is writing the queue
	idle    *sync.Cond // writing became false
	closed  bool

	// failed is set, by the writing caller, when a deletion whose intent is
	// durable did not complete: memory and disk may differ until the
	// node restarts and the open completes it, so writes are refused.
	failed error

	commits, appends, entries, deletes atomic.Uint64

	// For tests: beforeWrite runs before each commit; afterIntent between
	// a DeleteRange's intent and its deletion, and an error from it stops
	// there, as a crash would.
	beforeWrite func()
	afterIntent func() error
}

// ShardLog is one shard's raft.LogStore in a SharedLog: index i is key
// shard<<48|i of the shared store.
type ShardLog struct {
	s     *SharedLog
	shard uint64
	mu    sync.RWMutex
	// runs are the indexes present, as they are on disk; replaced, never
	// modified in place, so a reader may keep the slice it read.
	runs spans
}

type logReq struct {
	v    *ShardLog
	logs []*raft.Log // translated copies; nil for a deletion
	lo   uint64      // a deletion's range, when logs is nil
	hi   uint64
	done chan error
}

// OpenSharedLog opens (or creates) the shared log store at path for
// shards shards, and completes a deletion a crash cut short.
func OpenSharedLog(path string, shards int) (*SharedLog, error) {
	if shards < 1 || shards > MaxLogShards {
		return nil, fmt.Errorf("shared log: %d shards; 1 to %d fit", shards, MaxLogShards)
	}
	bs, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: boltOptions()})
	if err != nil {
		return nil, fmt.Errorf("open shared raft log: %w", err)
	}
	s := &SharedLog{inner: bs}
	s.idle = sync.NewCond(&s.mu)
	for i := 0; i < shards; i++ {
		v := &ShardLog{s: s, shard: uint64(i)}
		if err := v.recover(); err != nil {
			bs.Close()
			return nil, fmt.Errorf("shared raft log, shard %d: %w", i, err)
		}
		s.views = append(s.views, v)
	}
	return s, nil
}

// boltOptions: the map freelist without freelist sync makes commits
// cheaper; sync stays on.
func boltOptions() *bbolt.Options {
	return &bbolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType}
}

// Shard returns shard i's log store.
func (s *SharedLog) Shard(i int) *ShardLog { return s.views[i] }

// Stats returns the counters since the store was opened.
func (s *SharedLog) Stats() LogStats {
	return LogStats{Commits: s.commits.Load(), Appends: s.appends.Load(),
		Entries: s.entries.Load(), Deletes: s.deletes.Load()}
}

// Close waits for the queued writes, then closes the store. Writes after
// Close fail with ErrLogClosed.
func (s *SharedLog) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for s.writing {
		s.idle.Wait()
	}
	s.mu.Unlock()
	return s.inner.Close()
}

// errLead tells a queued caller that it writes the queue now.
var errLead = errors.New("write the queue")

// submit queues r and returns its outcome. With no commit running, the
// caller writes at once: no hand-over to another goroutine when the
// shards are not busy together.
func (s *SharedLog) submit(r *logReq) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrLogClosed
	}
	s.queue = append(s.queue, r)
	lead := !s.writing
	s.writing = true
	s.mu.Unlock()
	if !lead {
		if err := <-r.done; err != errLead {
			return err
		}
	}
	s.writeQueue()
	return <-r.done
}

// writeQueue writes every queued call, then hands the writing to the
// first call queued meanwhile, rather than writing it too: its own
// caller (a shard's Raft loop) should not wait for other shards' commits.
// There is no timer: a commit takes what queued while the one before it
// ran.
func (s *SharedLog) writeQueue() {
	s.mu.Lock()
	batch := s.queue
	s.queue = nil
	s.mu.Unlock()
	// A commit ends at a deletion: an append queued after it may write
	// into its range, and the deletion runs after the commit.
	for len(batch) > 0 {
		n := len(batch)
		for i, r := range batch {
			if r.logs == nil {
				n = i + 1
				break
			}
		}
		err := s.failed
		if err == nil {
			err = s.write(batch[:n])
		}
		for _, r := range batch[:n] {
			r.done <- err
		}
		batch = batch[n:]
	}
	s.mu.Lock()
	if len(s.queue) > 0 {
		next := s.queue[0]
		s.mu.Unlock()
		next.done <- errLead
		return
	}
	s.writing = false
	s.idle.Broadcast()
	s.mu.Unlock()
}

// write stores the appends of reqs and every touched shard's marker in
// one inner StoreLogs call. A deletion (only ever last in reqs) is
// recorded in its shard's marker as the intent, then deleted.
func (s *SharedLog) write(reqs []*logReq) error {
	if s.beforeWrite != nil {
		s.beforeWrite()
	}
	type change struct {
		v    *ShardLog
		runs spans
	}
	var changed []*change
	get := func(v *ShardLog) *change {
		for _, c := range changed {
			if c.v == v {
				return c
			}
		}
		v.mu.RLock()
		c := &change{v: v, runs: append(spans(nil), v.runs...)}
		v.mu.RUnlock()
		changed = append(changed, c)
		return c
	}
	var logs []*raft.Log
	var del *logReq
	appends, entries := 0, 0
	for _, r := range reqs {
		if r.logs == nil {
			// A deletion of nothing writes nothing.
			r.v.mu.RLock()
			cur := r.v.runs
			r.v.mu.RUnlock()
			for _, c := range changed {
				if c.v == r.v {
					cur = c.runs
				}
			}
			if !cur.disjoint(r.lo, r.hi) {
				c := get(r.v)
				c.runs, del = c.runs.remove(r.lo, r.hi), r
			}
			continue
		}
		c := get(r.v)
		for i := 0; i < len(r.logs); {
			lo := r.logs[i].Index
			j := i + 1
			for j < len(r.logs) && r.logs[j].Index == r.logs[j-1].Index+1 {
				j++
			}
			c.runs = c.runs.add(span{lo & markerIndex, r.logs[j-1].Index & markerIndex})
			i = j
		}
		logs = append(logs, r.logs...)
		appends++
		entries += len(r.logs)
	}
	if len(logs) == 0 && del == nil {
		return nil // a deletion of nothing
	}
	for _, c := range changed {
		var intent span
		if del != nil && del.v == c.v {
			intent = span{del.lo, del.hi}
		}
		logs = append(logs, &raft.Log{Index: key(c.v.shard, markerIndex), Type: raft.LogCommand,
			Data: encodeMarker(c.runs, intent)})
	}
	if err := s.inner.StoreLogs(logs); err != nil {
		return err
	}
	s.commits.Add(1)
	s.appends.Add(uint64(appends))
	s.entries.Add(uint64(entries))
	// The markers are durable: memory follows them.
	for _, c := range changed {
		c.v.mu.Lock()
		c.v.runs = c.runs
		c.v.mu.Unlock()
	}
	if del == nil {
		return nil
	}
	if s.afterIntent != nil {
		if err := s.afterIntent(); err != nil {
			s.failed = err
			return err
		}
	}
	if err := s.inner.DeleteRange(key(del.v.shard, del.lo), key(del.v.shard, del.hi)); err != nil {
		s.failed = fmt.Errorf("shared raft log: deletion after its intent: %w", err)
		return s.failed
	}
	s.commits.Add(1)
	s.deletes.Add(1)
	return nil
}

// recover reads the shard's marker at open and completes the deletion it
// names, if any: the marker is written before the deletion, so a crash
// may have left the range present.
func (v *ShardLog) recover() error {
	var m raft.Log
	err := v.s.inner.GetLog(key(v.shard, markerIndex), &m)
	if errors.Is(err, raft.ErrLogNotFound) {
		return nil // the shard never wrote here
	}
	if err != nil {
		return err
	}
	runs, intent, err := decodeMarker(m.Data)
	if err != nil {
		return err
	}
	if intent.hi != 0 {
		if err := v.s.inner.DeleteRange(key(v.shard, intent.lo), key(v.shard, intent.hi)); err != nil {
			return fmt.Errorf("complete deletion %d-%d: %w", intent.lo, intent.hi, err)
		}
	}
	// Every write carries its marker, so the ends must be there and the
	// neighbours beyond them absent; anything else is damage.
	var l raft.Log
	for _, r := range runs {
		for _, i := range []uint64{r.lo, r.hi} {
			if err := v.s.inner.GetLog(key(v.shard, i), &l); err != nil {
				return fmt.Errorf("marker names index %d: %w", i, err)
			}
		}
	}
	if n := len(runs); n > 0 {
		for _, i := range []uint64{runs[0].lo - 1, runs[n-1].hi + 1} {
			if i == 0 || i > MaxLogIndex {
				continue
			}
			if err := v.s.inner.GetLog(key(v.shard, i), &l); !errors.Is(err, raft.ErrLogNotFound) {
				return fmt.Errorf("index %d is outside the marker's %d-%d (%v)", i, runs[0].lo, runs[n-1].hi, err)
			}
		}
	}
	v.runs = runs
	return nil
}

// FirstIndex implements raft.LogStore.
func (v *ShardLog) FirstIndex() (uint64, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if len(v.runs) == 0 {
		return 0, nil
	}
	return v.runs[0].lo, nil
}

// LastIndex implements raft.LogStore.
func (v *ShardLog) LastIndex() (uint64, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if len(v.runs) == 0 {
		return 0, nil
	}
	return v.runs[len(v.runs)-1].hi, nil
}

// GetLog implements raft.LogStore.
func (v *ShardLog) GetLog(i uint64, l *raft.Log) error {
	if i == 0 || i > MaxLogIndex {
		return raft.ErrLogNotFound
	}
	if err := v.s.inner.GetLog(key(v.shard, i), l); err != nil {
		return err
	}
	l.Index = i
	return nil
}

// StoreLog implements raft.LogStore.
func (v *ShardLog) StoreLog(l *raft.Log) error { return v.StoreLogs([]*raft.Log{l}) }

// StoreLogs implements raft.LogStore: it returns once the entries are
// durable, written in one commit with those of the shards that were
// ready at the same time. Raft's logs are copied, never changed: the
// LogCache above keeps them.
func (v *ShardLog) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	copies := make([]raft.Log, len(logs))
	out := make([]*raft.Log, len(logs))
	for i, l := range logs {
		if l.Index == 0 || l.Index > MaxLogIndex {
			return fmt.Errorf("shared raft log: index %d of shard %d is out of 1-%d", l.Index, v.shard, uint64(MaxLogIndex))
		}
		copies[i] = *l
		copies[i].Index = key(v.shard, l.Index)
		out[i] = &copies[i]
	}
	return v.s.submit(&logReq{v: v, logs: out, done: make(chan error, 1)})
}

// DeleteRange implements raft.LogStore.
func (v *ShardLog) DeleteRange(lo, hi uint64) error {
	hi = min(hi, MaxLogIndex) // never the marker
	if hi == 0 || lo > hi {
		return nil
	}
	return v.s.submit(&logReq{v: v, lo: lo, hi: hi, done: make(chan error, 1)})
}

// span is the indexes lo through hi.
type span struct{ lo, hi uint64 }

// spans are sorted, disjoint and not adjacent.
type spans []span

// add merges x; r may be modified.
func (r spans) add(x span) spans {
	n := len(r)
	if n == 0 || r[n-1].hi+1 < x.lo {
		return append(r, x)
	}
	if r[n-1].lo <= x.lo {
		r[n-1].hi = max(r[n-1].hi, x.hi)
		return r
	}
	out := make(spans, 0, n+1)
	placed := false
	for _, y := range r {
		switch {
		case y.hi+1 < x.lo:
			out = append(out, y)
		case x.hi+1 < y.lo:
			if !placed {
				out, placed = append(out, x), true
			}
			out = append(out, y)
		default:
			x.lo, x.hi = min(x.lo, y.lo), max(x.hi, y.hi)
		}
	}
	if !placed {
		out = append(out, x)
	}
	return out
}

// remove returns r without lo through hi, in a new slice.
func (r spans) remove(lo, hi uint64) spans {
	out := make(spans, 0, len(r)+1)
	for _, y := range r {
		if y.hi < lo || y.lo > hi {
			out = append(out, y)
			continue
		}
		if y.lo < lo {
			out = append(out, span{y.lo, lo - 1})
		}
		if y.hi > hi {
			out = append(out, span{hi + 1, y.hi})
		}
	}
	return out
}

// disjoint reports whether no index lo through hi is in r.
func (r spans) disjoint(lo, hi uint64) bool {
	for _, y := range r {
		if y.lo <= hi && lo <= y.hi {
			return false
		}
	}
	return true
}

// A marker is: version, the intent (a deletion, 0 0 for none), then the
// runs of present indexes, each as its first index and its length - 1,
// all uvarints.
func encodeMarker(runs spans, intent span) []byte {
	b := []byte{markerVersion}
	b = binary.AppendUvarint(b, intent.lo)
	b = binary.AppendUvarint(b, intent.hi)
	b = binary.AppendUvarint(b, uint64(len(runs)))
	for _, r := range runs {
		b = binary.AppendUvarint(b, r.lo)
		b = binary.AppendUvarint(b, r.hi-r.lo)
	}
	return b
}

func decodeMarker(b []byte) (spans, span, error) {
	bad := func(what string) (spans, span, error) {
		return nil, span{}, fmt.Errorf("bad log marker: %s", what)
	}
	if len(b) == 0 || b[0] != markerVersion {
		return bad("version")
	}
	b = b[1:]
	next := func() (uint64, bool) {
		x, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return x, true
	}
	var intent span
	var n uint64
	var ok1, ok2, ok3 bool
	intent.lo, ok1 = next()
	intent.hi, ok2 = next()
	n, ok3 = next()
	if !ok1 || !ok2 || !ok3 || intent.hi > MaxLogIndex || n > uint64(len(b)) {
		return bad("header")
	}
	runs := make(spans, 0, n)
	for i := uint64(0); i < n; i++ {
		lo, ok1 := next()
		d, ok2 := next()
		if !ok1 || !ok2 || lo == 0 || d > MaxLogIndex || lo > MaxLogIndex-d {
			return bad("run")
		}
		if len(runs) > 0 && runs[len(runs)-1].hi+1 >= lo {
			return bad("runs out of order")
		}
		runs = append(runs, span{lo, lo + d})
	}
	if len(b) != 0 {
		return bad("trailing bytes")
	}
	return runs, intent, nil
}

// legacyLogs lists the indexes present in the log bucket of a per-shard
// raft-boltdb file of an older build, without decoding them. It must run
// before the file is opened as a store: bolt locks the file.
func legacyLogs(path string) (spans, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	var out spans
	err = db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("logs"))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("log key of %d bytes", len(k))
			}
			i := binary.BigEndian.Uint64(k)
			out = out.add(span{i, i})
			return nil
		})
	})
	return out, err
}

// migrate moves the entries present in old (an older build's per-shard
// store) into v, then deletes them from old. The shard's entries in the
// shared store are dropped first: while old holds entries it is the
// shard's log, and a copy a crash cut short is made again from the start.
func (v *ShardLog) migrate(old raft.LogStore, present spans) (int, error) {
	if len(present) == 0 {
		return 0, nil
	}
	if present[0].lo == 0 || present[len(present)-1].hi > MaxLogIndex {
		return 0, fmt.Errorf("indexes %d-%d do not fit the shared log", present[0].lo, present[len(present)-1].hi)
	}
	if err := v.DeleteRange(1, MaxLogIndex); err != nil {
		return 0, err
	}
	const chunkEntries, chunkBytes = 1024, 4 << 20
	var batch []*raft.Log
	size, moved := 0, 0
	flush := func() error {
		if err := v.StoreLogs(batch); err != nil {
			return err
		}
		moved += len(batch)
		batch, size = nil, 0
		return nil
	}
	for _, r := range present {
		for i := r.lo; i <= r.hi; i++ {
			l := new(raft.Log)
			if err := old.GetLog(i, l); err != nil {
				return moved, fmt.Errorf("read old log %d: %w", i, err)
			}
			batch = append(batch, l)
			size += len(l.Data)
			if len(batch) == chunkEntries || size >= chunkBytes {
				if err := flush(); err != nil {
					return moved, err
				}
			}
		}
	}
	if err := flush(); err != nil {
		return moved, err
	}
	// Only now is every entry durable in the shared store.
	if err := old.DeleteRange(present[0].lo, present[len(present)-1].hi); err != nil {
		return moved, fmt.Errorf("delete old logs: %w", err)
	}
	return moved, nil
}
