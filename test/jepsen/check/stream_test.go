package check

import (
	"strconv"
	"testing"

	"tally/test/jepsen/history"
)

// streamEvent is the stream record's line for e, received on conn.
func streamEvent(conn int, e *Event) history.StreamEntry {
	return history.StreamEntry{Kind: history.SEvent, Conn: conn, Shard: e.Shard, Seq: e.Seq, Type: e.Type,
		PrevHash: e.PrevHash, Hash: e.Hash, Balances: e.Balances}
}

func seqsOf(pos []uint64) map[string]uint64 {
	m := map[string]uint64{}
	for s, p := range pos {
		m[strconv.Itoa(s)] = p
	}
	return m
}

// streamFrom is a follower's record of a correct cluster: connection 1
// from the start up to cut[s] of each shard (the shards interleaved),
// then connection 2 resuming at from[s] to the end of every log.
func (s *synth) streamFrom(cut, from []uint64) []history.StreamEntry {
	out := []history.StreamEntry{{Kind: history.SConnect, Conn: 1, Node: "n1", After: make([]uint64, s.shards)}}
	deliver := func(conn int, lo, hi []uint64) {
		for i := uint64(0); ; i++ {
			sent := false
			for sh := range s.shards {
				if seq := lo[sh] + i + 1; seq <= hi[sh] {
					out = append(out, streamEvent(conn, &s.logs[sh][seq-1]))
					sent = true
				}
			}
			if !sent {
				return
			}
		}
	}
	deliver(1, make([]uint64, s.shards), cut)
	out = append(out, history.StreamEntry{Kind: history.SProgress, Conn: 1, Seqs: seqsOf(cut)},
		history.StreamEntry{Kind: history.SEnd, Conn: 1, Why: "rotate"},
		history.StreamEntry{Kind: history.SConnect, Conn: 2, Node: "n2", After: from})
	heads := make([]uint64, s.shards)
	for sh := range s.shards {
		heads[sh] = uint64(len(s.logs[sh]))
	}
	deliver(2, from, heads)
	return append(out, history.StreamEntry{Kind: history.SProgress, Conn: 2, Seqs: seqsOf(heads)},
		history.StreamEntry{Kind: history.SEnd, Conn: 2, Why: "stopped"},
		history.StreamEntry{Kind: history.SStop, Seqs: seqsOf(heads), Target: seqsOf(heads), CaughtUp: true})
}

// streamOf is the record of a correct follower that reconnected half way
// through every shard's log and resumed where it stopped.
func (s *synth) streamOf() []history.StreamEntry {
	half := make([]uint64, s.shards)
	for sh := range s.shards {
		half[sh] = uint64(len(s.logs[sh]) / 2)
	}
	return s.streamFrom(half, half)
}

// onlyC9 checks that C9 flags the stream and no other checker flags
// anything: only the stream is wrong.
func onlyC9(t *testing.T, s *synth) {
	t.Helper()
	rs := s.check()
	expectFlag(t, rs, "C9")
	for name, r := range rs {
		if name != "C9" && r.Verdict != Valid && r.Verdict != NotRun {
			t.Errorf("%s flags a run whose logs are correct: %s %v", name, r.Verdict, r.Problems)
		}
	}
}

// find returns the index of the stream entry of shard sh at seq on conn.
func find(t *testing.T, st []history.StreamEntry, conn, sh int, seq uint64) int {
	t.Helper()
	for i, e := range st {
		if e.Kind == history.SEvent && e.Conn == conn && e.Shard == sh && e.Seq == seq {
			return i
		}
	}
	t.Fatalf("no event of shard %d seq %d on connection %d", sh, seq, conn)
	return -1
}

func without(st []history.StreamEntry, i int) []history.StreamEntry {
	return append(append([]history.StreamEntry(nil), st[:i]...), st[i+1:]...)
}

func TestStreamValid(t *testing.T) {
	s := baseline(t)
	s.stream = s.streamOf()
	r := s.check()["C9"]
	if r.Verdict != Valid {
		t.Fatalf("C9 %s: %v", r.Verdict, r.Problems)
	}
	t.Log(r.Summary)
}

// After a reconnect the follower resumed from older positions (as a
// consumer with a lagging stored offset does): the events it had are
// sent again, identical, and dropped by (shard, seq).
func TestStreamExactDuplicatesAfterReconnect(t *testing.T) {
	s := baseline(t)
	cut := []uint64{uint64(len(s.logs[0]) - 2), uint64(len(s.logs[1]) / 2)}
	s.stream = s.streamFrom(cut, []uint64{3, 1})
	r := s.check()["C9"]
	if r.Verdict != Valid {
		t.Fatalf("C9 %s: %v", r.Verdict, r.Problems)
	}
	t.Log(r.Summary)
}

