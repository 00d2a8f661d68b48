package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

func openShared(t *testing.T, path string, shards int) *SharedLog {
	t.Helper()
	s, err := OpenSharedLog(path, shards)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func entry(shard int, i, term uint64, tag string) *raft.Log {
	return &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: fmt.Appendf(nil, "s%d-i%d-%s", shard, i, tag)}
}

func entries(shard int, from, to, term uint64, tag string) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, entry(shard, i, term, tag))
	}
	return out
}

// Appends from many shards that wait together are written by one commit,
// and every caller reads back its own entries under its own indexes.
func TestSharedLogCoalescesShards(t *testing.T) {
	const shards = 8
	s := openShared(t, filepath.Join(t.TempDir(), "log.db"), shards)
	defer s.Close()

	// The first commit waits until the seven other shards have queued.
	var first atomic.Bool
	s.beforeWrite = func() {
		if !first.CompareAndSwap(false, true) {
			return
		}
		for {
			s.mu.Lock()
			n := len(s.queue)
			s.mu.Unlock()
			if n == shards-1 {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for sh := 0; sh < shards; sh++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if sh > 0 {
				<-start
			}
			logs := entries(sh, 1, 10, 3, "a")
			if sh == 0 {
				close(start)
			}
			if err := s.Shard(sh).StoreLogs(logs); err != nil {
				t.Error(err)
			}
			// Raft's entries keep their indexes: the LogCache holds them.
			for k, l := range logs {
				if l.Index != uint64(k+1) {
					t.Errorf("shard %d: StoreLogs changed an index to %d", sh, l.Index)
				}
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	if st.Commits != 2 || st.Appends != shards || st.Entries != shards*10 {
		t.Fatalf("stats %+v, want 2 commits for %d appends of %d entries", st, shards, shards*10)
	}
	for sh := 0; sh < shards; sh++ {
		checkRange(t, s.Shard(sh), 1, 10)
		for i := uint64(1); i <= 10; i++ {
			var l raft.Log
			if err := s.Shard(sh).GetLog(i, &l); err != nil {
				t.Fatal(err)
			}
			if want := entry(sh, i, 3, "a"); l.Index != i || !bytes.Equal(l.Data, want.Data) {
				t.Fatalf("shard %d index %d: got %d %q", sh, i, l.Index, l.Data)
			}
		}
	}
}

// Without any help, concurrent appends still share commits.
func TestSharedLogCoalescesUnderLoad(t *testing.T) {
	const shards, calls = 8, 30
	s := openShared(t, filepath.Join(t.TempDir(), "log.db"), shards)
	defer s.Close()
	var wg sync.WaitGroup
	for sh := 0; sh < shards; sh++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := uint64(0); c < calls; c++ {
				if err := s.Shard(sh).StoreLogs(entries(sh, 2*c+1, 2*c+2, 1, "b")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	t.Logf("%d appends, %d entries in %d commits", st.Appends, st.Entries, st.Commits)
	if st.Appends != shards*calls || st.Entries != 2*shards*calls || st.Commits >= st.Appends {
		t.Fatalf("stats %+v: appends did not share commits", st)
	}
	for sh := 0; sh < shards; sh++ {
		checkRange(t, s.Shard(sh), 1, 2*calls)
	}
}

func checkRange(t *testing.T, v raft.LogStore, first, last uint64) {
	t.Helper()
	f, err1 := v.FirstIndex()
	l, err2 := v.LastIndex()
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	if f != first || l != last {
		t.Fatalf("first, last = %d, %d; want %d, %d", f, l, first, last)
	}
}

func TestSharedLogLimits(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenSharedLog(filepath.Join(dir, "a.db"), MaxLogShards+1); err == nil {
		t.Fatal("opened with more shards than the key has room for")
	}
	s := openShared(t, filepath.Join(dir, "b.db"), 2)
	defer s.Close()
	v := s.Shard(1)
	for _, i := range []uint64{0, MaxLogIndex + 1, 1 << 63} {
		if err := v.StoreLogs([]*raft.Log{{Index: i}}); err == nil {
			t.Fatalf("stored index %d", i)
		}
	}
	if err := v.StoreLogs(entries(1, MaxLogIndex-1, MaxLogIndex, 1, "top")); err != nil {
		t.Fatal(err)
	}
	checkRange(t, v, MaxLogIndex-1, MaxLogIndex)
	// A range past the top never reaches the marker.
	if err := v.DeleteRange(MaxLogIndex, 1<<64-1); err != nil {
		t.Fatal(err)
	}
	checkRange(t, v, MaxLogIndex-1, MaxLogIndex-1)
	var l raft.Log
	if err := v.GetLog(MaxLogIndex+1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog past the top: %v", err)
	}
	s.Close()
	s = openShared(t, filepath.Join(dir, "b.db"), 2)
	defer s.Close()
	checkRange(t, s.Shard(1), MaxLogIndex-1, MaxLogIndex-1)
	checkRange(t, s.Shard(0), 0, 0)
}

// op is one operation of the model test on one shard's store.
type op struct {
	del    bool
	lo, hi uint64
	term   uint64
	tag    string
}

func (o op) apply(shard int, s raft.LogStore) error {
	if o.del {
		return s.DeleteRange(o.lo, o.hi)
	}
	return s.StoreLogs(entries(shard, o.lo, o.hi, o.term, o.tag))
}

// raftOp draws what Raft does to a log: appends after the last index,
// compaction of a prefix, truncation of a suffix after a conflict, and
// the jump past a gap after a snapshot is installed.
func raftOp(rng *rand.Rand, first, last uint64, round int) op {
	tag := fmt.Sprint(round)
	n := uint64(1 + rng.Intn(8))
	switch p := rng.Intn(100); {
	case last == 0 || p < 55:
		return op{lo: last + 1, hi: last + n, term: uint64(round), tag: tag}
	case p < 65:
		gap := uint64(1 + rng.Intn(20))
		return op{lo: last + gap + 1, hi: last + gap + n, term: uint64(round), tag: tag}
	case p < 80:
		return op{del: true, lo: first, hi: first + uint64(rng.Int63n(int64(last-first+3)))}
	default:
		return op{del: true, lo: first + uint64(rng.Int63n(int64(last-first+1))), hi: last}
	}
}

// anyOp draws any call the LogStore contract allows: overwrites, ranges
// anywhere, empty and inverted ranges.
func anyOp(rng *rand.Rand, first, last uint64, round int) op {
	top := last + 10
	a, b := uint64(rng.Int63n(int64(top)+1)), uint64(rng.Int63n(int64(top)+1))
	if rng.Intn(2) == 0 {
		return op{del: true, lo: a, hi: b}
	}
	lo := max(min(a, b), 1)
	return op{lo: lo, hi: min(lo+uint64(rng.Intn(12)), max(a, b, lo)), term: uint64(round), tag: fmt.Sprint(round)}
}

// Each shard's view answers First, Last and GetLog exactly as a plain
// raft-boltdb store given the same calls, through coalesced commits of
// several shards, a reopen after every round, and gaps. The model is a
// BoltStore rather than raft.InmemStore: after a DeleteRange, InmemStore
// derives First and Last from the range's bounds, not from what is left,
// which differs from the store Raft runs on once the log has a gap.
func TestSharedLogModel(t *testing.T) {
	for _, tc := range []struct {
		name string
		draw func(*rand.Rand, uint64, uint64, int) op
	}{{"raft", raftOp}, {"any", anyOp}} {
		t.Run(tc.name, func(t *testing.T) {
			const shards, rounds = 3, 120
			dir := t.TempDir()
			path := filepath.Join(dir, "shared.db")
			s := openShared(t, path, shards)
			defer func() { s.Close() }()
			refs := make([]*raftboltdb.BoltStore, shards)
			for i := range refs {
				var err error
				refs[i], err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, fmt.Sprintf("ref%d.db", i)), NoSync: true})
				if err != nil {
					t.Fatal(err)
				}
				defer refs[i].Close()
			}
			seed := time.Now().UnixNano()
			rng := rand.New(rand.NewSource(seed))
			t.Logf("seed %d", seed)
			top := uint64(0)
			var total LogStats
			for round := 1; round <= rounds; round++ {
				ops := make([]op, shards)
				for i := range ops {
					first, _ := refs[i].FirstIndex()
					last, _ := refs[i].LastIndex()
					ops[i] = tc.draw(rng, first, last, round)
					if err := ops[i].apply(i, refs[i]); err != nil {
						t.Fatal(err)
					}
					if !ops[i].del {
						top = max(top, ops[i].hi)
					}
				}
				var wg sync.WaitGroup
				for i := range ops {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := ops[i].apply(i, s.Shard(i)); err != nil {
							t.Error(err)
						}
					}()
				}
				wg.Wait()
				for i := range refs {
					sameLog(t, fmt.Sprintf("round %d shard %d after %+v", round, i, ops[i]), refs[i], s.Shard(i), top)
				}
				st := s.Stats()
				total.Commits += st.Commits
				total.Appends += st.Appends
				total.Entries += st.Entries
				total.Deletes += st.Deletes
				s.Close()
				s = openShared(t, path, shards)
				for i := range refs {
					sameLog(t, fmt.Sprintf("round %d shard %d reopened", round, i), refs[i], s.Shard(i), top)
				}
			}
			t.Logf("%+v", total)
		})
	}
}

func sameLog(t *testing.T, what string, want, got raft.LogStore, top uint64) {
	t.Helper()
	wf, _ := want.FirstIndex()
	wl, _ := want.LastIndex()
	gf, _ := got.FirstIndex()
	gl, _ := got.LastIndex()
	if wf != gf || wl != gl {
		t.Fatalf("%s: first, last = %d, %d; want %d, %d", what, gf, gl, wf, wl)
	}
	for i := uint64(0); i <= top+2; i++ {
		var w, g raft.Log
		werr, gerr := want.GetLog(i, &w), got.GetLog(i, &g)
		if !errors.Is(werr, gerr) && (werr != nil || gerr != nil) {
			t.Fatalf("%s: GetLog(%d) = %v, want %v", what, i, gerr, werr)
		}
		if werr == nil && (g.Index != w.Index || g.Term != w.Term || g.Type != w.Type || !bytes.Equal(g.Data, w.Data)) {
			t.Fatalf("%s: GetLog(%d) = %d/%d %q, want %d/%d %q", what, i, g.Index, g.Term, g.Data, w.Index, w.Term, w.Data)
		}
	}
}

var errCrash = errors.New("simulated crash")

// A crash after a deletion's intent is durable and before the deletion
// leaves the entries on disk; the open deletes them.
func TestSharedLogCrashBeforeDeletion(t *testing.T) {
	for _, tc := range []struct {
		name        string
		lo, hi      uint64
		first, last uint64
	}{
		{"compaction", 1, 60, 61, 130},
		{"truncation", 80, 200, 1, 79},
		{"compaction into a gap", 1, 110, 121, 130},
		{"everything", 1, 200, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log.db")
			s := openShared(t, path, 2)
			for sh := 0; sh < 2; sh++ {
				if err := s.Shard(sh).StoreLogs(entries(sh, 1, 100, 1, "x")); err != nil {
					t.Fatal(err)
				}
				if err := s.Shard(sh).StoreLogs(entries(sh, 121, 130, 2, "y")); err != nil {
					t.Fatal(err)
				}
			}
			s.afterIntent = func() error { return errCrash }
			if err := s.Shard(0).DeleteRange(tc.lo, tc.hi); !errors.Is(err, errCrash) {
				t.Fatalf("DeleteRange: %v", err)
			}
			// Memory and disk differ now: the store refuses writes.
			if err := s.Shard(1).StoreLogs(entries(1, 131, 131, 2, "z")); !errors.Is(err, errCrash) {
				t.Fatalf("a write after the failure: %v", err)
			}
			s.Close()

			// The crash left the range on disk.
			raw, err := raftboltdb.New(raftboltdb.Options{Path: path})
			if err != nil {
				t.Fatal(err)
			}
			var l raft.Log
			if err := raw.GetLog(key(0, tc.lo), &l); err != nil {
				t.Fatalf("the deletion ran before the crash: %v", err)
			}
			raw.Close()

			s = openShared(t, path, 2)
			defer s.Close()
			checkRange(t, s.Shard(0), tc.first, tc.last)
			checkRange(t, s.Shard(1), 1, 130)
			for i := tc.lo; i <= min(tc.hi, 130); i++ {
				if err := s.Shard(0).GetLog(i, &l); !errors.Is(err, raft.ErrLogNotFound) {
					t.Fatalf("index %d survived the deletion: %v", i, err)
				}
			}
			// The shard writes on; a later open finds nothing to redo.
			next := max(tc.last, 130) + 1
			if err := s.Shard(0).StoreLogs(entries(0, next, next+4, 3, "w")); err != nil {
				t.Fatal(err)
			}
			if tc.last == 0 {
				tc.first = next
			}
			s.Close()
			s = openShared(t, path, 2)
			checkRange(t, s.Shard(0), tc.first, next+4)
		})
	}
}

// An older build's per-shard raft.db with a log (and a gap in it) opens
// with its log moved to the shared store and its term kept; a move cut
// short is made again.
func TestSharedLogUpgrade(t *testing.T) {
	dir := t.TempDir()
	rdir := filepath.Join(dir, "shard-1", "raft")
	old, err := raftboltdb.New(raftboltdb.Options{Path: mkdir(t, rdir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	logs := append(entries(1, 5, 2000, 2, "old"), entries(1, 2100, 2300, 3, "old")...)
	if err := old.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := old.SetUint64([]byte("CurrentTerm"), 3); err != nil {
		t.Fatal(err)
	}
	old.Close()
	present, err := legacyLogs(filepath.Join(rdir, "raft.db"))
	if err != nil || len(present) != 2 {
		t.Fatalf("old log holds %v (%v)", present, err)
	}

	shared := filepath.Join(dir, "raft-log.db")
	s := openShared(t, shared, 2)
	// A move that fails after 1,500 entries: a crash in the middle.
	old, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(rdir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Shard(1).migrate(&failingReads{LogStore: old, left: 1500}, present); !errors.Is(err, errCrash) {
		t.Fatalf("migrate: %v", err)
	}
	old.Close()
	s.Close()

	s = openShared(t, shared, 2)
	defer s.Close()
	st, closer, err := openLogStores(rdir, s.Shard(1), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	checkRange(t, st, 5, 2300)
	for _, l := range logs {
		var g raft.Log
		if err := st.GetLog(l.Index, &g); err != nil || !bytes.Equal(g.Data, l.Data) || g.Term != l.Term {
			t.Fatalf("index %d: %v %q", l.Index, err, g.Data)
		}
	}
	var g raft.Log
	if err := st.GetLog(2050, &g); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("the gap: %v", err)
	}
	if term, err := st.GetUint64([]byte("CurrentTerm")); err != nil || term != 3 {
		t.Fatalf("term %d, %v", term, err)
	}
	checkRange(t, s.Shard(0), 0, 0)
	closer.Close()
	if left, err := legacyLogs(filepath.Join(rdir, "raft.db")); err != nil || len(left) != 0 {
		t.Fatalf("raft.db still holds %v (%v)", left, err)
	}
	// Opening again moves nothing and finds the same log.
	st, closer, err = openLogStores(rdir, s.Shard(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	checkRange(t, st, 5, 2300)
}

func mkdir(t *testing.T, dir, name string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}

type failingReads struct {
	raft.LogStore
	left int
}

func (f *failingReads) GetLog(i uint64, l *raft.Log) error {
	if f.left == 0 {
		return errCrash
	}
	f.left--
	return f.LogStore.GetLog(i, l)
}

// counter is an FSM that counts the entries it applied.
type counter struct{ n atomic.Int64 }

func (c *counter) Apply(*raft.Log) interface{}         { return c.n.Add(1) }
func (c *counter) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (c *counter) Restore(io.ReadCloser) error         { return errors.New("no snapshots") }

// A group that ran on an older build's raft.db runs on after the upgrade,
// with its whole log, and its raft.db then holds no entry.
func TestGroupUpgradesToSharedLog(t *testing.T) {
	dir := t.TempDir()
	rdir := filepath.Join(dir, "shard-0", "raft")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	open := func(logs *ShardLog, fsm *counter) *Group {
		_, trans := raft.NewInmemTransport("n1")
		g, err := Open(Config{NodeID: "n1", Addr: "n1", Dir: rdir, FSM: fsm, Applied: func() uint64 { return 0 },
			Transport: trans, Logger: log, Bootstrap: true, Logs: logs,
			Timing: Timing{Heartbeat: 100 * time.Millisecond, Election: 100 * time.Millisecond, LeaderLease: 50 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !g.IsLeader() {
			if time.Now().After(deadline) {
				t.Fatal("no leader")
			}
			time.Sleep(10 * time.Millisecond)
		}
		return g
	}
	apply := func(g *Group, n int) {
		for i := 0; i < n; i++ {
			if _, err := g.Apply(context.Background(), []byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	g := open(nil, &counter{})
	apply(g, 40)
	g.Close()

	s := openShared(t, filepath.Join(dir, "raft-log.db"), 1)
	defer s.Close()
	f := &counter{}
	g = open(s.Shard(0), f)
	apply(g, 10)
	// The replay of the old log and the new entries.
	if f.n.Load() != 50 {
		t.Fatalf("applied %d commands, want 50", f.n.Load())
	}
	g.Close()
	if left, err := legacyLogs(filepath.Join(rdir, "raft.db")); err != nil || len(left) != 0 {
		t.Fatalf("raft.db still holds %v (%v)", left, err)
	}
	f = &counter{}
	g = open(s.Shard(0), f)
	apply(g, 1)
	if f.n.Load() != 51 {
		t.Fatalf("applied %d commands, want 51", f.n.Load())
	}
	g.Close()
}
