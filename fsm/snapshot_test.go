package fsm

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// TestSnapshotRestore takes a snapshot, goes on applying while its full
// stream is written, restores it elsewhere, and checks that the restored
// state is the one at snapshot time and converges with the original on
// the same later entries.
func TestSnapshotRestore(t *testing.T) {
	logs := logsOf(1, newGen(4).data(240))
	orig := open(t, t.TempDir())
	applyIn(orig, logs[:150], 10)
	at := status(t, orig)
	head, err := orig.HashAt(at.AppliedSeq)
	if err != nil {
		t.Fatal(err)
	}
	nodes := orig.Nodes()

	snap, err := orig.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// The stream is written while apply goes on: it must still be the
	// state at snapshot time.
	applyIn(orig, logs[150:200], 10)
	var sink memSink
	if err := snap.(*snapshot).write(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	applyIn(orig, logs[200:], 10)
	final := status(t, orig)

	dir := t.TempDir()
	restored := open(t, dir)
	if err := restored.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if s := status(t, restored); s != at {
		t.Fatalf("restored status %+v, original at snapshot time %+v", s, at)
	}
	if h, err := restored.HashAt(at.AppliedSeq); err != nil || h != head || h != at.Head {
		t.Fatalf("restored head %s (%v), original %s", h, err, head)
	}
	if idx, seq := restored.Applied(); idx != 150 || seq != at.AppliedSeq {
		t.Fatalf("restored Applied() = %d, %d; want 150, %d", idx, seq, at.AppliedSeq)
	}
	if got := restored.Nodes(); !reflect.DeepEqual(got, nodes) {
		t.Fatalf("restored nodes %v, original %v", got, nodes)
	}
	verify(t, restored)

	// Raft replays from the snapshot's index: the restored state must
	// skip what it holds and converge with the original.
	applyIn(restored, logs[100:], 10)
	if s := status(t, restored); s != final {
		t.Fatalf("restored then replayed %+v, original %+v", s, final)
	}
	if !reflect.DeepEqual(allEvents(t, restored), allEvents(t, orig)) {
		t.Fatal("restored and replayed event log differs from the original's")
	}
	verify(t, restored)
}

// TestRestoreSwap restores into an FSM that already holds other state:
// the new state directory replaces the old one through CURRENT, the old
// one is removed, and a reopen keeps the restored state.
func TestRestoreSwap(t *testing.T) {
	src := open(t, t.TempDir())
	applyIn(src, logsOf(1, newGen(5).data(80)), 16)
	want := status(t, src)
	stream := snapshotOf(t, src)

	dir := t.TempDir()
	f := open(t, dir)
	other := logsOf(1, newGen(50).data(120))
	applyIn(f, other, 16)
	if s := status(t, f); s.Head == want.Head || s.AppliedIndex == want.AppliedIndex {
		t.Fatalf("the other state %+v is too like the snapshot's %+v", s, want)
	}
	if c := currentOf(t, dir); c != "state-0" {
		t.Fatalf("CURRENT %q before any restore", c)
	}

	for i, next := range []string{"state-1", "state-2"} {
		if err := f.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
			t.Fatalf("restore %d: %v", i, err)
		}
		if c := currentOf(t, dir); c != next {
			t.Fatalf("CURRENT %q after restore %d, want %s", c, i, next)
		}
		if d := stateDirs(t, dir); !slices.Equal(d, []string{next}) {
			t.Fatalf("state directories %v after restore %d, want only %s", d, i, next)
		}
		if s := status(t, f); s != want {
			t.Fatalf("status %+v after restore %d, want %+v", s, i, want)
		}
		if i, seq := f.Applied(); i != want.AppliedIndex || seq != want.AppliedSeq {
			t.Fatalf("Applied() = %d, %d after restore, want %d, %d", i, seq, want.AppliedIndex, want.AppliedSeq)
		}
	}
	verify(t, f)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = open(t, dir)
	if s := status(t, f); s != want {
		t.Fatalf("reopened after restore: %+v, want %+v", s, want)
	}
	if !reflect.DeepEqual(f.Nodes(), src.Nodes()) {
		t.Fatalf("reopened nodes %v, want %v", f.Nodes(), src.Nodes())
	}
	verify(t, f)

	// The restored state applies new entries like the source does.
	more := logsOf(want.AppliedIndex+1, newGen(51).data(30))
	sameResponses(t, applyIn(f, more, 4), applyIn(src, more, 30))
	if s, r := status(t, f), status(t, src); s != r {
		t.Fatalf("after more entries: %+v, source %+v", s, r)
	}
}

