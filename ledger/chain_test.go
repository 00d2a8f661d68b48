package ledger

import (
	"testing"
)

type chainCase struct {
	name  string
	pre   func(h *harness)
	batch []Transfer
	want  []Code
	// twin, when set, is the part of the batch that must take effect: the
	// state after the batch must equal a fresh fixture that ran only twin.
	// nil with rollback set means the batch must change no balance.
	twin     []Transfer
	rollback bool
}

var chainCases = []chainCase{
	{name: "all members succeed",
		batch: []Transfer{linked(xfer("c1", "alice", "bob", 10)), linked(xfer("c2", "bob", "dave", 5)), deposit("c3", "erin", 1)},
		want:  []Code{OK, OK, OK}},
	{name: "a later member spends what an earlier one brought",
		batch: []Transfer{linked(xfer("c1", "alice", "bob", 500)), xfer("c2", "bob", "erin", 520)},
		want:  []Code{OK, OK}},
	{name: "last member fails",
		batch: []Transfer{linked(xfer("c1", "alice", "bob", 10)), xfer("c2", "bob", "ghost", 5)},
		want:  []Code{LinkedEventFailed, CreditAccountNotFound}, rollback: true},
	{name: "first member fails",
		batch: []Transfer{linked(xfer("c1", "alice", "ghost", 10)), xfer("c2", "alice", "bob", 1)},
		want:  []Code{CreditAccountNotFound, LinkedEventFailed}, rollback: true},
	{name: "members see the earlier members' effects",
		batch: []Transfer{linked(xfer("c1", "alice", "bob", 800)), linked(xfer("c2", "alice", "bob", 80)), xfer("c3", "alice", "bob", 1)},
		want:  []Code{LinkedEventFailed, LinkedEventFailed, InsufficientFunds}, rollback: true},
	{name: "chain left open at the end of the batch",
		batch: []Transfer{linked(xfer("c1", "alice", "bob", 1)), linked(xfer("c2", "alice", "bob", 2))},
		want:  []Code{LinkedEventFailed, InvalidRequest}, rollback: true},
	{name: "lone linked transfer",
		batch: []Transfer{linked(xfer("c1", "alice", "bob", 1))},
		want:  []Code{InvalidRequest}, rollback: true},
	{name: "two chains, the second fails",
		batch: []Transfer{linked(xfer("c1", "alice", "bob", 1)), xfer("c2", "alice", "bob", 2),
			linked(xfer("c3", "alice", "bob", 3)), xfer("c4", "alice", "ghost", 4), xfer("c5", "alice", "bob", 5)},
		want: []Code{OK, OK, LinkedEventFailed, CreditAccountNotFound, OK}, rollback: true,
		twin: []Transfer{xfer("c1", "alice", "bob", 1), xfer("c2", "alice", "bob", 2), xfer("c5", "alice", "bob", 5)}},
	{name: "member exists with different fields",
		batch: []Transfer{linked(xfer("c1", "alice", "bob", 1)), deposit("d-alice", "alice", 999)},
		want:  []Code{LinkedEventFailed, ExistsWithDifferentFields}, rollback: true},
	{name: "member with an invalid id",
		batch: []Transfer{linked(xfer("c1", "alice", "bob", 1)), xfer("", "alice", "bob", 1)},
		want:  []Code{LinkedEventFailed, InvalidID}, rollback: true},
	{name: "member that exists as a success",
		pre:   func(h *harness) { h.must(linked(xfer("s1", "alice", "bob", 1)), xfer("s2", "alice", "bob", 1)) },
		batch: []Transfer{linked(xfer("s1", "alice", "bob", 1)), xfer("c1", "alice", "bob", 1)},
		want:  []Code{Exists, OK}},
	{name: "member that exists as a rejection fails the chain",
		pre: func(h *harness) {
			res, _ := h.transfers(linked(xfer("r1", "alice", "bob", 1_000_000)), xfer("r2", "alice", "bob", 1))
			if codes(res) != "insufficient_funds linked_event_failed" {
				h.t.Fatalf("pre: %s", codes(res))
			}
		},
		batch: []Transfer{linked(xfer("r1", "alice", "bob", 1_000_000)), xfer("c1", "alice", "bob", 1)},
		want:  []Code{Exists, LinkedEventFailed}, rollback: true},
	{name: "member that exists as a linked_event_failed fails the chain",
		pre: func(h *harness) {
			res, _ := h.transfers(linked(xfer("r1", "alice", "bob", 1)), xfer("r2", "alice", "ghost", 1))
			if codes(res) != "linked_event_failed credit_account_not_found" {
				h.t.Fatalf("pre: %s", codes(res))
			}
		},
		batch: []Transfer{linked(xfer("r1", "alice", "bob", 1)), xfer("c1", "alice", "bob", 1)},
		want:  []Code{Exists, LinkedEventFailed}, rollback: true},
	{name: "chain posts a pending transfer made earlier in the batch",
		batch: []Transfer{hold("pn", "alice", "bob", 50, 30), linked(post("c1", "pn", "alice", "bob", 0)), withdraw("c2", "bob", 10_000)},
		want:  []Code{OK, LinkedEventFailed, InsufficientFunds}, rollback: true,
		twin: []Transfer{hold("pn", "alice", "bob", 50, 30)}},
	{name: "chain partly posts a pending transfer made earlier in the batch",
		batch: []Transfer{hold("pn", "alice", "bob", 50, 0), linked(post("c1", "pn", "alice", "bob", 20)), linked(withdraw("c2", "bob", 40)), withdraw("c3", "bob", 1)},
		want:  []Code{OK, LinkedEventFailed, LinkedEventFailed, InsufficientFunds}, rollback: true,
		twin: []Transfer{hold("pn", "alice", "bob", 50, 0)}},
	{name: "chain makes and posts a pending transfer, then fails",
		batch: []Transfer{linked(hold("c1", "alice", "bob", 50, 5)), linked(post("c2", "c1", "alice", "bob", 0)), xfer("c3", "alice", "ghost", 1)},
		want:  []Code{LinkedEventFailed, LinkedEventFailed, CreditAccountNotFound}, rollback: true},
	{name: "chain makes a pending transfer with an early timeout, then fails",
		pre:   func(h *harness) { h.must(hold("late", "alice", "bob", 1, 3600)) },
		batch: []Transfer{linked(hold("c1", "alice", "bob", 50, 5)), xfer("c2", "alice", "ghost", 1)},
		want:  []Code{LinkedEventFailed, CreditAccountNotFound}, rollback: true},
	{name: "chain voids an open pending transfer, then fails",
		batch: []Transfer{linked(void("c1", "p-open", "alice", "bob")), xfer("c2", "alice", "ghost", 1)},
		want:  []Code{LinkedEventFailed, CreditAccountNotFound}, rollback: true},
	{name: "chain posts an open pending transfer and spends it",
		batch: []Transfer{linked(post("c1", "p-open", "alice", "bob", 0)), withdraw("c2", "bob", 120)},
		want:  []Code{OK, OK}},
	{name: "chain brings @world into a new currency, then fails",
		pre:   func(h *harness) { h.open("gbp", "GBP", false) },
		batch: []Transfer{linked(deposit("c1", "gbp", 5)), xfer("c2", "gbp", "bob", 5)},
		want:  []Code{LinkedEventFailed, CurrencyMismatch}, rollback: true},
	{name: "chain closes over an expired pending transfer",
		batch: []Transfer{linked(xfer("c1", "alice", "bob", 1)), post("c2", "p-exp", "alice", "bob", 0)},
		want:  []Code{LinkedEventFailed, PendingExpired}, rollback: true},
}