// A resumed stream skips the first event after its position: the bug
// planted by plant_streamskip.
func TestStreamGapAfterResume(t *testing.T) {
	s := baseline(t)
	st := s.streamOf()
	half := uint64(len(s.logs[0]) / 2)
	s.stream = without(st, find(t, st, 2, 0, half+1))
	onlyC9(t, s)
}

// The server resent an event it had sent with different content: a fork.
func TestStreamDuplicateWithDifferentHash(t *testing.T) {
	s := baseline(t)
	st := s.streamOf()
	e := st[find(t, st, 1, 1, 2)]
	e.Conn, e.Hash = 2, "f00d"+e.Hash[4:]
	i := find(t, st, 2, 1, uint64(len(s.logs[1])))
	s.stream = append(append(append([]history.StreamEntry(nil), st[:i]...), e), st[i:]...)
	onlyC9(t, s)
}

func TestStreamReorder(t *testing.T) {
	s := baseline(t)
	st := s.streamOf()
	i, j := find(t, st, 2, 0, uint64(len(s.logs[0])-1)), find(t, st, 2, 0, uint64(len(s.logs[0])))
	st[i], st[j] = st[j], st[i]
	s.stream = st
	onlyC9(t, s)
}

// A replica served an event the majority's log does not hold: one
// applied before it was committed, and lost in the failover.
func TestStreamEventBeyondTheFinalHead(t *testing.T) {
	s := baseline(t)
	st := s.streamOf()
	last := s.logs[0][len(s.logs[0])-1]
	extra := history.StreamEntry{Kind: history.SEvent, Conn: 2, Shard: 0, Seq: last.Seq + 1, Type: "TransferPosted",
		PrevHash: last.Hash, Hash: "ab" + last.Hash[2:]}
	i := find(t, st, 2, 0, last.Seq)
	s.stream = append(append(append([]history.StreamEntry(nil), st[:i+1]...), extra), st[i+1:]...)
	onlyC9(t, s)
}

// An event that differs from the final log's at its seq (same seq,
// another hash): the stream served a version the majority overwrote.
func TestStreamEventDiffersFromTheFinalLog(t *testing.T) {
	s := baseline(t)
	st := s.streamOf()
	i := find(t, st, 1, 0, 2)
	st[i].Hash = "00" + st[i].Hash[2:]
	s.stream = st
	onlyC9(t, s)
}

func TestStreamBrokenChain(t *testing.T) {
	s := baseline(t)
	st := s.streamOf()
	// The event itself is the final log's, but the prev_hash it carried
	// names no event the follower received before it.
	i := find(t, st, 2, 1, uint64(len(s.logs[1])/2)+1)
	st[i].PrevHash = "ee" + st[i].PrevHash[2:]
	s.stream = st
	onlyC9(t, s)
}

// A progress line claims a seq the connection never delivered: a
// consumer resuming from it would skip events.
func TestStreamProgressAheadOfEvents(t *testing.T) {
	s := baseline(t)
	st := s.streamOf()
	p := history.StreamEntry{Kind: history.SProgress, Conn: 2, Seqs: map[string]uint64{"0": uint64(len(s.logs[0])/2 + 1)}}
	i := find(t, st, 2, 0, uint64(len(s.logs[0])/2)+1)
	s.stream = append(append(append([]history.StreamEntry(nil), st[:i]...), p), st[i:]...)
	onlyC9(t, s)
}

// The follower stopped before the end of a shard's log.
func TestStreamMissingTail(t *testing.T) {
	s := baseline(t)
	st := s.streamOf()
	s.stream = without(st, find(t, st, 2, 1, uint64(len(s.logs[1]))))
	onlyC9(t, s)
}

// The events reported balances that differ from the log's (the hash
// unchanged): the consumer's projection ends wrong.
func TestStreamProjectionDiffers(t *testing.T) {
	s := baseline(t)
	st := s.streamOf()
	for i := len(st) - 1; i >= 0; i-- {
		if st[i].Kind == history.SEvent && st[i].Shard == 0 && len(st[i].Balances) > 0 {
			bs := append([]history.AccountBalance(nil), st[i].Balances...)
			bs[0].CreditsPosted += 5
			st[i].Balances = bs
			break
		}
	}
	s.stream = st
	onlyC9(t, s)
}

// Without a record C9 cannot judge: unknown, never valid.
func TestStreamNotFollowed(t *testing.T) {
	s := baseline(t)
	a, err := Analyze(s.ops, s.final())
	if err != nil {
		t.Fatal(err)
	}
	if r := StreamCompleteness(a); r.Verdict != Unknown {
		t.Fatalf("C9 without a stream: %s", r.Verdict)
	}
	s.stream = []history.StreamEntry{{Kind: history.SConnect, Conn: 1, After: []uint64{0, 0}}}
	for _, log := range s.logs {
		for i := range log {
			s.stream = append(s.stream, streamEvent(1, &log[i]))
		}
	}
	if r := s.check()["C9"]; r.Verdict != Unknown {
		t.Fatalf("C9 of a stream never resumed: %s %v", r.Verdict, r.Problems)
	}
}