// TestRestoreBadStream feeds Restore streams that are not whole
// snapshots: each must fail and leave the previous state untouched and
// usable.
func TestRestoreBadStream(t *testing.T) {
	src := open(t, t.TempDir())
	applyIn(src, logsOf(1, newGen(8).data(60)), 16)
	good := snapshotOf(t, src)

	dir := t.TempDir()
	f := open(t, dir)
	logs := logsOf(1, newGen(9).data(60))
	applyIn(f, logs[:40], 8)
	before := status(t, f)
	ref := open(t, t.TempDir())
	applyIn(ref, logs[:40], 8)

	goodV1 := snapshotV1(t, src)
	stream := func(magic string, parts ...[]byte) []byte {
		return bytes.Join(append([][]byte{[]byte(magic)}, parts...), nil)
	}
	huge := binary.AppendUvarint(binary.AppendUvarint(nil, 1), maxSnapItem+1)
	item := snapItem([]byte("n:n1"), []byte("h:80"))
	for _, tc := range []struct {
		name   string
		stream []byte
		want   string
	}{
		{"empty", nil, "not a tally snapshot"},
		{"bad magic", append([]byte("TALLYSNAP9\n"), good[len(snapMagic):]...), "not a tally snapshot"},
		{"truncated in the middle", good[:len(good)/2], "read"},
		{"no end marker", good[:len(good)-1], "read part kind"},
		{"part without end", stream(snapMagic, []byte{2}, item), "node part: read key length"},
		{"huge item", stream(snapMagic, []byte{1}, huge), "snapshot item"},
		{"part of an unknown kind", stream(snapMagic, []byte{9, 0, 0}), "part of unknown entry kind 9"},
		{"part twice", stream(snapMagic, []byte{2}, item, []byte{0, 2}, item, []byte{0, 0}), "part of entry kind 2 after kind 2"},
		{"parts out of order", stream(snapMagic, []byte{2, 0, 1, 0, 0}), "part of entry kind 1 after kind 2"},
		{"key of another kind", stream(snapMagic, []byte{1}, item, []byte{0, 0}), `ledger part: key "n:n1" is not the kind's`},
		{"v1 truncated in the middle", goodV1[:len(goodV1)/2], "read"},
		{"v1 no end marker", goodV1[:len(goodV1)-1], "read key length"},
		{"v1 huge item", stream(snapMagicV1, huge), "snapshot item"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := f.Restore(io.NopCloser(bytes.NewReader(tc.stream)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("restore: %v, want an error with %q", err, tc.want)
			}
			if s := status(t, f); s != before {
				t.Fatalf("status after a failed restore %+v, before %+v", s, before)
			}
			if c := currentOf(t, dir); c != "state-0" {
				t.Fatalf("CURRENT %q after a failed restore", c)
			}
			if d := stateDirs(t, dir); !slices.Equal(d, []string{"state-0"}) {
				t.Fatalf("state directories %v after a failed restore", d)
			}
			if _, err := os.Stat(filepath.Join(dir, "state-1")); !os.IsNotExist(err) {
				t.Fatalf("state-1 left behind: %v", err)
			}
		})
	}
	sameResponses(t, applyIn(f, logs[40:], 8), applyIn(ref, logs[40:], 8))
	if s, r := status(t, f), status(t, ref); s != r {
		t.Fatalf("after failed restores and more entries: %+v, reference %+v", s, r)
	}
	verify(t, f)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = open(t, dir)
	if s, r := status(t, f), status(t, ref); s != r {
		t.Fatalf("reopened after failed restores: %+v, reference %+v", s, r)
	}
}

