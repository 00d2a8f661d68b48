package check

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"tally/test/jepsen/history"
)

// StreamCompleteness is C9: a consumer that followed the all-shards
// stream (GET /v1/events?follow=true) through the whole run, reconnecting
// to other nodes and resuming after its last seq per shard, received,
// after dedupe by (shard, seq), exactly the majority's final log of every
// shard: every seq once, none beyond the final head, each shard's events
// in seq order as received, each prev_hash the hash of the event before
// it, and each event the one the final log holds at that seq (same hash).
// A duplicate must be the same event. A progress line may not claim a
// seq its connection has not delivered (a consumer that resumes from
// progress would skip the rest) nor one beyond the final head. The
// projection the consumer folds from the events' balances (last write per
// account) equals the final balances: the final reads, and every account
// of the final logs.
func StreamCompleteness(a *Analysis) Result {
	r := Result{Name: "C9", Title: "stream completeness", Verdict: Valid}
	if a.Stream == nil {
		r.unknown("no stream was followed during the run")
		r.Summary = "no stream record"
		return r
	}
	f := newStreamFold(a, &r)
	if err := a.Stream(f.entry); err != nil {
		r.unknown("the stream record cannot be read: %v", err)
	}
	f.finish()
	return r
}

// streamFold is C9's state while it reads the stream record: per shard,
// only the last seq and hash taken in order and the hashes received (at
// most the final log's size), so that a long record is read in bounded
// memory.
type streamFold struct {
	a *Analysis
	r *Result

	last     []uint64   // per shard: the last seq taken in order
	lastHash []string   // per shard: its hash
	got      [][]string // per shard: the hash received for each seq (index seq-1)
	proj     map[string]history.AccountBalance

	// The connection being read: the positions asked and, per shard, the
	// highest seq it delivered.
	conn      int
	connAfter []uint64
	connMax   []uint64

	events, dups, conns, resumed, beyond int
	ends                                 map[string]int // how connections ended: rotated, stalled, broken
	stop                                 *history.StreamEntry
}

func newStreamFold(a *Analysis, r *Result) *streamFold {
	f := &streamFold{a: a, r: r, last: make([]uint64, a.Shards), lastHash: make([]string, a.Shards),
		got: make([][]string, a.Shards), proj: map[string]history.AccountBalance{}, ends: map[string]int{}}
	for s := range f.lastHash {
		f.lastHash[s] = zeroHash
	}
	return f
}

func (f *streamFold) head(s int) uint64 { return uint64(len(f.a.Logs[s])) }

func (f *streamFold) entry(e *history.StreamEntry) error {
	switch e.Kind {
	case history.SConnect:
		f.conns++
		f.conn = e.Conn
		f.connAfter = make([]uint64, f.a.Shards)
		copy(f.connAfter, e.After)
		f.connMax = append([]uint64(nil), f.connAfter...)
		for _, p := range e.After {
			if p > 0 {
				f.resumed++
				break
			}
		}
	case history.SEvent:
		f.event(e)
	case history.SProgress:
		f.progress(e)
	case history.SBad:
		f.r.fail("connection %d to %s sent a line that is neither an event nor progress: %s", e.Conn, e.Node, e.Why)
	case history.SEnd:
		switch {
		case strings.HasPrefix(e.Why, "rotate"):
			f.ends["rotated"]++
		case strings.HasPrefix(e.Why, "stalled"):
			f.ends["stalled"]++
		case strings.HasPrefix(e.Why, "stopped"):
		default:
			f.ends["broken"]++
		}
	case history.SStop:
		f.stop = e
	}
	return nil
}

