package fsm

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"tally/cluster"
)

// TestBootRule runs a one-node Raft group over the FSM, takes a snapshot
// (a marker), and restarts it with an FSM state that is ahead of the
// snapshot (the normal case: no restore), behind a full snapshot received
// from a leader (restored), or behind the marker or lost (the marker
// cannot stand for a state the replica no longer has: start fails with a
// clear error instead of running from a state that misses entries). When
// it starts, the group ends with the state of a reference FSM that
// applied the whole log.
func TestBootRule(t *testing.T) {
	for _, tc := range []struct {
		name    string
		full    bool // the newest snapshot is a full stream, as a follower receives
		crash   func(t *testing.T, fsmDir, aside string)
		restore bool
		refused bool
	}{
		{"state ahead of marker", false, func(*testing.T, string, string) {}, false, false},
		{"state behind full snapshot", true, func(t *testing.T, fsmDir, aside string) {
			replaceDir(t, aside, fsmDir)
		}, true, false},
		{"state lost, full snapshot", true, func(t *testing.T, fsmDir, _ string) {
			if err := os.RemoveAll(fsmDir); err != nil {
				t.Fatal(err)
			}
		}, true, false},
		{"state behind marker", false, func(t *testing.T, fsmDir, aside string) {
			replaceDir(t, aside, fsmDir)
		}, false, true},
		{"state lost, marker", false, func(t *testing.T, fsmDir, _ string) {
			if err := os.RemoveAll(fsmDir); err != nil {
				t.Fatal(err)
			}
		}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			g := newGen(11)
			n.start()
			n.apply(g.data(25))
			n.stop()
			aside := filepath.Join(t.TempDir(), "aside")
			copyDir(t, n.fsmDir, aside)
			asideIndex := n.lastIndex

			n.start()
			n.apply(g.data(25))
			if err := n.g.Raft().Snapshot().Error(); err != nil {
				t.Fatalf("snapshot: %v", err)
			}
			snaps, err := n.snaps.List()
			if err != nil || len(snaps) != 1 {
				t.Fatalf("snapshots: %v, %v", snaps, err)
			}
			if snaps[0].Size > 256 {
				t.Fatalf("the snapshot is %d bytes: a marker is a few dozen", snaps[0].Size)
			}
			snapIndex := snaps[0].Index
			if tc.full {
				n.storeFull(snaps[0])
			}
			if asideIndex >= snapIndex {
				t.Fatalf("the copy set aside is at index %d, not behind the snapshot at %d", asideIndex, snapIndex)
			}
			n.apply(g.data(20))
			crashIndex := n.lastIndex
			before := status(t, n.f.FSM)
			n.stop()

			tc.crash(t, n.fsmDir, aside)
			if tc.refused {
				err := n.tryStart()
				if err == nil {
					t.Fatal("the group started from a state behind its snapshot marker")
				}
				if !strings.Contains(n.buf.String(), "behind its snapshot marker") {
					t.Fatalf("start failed with %v, and the log does not say why", err)
				}
				return
			}
			n.start()
			// One more entry: once it is applied, so is everything before.
			n.apply(g.data(1))

			ref := open(t, t.TempDir())
			applyIn(ref, n.log(), 16)
			if s, r := status(t, n.f.FSM), status(t, ref); s != r {
				t.Fatalf("after the restart: %+v\nreference:           %+v", s, r)
			}
			wantRestores := int32(0)
			if tc.restore {
				wantRestores = 1
			}
			if got := n.f.restores.Load(); got != wantRestores {
				t.Fatalf("%d snapshot restores at boot, want %d", got, wantRestores)
			}
			wantCurrent := "state-0"
			if tc.restore {
				wantCurrent = "state-1"
			}
			if c := currentOf(t, n.fsmDir); c != wantCurrent {
				t.Fatalf("CURRENT %q, want %s", c, wantCurrent)
			}
			n.f.mu.Lock()
			seen := n.f.seen
			n.f.mu.Unlock()
			for idx := range seen {
				if idx <= snapIndex {
					t.Fatalf("entry %d at or below the snapshot index %d was handed to the FSM again", idx, snapIndex)
				}
			}
			for idx := snapIndex + 1; idx <= crashIndex; idx++ {
				resp, ok := seen[idx]
				if !ok {
					if n.typeOf(idx) == raft.LogCommand {
						t.Fatalf("command entry %d after the snapshot was not replayed", idx)
					}
					continue
				}
				ledgerEntry := n.isLedger(idx)
				switch {
				case tc.restore && ledgerEntry && resp == nil:
					t.Fatalf("entry %d: replay after the restore skipped it", idx)
				case !tc.restore && resp != nil:
					t.Fatalf("entry %d: the state had applied it, yet it answered %s", idx, show(resp))
				}
			}
			if !tc.restore {
				if s := status(t, n.f.FSM); s.AppliedSeq <= before.AppliedSeq {
					t.Fatalf("status %+v after the last entry, before the restart %+v", s, before)
				}
			}

			verify(t, n.f.FSM)
			n.stop()
		})
	}
}