func TestLinkedChains(t *testing.T) {
	for _, tc := range chainCases {
		t.Run(tc.name, func(t *testing.T) {
			h := fixture(t)
			if tc.pre != nil {
				tc.pre(h)
			}
			before, seq, head := snap(h.st), h.st.Seq, h.st.Head
			res, evs := h.transfers(tc.batch...)
			for i := range res {
				if res[i].Result != tc.want[i] {
					t.Fatalf("results %v, want %v", codes(res), tc.want)
				}
			}
			// The log stays gapless and chained: whatever a failed chain
			// emitted before it failed is gone, and seq and head continue
			// from where they were.
			prev := head
			for i, e := range evs {
				if e.Seq != seq+uint64(i)+1 || e.PrevHash != prev || e.Hash != e.ComputeHash() {
					t.Fatalf("event %d (seq %d) breaks the log", i, e.Seq)
				}
				prev = e.Hash
			}
			if h.st.Seq != seq+uint64(len(evs)) || h.st.Head != prev {
				t.Fatalf("seq %d head %s after %d events from seq %d", h.st.Seq, h.st.Head, len(evs), seq)
			}
			// Every decided result points at its event; each rejection is
			// logged once and each success once.
			logged := 0
			for i, r := range res {
				if r.Result == Exists || r.Result == ExistsWithDifferentFields || r.Result == InvalidID {
					continue
				}
				logged++
				e := findEvent(evs, r.Seq)
				if e == nil {
					t.Fatalf("result %d (%s) has seq %d, not among the events", i, r.Result, r.Seq)
				}
				if r.Result != OK && (e.Type != TransferRejected || e.Data.Result != r.Result || e.Data.Transfer.ID != tc.batch[i].ID) {
					t.Fatalf("result %d (%s): event %+v", i, r.Result, e)
				}
			}
			if logged != len(evs) {
				t.Fatalf("%d events for %d logged results", len(evs), logged)
			}
			if tc.rollback {
				want := before
				if tc.twin != nil {
					twin := fixture(t)
					if tc.pre != nil {
						tc.pre(twin)
					}
					twin.must(tc.twin...)
					want = snap(twin.st)
				}
				if got := snap(h.st); !got.equal(want) {
					t.Fatalf("state after the failed chain differs:\n got %+v\nwant %+v", got, want)
				}
			}

			// The whole batch again: every answer comes from the records.
			h.flush()
			again, evs := h.transfers(tc.batch...)
			for i, r := range again {
				switch {
				case res[i].Result == InvalidID:
					if r.Result != InvalidID {
						t.Fatalf("retry %d: %s", i, r.Result)
					}
				case r.Result != Exists || (res[i].Result != Exists && r.Original != res[i].Result) || r.Seq != res[i].Seq:
					if res[i].Result == ExistsWithDifferentFields && r.Result == ExistsWithDifferentFields {
						continue
					}
					t.Fatalf("retry %d: %+v, first answer %+v", i, r, res[i])
				}
			}
			if len(evs) != 0 {
				t.Fatalf("retry of the batch emitted %d events", len(evs))
			}
		})
	}
}