func (f *streamFold) event(e *history.StreamEntry) {
	f.events++
	s, seq := e.Shard, e.Seq
	if s < 0 || s >= f.a.Shards {
		f.r.fail("connection %d sent an event of shard %d, which does not exist", e.Conn, s)
		return
	}
	if e.Conn == f.conn && seq > f.connMax[s] {
		f.connMax[s] = seq
	}
	switch {
	case seq == 0:
		f.r.fail("connection %d sent shard %d seq 0", e.Conn, s)
	case seq > f.head(s):
		f.beyond++
		f.r.fail("connection %d sent shard %d seq %d (%s), beyond the final log's head %d: an event the majority's log lacks",
			e.Conn, s, seq, e.Type, f.head(s))
	case seq <= f.last[s]:
		// Seen before, or skipped over by a gap reported already.
		prev := f.got[s][seq-1]
		switch {
		case prev == "":
			f.r.fail("connection %d sent shard %d seq %d after seq %d: out of order", e.Conn, s, seq, f.last[s])
			f.take(e)
		case prev != e.Hash:
			f.r.fail("connection %d sent shard %d seq %d again with hash %.12s, first received with %.12s", e.Conn, s, seq,
				e.Hash, prev)
		default:
			f.dups++
		}
	default:
		if seq > f.last[s]+1 {
			f.r.fail("connection %d sent shard %d seq %d right after seq %d: seqs %s never came before it", e.Conn, s, seq,
				f.last[s], span(f.last[s]+1, seq-1))
		} else if e.PrevHash != f.lastHash[s] {
			f.r.fail("connection %d sent shard %d seq %d with prev_hash %.12s, the hash of seq %d received before it is %.12s",
				e.Conn, s, seq, e.PrevHash, f.last[s], f.lastHash[s])
		}
		f.last[s], f.lastHash[s] = seq, e.Hash
		f.take(e)
	}
}

// take records the first receipt of an event: it must be the final log's,
// and its balances feed the projection.
func (f *streamFold) take(e *history.StreamEntry) {
	s, seq := e.Shard, e.Seq
	for uint64(len(f.got[s])) < seq {
		f.got[s] = append(f.got[s], "")
	}
	f.got[s][seq-1] = e.Hash
	if want := f.a.Logs[s][seq-1]; want.Hash != e.Hash {
		f.r.fail("connection %d sent shard %d seq %d (%s) with hash %.12s, the final log holds %s with %.12s", e.Conn, s, seq,
			e.Type, e.Hash, want.Type, want.Hash)
	}
	for _, b := range e.Balances {
		f.proj[projKey(s, b.Account, b.Currency)] = b
	}
}

func (f *streamFold) progress(e *history.StreamEntry) {
	for k, p := range e.Seqs {
		s, err := strconv.Atoi(k)
		if err != nil || s < 0 || s >= f.a.Shards {
			f.r.fail("connection %d sent progress for shard %q, which does not exist", e.Conn, k)
			continue
		}
		if p > f.head(s) {
			f.r.fail("connection %d sent progress shard %d at seq %d, beyond the final log's head %d", e.Conn, s, p, f.head(s))
			continue
		}
		if e.Conn == f.conn && p > f.connMax[s] {
			sent := fmt.Sprintf("delivered up to seq %d only", f.connMax[s])
			if f.connMax[s] == f.connAfter[s] {
				sent = "delivered none of that shard"
			}
			f.r.fail("connection %d sent progress shard %d at seq %d, but it resumed after seq %d and %s", e.Conn, s, p,
				f.connAfter[s], sent)
			f.connMax[s] = p // report once
		}
	}
}