// storeFull adds a full stream of the state at the marker's index to the
// snapshot store, newer than the marker, as a follower stores what a
// leader sent. Nothing may have been applied since the marker.
func (n *node) storeFull(m *raft.SnapshotMeta) {
	t := n.t
	t.Helper()
	if idx, _ := n.f.Applied(); idx != m.Index {
		t.Fatalf("applied %d, the marker is at %d", idx, m.Index)
	}
	_, trans := raft.NewInmemTransport("n1")
	sink, err := n.snaps.Create(m.Version, m.Index, m.Term, m.Configuration, m.ConfigurationIndex, trans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(snapshotOf(t, n.f.FSM)); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
}

// node is one replica's durable pieces (the FSM directory, the Raft log
// store and the snapshot store, which outlive a restart) and, while it
// runs, its FSM and group.
type node struct {
	t         *testing.T
	fsmDir    string
	raftDir   string
	store     *raft.InmemStore
	snaps     raft.SnapshotStore
	logger    *slog.Logger
	buf       *syncBuffer
	f         *recFSM
	g         *cluster.Group
	lastIndex uint64
}

func newNode(t *testing.T) *node {
	t.Helper()
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node log:\n%s", buf.String())
		}
	})
	snaps, err := raft.NewFileSnapshotStore(t.TempDir(), 3, buf)
	if err != nil {
		t.Fatal(err)
	}
	return &node{t: t, fsmDir: filepath.Join(t.TempDir(), "fsm"), raftDir: t.TempDir(),
		store: raft.NewInmemStore(), snaps: snaps,
		buf:    buf,
		logger: slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
}

func (n *node) start() {
	t := n.t
	t.Helper()
	if err := n.tryStart(); err != nil {
		t.Fatal(err)
	}
	g := n.g
	t.Cleanup(n.stop)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case leader := <-g.LeaderChanges():
			if leader {
				return
			}
		case <-deadline:
			t.Fatal("no leader after 10s")
		}
	}
}

// tryStart opens the FSM and the group, the FSM's snapshot store wrapped
// as a node does.
func (n *node) tryStart() error {
	f, err := Open(Options{Dir: n.fsmDir, Shard: 0, Shards: 1, Logger: n.logger})
	if err != nil {
		return err
	}
	n.f = &recFSM{FSM: f, seen: map[uint64]interface{}{}}
	_, trans := raft.NewInmemTransport("n1")
	g, err := cluster.Open(cluster.Config{NodeID: "n1", Addr: "n1", Dir: n.raftDir,
		FSM: n.f, Applied: func() uint64 { idx, _ := f.Applied(); return idx },
		Logger: n.logger, Bootstrap: true, Transport: trans, Store: n.store, Snapshots: n.snaps,
		WrapSnapshots: f.SnapshotStore,
		Timing:        cluster.Timing{Heartbeat: 50 * time.Millisecond, Election: 50 * time.Millisecond, LeaderLease: 50 * time.Millisecond}})
	if err != nil {
		f.Close()
		n.f = nil
		return err
	}
	n.g = g
	return nil
}

// apply proposes each entry through the group and waits for its result.
func (n *node) apply(data [][]byte) {
	t := n.t
	t.Helper()
	for _, d := range data {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		resp, err := n.g.Apply(ctx, d)
		cancel()
		if err != nil {
			t.Fatalf("apply: %v", err)
		}
		if _, ok := resp.(*Response); !ok && isLedger(d) {
			t.Fatalf("apply answered %T %v", resp, resp)
		}
		n.lastIndex = n.g.Raft().LastIndex()
	}
}

// stop shuts the group down, then closes the FSM. It is idempotent.
func (n *node) stop() {
	if n.g != nil {
		if err := n.g.Close(); err != nil {
			n.t.Errorf("close group: %v", err)
		}
		n.g = nil
	}
	if n.f != nil {
		if err := n.f.Close(); err != nil {
			n.t.Errorf("close fsm: %v", err)
		}
	}
}

// log returns the entries Raft hands to a batching FSM, from the log store.
func (n *node) log() []*raft.Log {
	t := n.t
	t.Helper()
	first, _ := n.store.FirstIndex()
	last, _ := n.store.LastIndex()
	if first != 1 {
		t.Fatalf("the log starts at %d: it was compacted, the reference cannot be built", first)
	}
	var out []*raft.Log
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := n.store.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			out = append(out, &l)
		}
	}
	return out
}

func (n *node) typeOf(idx uint64) raft.LogType {
	var l raft.Log
	if err := n.store.GetLog(idx, &l); err != nil {
		n.t.Fatal(err)
	}
	return l.Type
}

func (n *node) isLedger(idx uint64) bool {
	var l raft.Log
	if err := n.store.GetLog(idx, &l); err != nil {
		n.t.Fatal(err)
	}
	return l.Type == raft.LogCommand && isLedger(l.Data)
}

// isLedger reports whether data is a ledger entry, in either form.
func isLedger(data []byte) bool {
	k, _, err := decodeEnvelope(data)
	return err == nil && k.code == KindLedger
}

// recFSM records what Raft hands the FSM.
type recFSM struct {
	*FSM
	mu       sync.Mutex
	seen     map[uint64]interface{} // index: response
	restores atomic.Int32
}

func (r *recFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := r.FSM.ApplyBatch(logs)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, l := range logs {
		r.seen[l.Index] = out[i]
	}
	return out
}

func (r *recFSM) Restore(rc io.ReadCloser) error {
	r.restores.Add(1)
	return r.FSM.Restore(rc)
}

var _ raft.BatchingFSM = (*recFSM)(nil)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// copyDir copies a closed FSM's directory tree.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, p)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", from, err)
	}
}

// replaceDir puts a copy of from in place of to.
func replaceDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.RemoveAll(to); err != nil {
		t.Fatal(err)
	}
	copyDir(t, from, to)
}