func TestChainRollbackKeepsPendingFromBatch(t *testing.T) {
	h := fixture(t)
	// A failed chain that tried to post pn leaves pn open: it can still
	// be posted, and it still expires on time.
	h.transfers(hold("pn", "alice", "bob", 50, 30), linked(post("c1", "pn", "alice", "bob", 0)), withdraw("c2", "bob", 10_000))
	rec, ok := h.st.Record("pn")
	if !ok || rec.Status != StatusPending || rec.ResolvedBy != "" {
		t.Fatalf("pn after the failed chain: %+v", rec)
	}
	if at, ok := h.st.NextExpiry(); !ok || at != h.st.Time+sec(30) {
		t.Fatalf("NextExpiry %d %v", at, ok)
	}
	if r := h.do(post("c3", "pn", "alice", "bob", 0)); r.Result != OK {
		t.Fatalf("post after the failed chain: %s", r.Result)
	}
	h.wantBal("alice", "USD", bal{70, 1000, 100, 0})
	// c1 is recorded as linked_event_failed and stays that way.
	if r := h.do(linked(post("c1", "pn", "alice", "bob", 0))); r.Result != Exists || r.Original != LinkedEventFailed {
		t.Fatalf("c1 again: %+v", r)
	}
}

func TestChainRetryOfCommittedChain(t *testing.T) {
	h := fixture(t)
	chain := []Transfer{linked(xfer("c1", "alice", "bob", 10)), linked(hold("c2", "alice", "bob", 5, 0)), post("c3", "c2", "alice", "bob", 0)}
	res, _ := h.transfers(chain...)
	if codes(res) != "ok ok ok" {
		t.Fatalf("chain: %s", codes(res))
	}
	h.flush()
	before, seq := snap(h.st), h.st.Seq
	res, evs := h.transfers(chain...)
	if codes(res) != "exists exists exists" || len(evs) != 0 || h.st.Seq != seq || !snap(h.st).equal(before) {
		t.Fatalf("retry: %s, %d events", codes(res), len(evs))
	}
	if res[1].Status != StatusPending || res[2].Status != StatusPosted {
		t.Fatalf("retry statuses: %+v", res)
	}
	changed := append([]Transfer(nil), chain...)
	changed[2].Amount = 4
	res, evs = h.transfers(changed...)
	if codes(res) != "exists exists exists_with_different_fields" || len(evs) != 0 {
		t.Fatalf("changed retry: %s, %d events", codes(res), len(evs))
	}
}

func codes(rs []Result) string {
	s := ""
	for i, r := range rs {
		if i > 0 {
			s += " "
		}
		s += string(r.Result)
	}
	return s
}

func findEvent(evs []Event, seq uint64) *Event {
	for i := range evs {
		if evs[i].Seq == seq {
			return &evs[i]
		}
	}
	return nil
}