func (f *streamFold) finish() {
	a, r := f.a, f.r
	missing := 0
	for s := range a.Shards {
		for _, h := range f.got[s] {
			if h == "" {
				missing++
			}
		}
		if f.last[s] < f.head(s) {
			missing += int(f.head(s) - f.last[s])
			why := fmt.Sprintf("shard %d: seqs %s of the final log never came (the follower stopped at seq %d)", s,
				span(f.last[s]+1, f.head(s)), f.last[s])
			switch {
			case f.stop == nil:
				r.unknown("%s; the follower did not stop cleanly", why)
			case !a.Final.Quiesced && !f.stop.CaughtUp:
				r.unknown("%s; the replicas did not converge", why)
			default:
				r.fail("%s", why)
			}
		}
	}
	if f.conns == 0 {
		r.unknown("the follower never connected")
	} else if f.resumed == 0 {
		r.unknown("the stream was never resumed: %d connections, none with an after= position", f.conns)
	}
	accts := f.projection()
	total := 0
	for s := range a.Shards {
		total += int(f.head(s))
	}
	r.Summary = fmt.Sprintf("%d events over %d connections (%d resumed; %d broke, %d stalled, %d rotated), %d exact duplicates dropped, %d of %d final events matched, %d missing, %d beyond the head; projection of %d accounts checked",
		f.events, f.conns, f.resumed, f.ends["broken"], f.ends["stalled"], f.ends["rotated"], f.dups, total-missing, total,
		missing, f.beyond, accts)
}

// projection compares the consumer's fold of the balances with the final
// reads of the history and with every account of the final logs.
func (f *streamFold) projection() int {
	a, r := f.a, f.r
	n := 0
	seen := map[string]bool{}
	for i := range a.Pairs {
		p := &a.Pairs[i]
		c := &p.Complete
		if p.Invoke.Process != FinalProcess || p.Invoke.F != history.FRead || c.Type != history.OK || c.Read == nil {
			continue
		}
		k := projKey(p.Invoke.Shard, p.Invoke.Account, c.Read.Currency)
		if seen[k] {
			continue
		}
		seen[k] = true
		n++
		b, ok := f.proj[k]
		if !ok {
			r.fail("the stream's projection has no %s, the final read found it", p.Invoke.Account)
			continue
		}
		rd := c.Read
		if b.DebitsPosted != rd.DebitsPosted || b.CreditsPosted != rd.CreditsPosted || b.DebitsPending != rd.DebitsPending ||
			b.CreditsPending != rd.CreditsPending {
			r.fail("the stream's projection of %s is %s, the final read %s", p.Invoke.Account, balStr(b.DebitsPosted,
				b.CreditsPosted, b.DebitsPending, b.CreditsPending), balStr(rd.DebitsPosted, rd.CreditsPosted, rd.DebitsPending,
				rd.CreditsPending))
		}
	}
	for s := range a.Shards {
		m := NewModel(s)
		m.VerifyHashes = false
		for i := range a.Logs[s] {
			m.Apply(&a.Logs[s][i])
		}
		keys := make([]string, 0, len(m.Accounts))
		for k := range m.Accounts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			acc := m.Accounts[k]
			pk := projKey(s, acc.ID, acc.Currency)
			b, ok := f.proj[pk]
			if !seen[pk] {
				seen[pk] = true
				n++
			}
			switch {
			case !ok && (acc.DP != 0 || acc.CP != 0 || acc.DPend != 0 || acc.CPend != 0):
				r.fail("the stream's projection has no %s on shard %d, the final log moves money on it", acc.ID, s)
			case ok && (b.DebitsPosted != acc.DP || b.CreditsPosted != acc.CP || b.DebitsPending != acc.DPend ||
				b.CreditsPending != acc.CPend):
				r.fail("the stream's projection of %s on shard %d is %s, the final log folds to %s", acc.ID, s,
					balStr(b.DebitsPosted, b.CreditsPosted, b.DebitsPending, b.CreditsPending), balStr(acc.DP, acc.CP, acc.DPend, acc.CPend))
			}
		}
	}
	return n
}

// projKey names an account in the projection: system accounts exist once
// per shard and currency.
func projKey(shard int, id, cur string) string {
	if isSystem(id) {
		return fmt.Sprintf("%d/%s/%s", shard, id, cur)
	}
	return id
}

func balStr(dp, cp, dpend, cpend int64) string {
	return fmt.Sprintf("debits %d credits %d pending %d/%d", dp, cp, dpend, cpend)
}

// span writes a range of seqs.
func span(from, to uint64) string {
	if from == to {
		return strconv.FormatUint(from, 10)
	}
	return fmt.Sprintf("%d-%d", from, to)
}