// TestPersistFailure: a sink that fails is cancelled, not closed, and
// the error is returned to Raft.
func TestPersistFailure(t *testing.T) {
	f := open(t, t.TempDir())
	applyIn(f, logsOf(1, newGen(10).data(40)), 8)
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &memSink{failAfter: 10}
	if err := snap.Persist(sink); err == nil {
		t.Fatal("persist into a failing sink succeeded")
	}
	if !sink.cancelled || sink.closed {
		t.Fatalf("failing sink: cancelled %v closed %v, want cancelled only", sink.cancelled, sink.closed)
	}
}

// TestMarker: Persist writes a marker of the same size whatever the
// history; the wrapped store opens it as a full stream of the state, of
// the size its meta says, at or after the marker, which restores
// elsewhere and converges with the original.
func TestMarker(t *testing.T) {
	logs := logsOf(1, newGen(6).data(300))
	f := open(t, t.TempDir())
	applyIn(f, logs[:20], 10)
	small := markerOf(t, f)
	applyIn(f, logs[20:150], 10)
	mk := markerOf(t, f)
	if len(mk) != len(small) || len(mk) > 128 {
		t.Fatalf("markers of %d and %d bytes: a marker's size must not grow with history", len(small), len(mk))
	}
	at := status(t, f)

	inner := raft.NewInmemSnapshotStore()
	store := f.SnapshotStore(inner)
	_, trans := raft.NewInmemTransport("n1")
	sink, err := store.Create(raft.SnapshotVersionMax, at.AppliedIndex, 1, raft.Configuration{}, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(mk); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	// Apply goes on before the follower asks: the stream is the state when
	// it is opened, which covers the marker.
	applyIn(f, logs[150:200], 10)
	opened := status(t, f)
	meta, rc, err := store.Open(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	applyIn(f, logs[200:250], 10)
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != meta.Size || meta.Index != at.AppliedIndex {
		t.Fatalf("stream of %d bytes, meta says %d at index %d (marker at %d)", len(b), meta.Size, meta.Index, at.AppliedIndex)
	}
	if got := f.Snapshots().Sent.Load(); got != 1 {
		t.Fatalf("%d full streams counted, want 1", got)
	}

	r := open(t, t.TempDir())
	if err := r.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if s := status(t, r); s != opened {
		t.Fatalf("restored %+v, the state when opened %+v", s, opened)
	}
	// Raft replays from the marker's index: the restored state skips what
	// it already holds.
	applyIn(r, logs[at.AppliedIndex:], 10)
	applyIn(f, logs[250:], 10)
	if s, o := status(t, r), status(t, f); s != o {
		t.Fatalf("restored then replayed %+v, original %+v", s, o)
	}
	verify(t, r)

	// A marker given to Restore stands for the replica's own state: fine
	// when the state covers it, refused when it does not.
	if err := f.Restore(io.NopCloser(bytes.NewReader(mk))); err != nil {
		t.Fatalf("restore of its own marker: %v", err)
	}
	empty := open(t, t.TempDir())
	if err := empty.Restore(io.NopCloser(bytes.NewReader(mk))); err == nil || !strings.Contains(err.Error(), "behind its snapshot marker") {
		t.Fatalf("an empty state took a marker: %v", err)
	}
	other := open(t, t.TempDir())
	applyIn(other, logsOf(1, newGen(60).data(200)), 10)
	if err := other.Restore(io.NopCloser(bytes.NewReader(mk))); err == nil || !strings.Contains(err.Error(), "head") {
		t.Fatalf("another history took the marker: %v", err)
	}
}
