package ledger

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

const maxAmt = int64(math.MaxInt64)

// fixture is one shard with a little history, so that every result code
// can be reached with a single transfer:
//
//	alice  USD  1000 in, 20 posted to bob, 100 held for bob (p-open)
//	bob    USD  20 in, 100 incoming hold
//	dave   USD  allow_negative, empty
//	carol  EUR  500 in
//	erin   USD  50 in, 5 held for shut (p-shut)
//	shut   USD  100 in, closed, 5 incoming hold
//
// p-void was voided by v-void, p-post posted by x-post, p-exp expired,
// r-funds rejected with insufficient_funds.
func fixture(t testing.TB) *harness {
	t.Helper()
	h := newHarness(t, 0, 1)
	for _, a := range []struct {
		id, cur string
		neg     bool
	}{{"alice", "USD", false}, {"bob", "USD", false}, {"dave", "USD", true},
		{"carol", "EUR", false}, {"erin", "USD", false}, {"shut", "USD", false}} {
		h.open(a.id, a.cur, a.neg)
	}
	h.must(deposit("d-alice", "alice", 1000), deposit("d-carol", "carol", 500),
		deposit("d-erin", "erin", 50), deposit("d-shut", "shut", 100))
	h.must(hold("p-open", "alice", "bob", 100, 0),
		hold("p-void", "alice", "bob", 10, 0), void("v-void", "p-void", "alice", "bob"),
		hold("p-post", "alice", "bob", 20, 0), post("x-post", "p-post", "alice", "bob", 0),
		hold("p-exp", "alice", "bob", 30, 10),
		hold("p-shut", "erin", "shut", 5, 0))
	if r := h.do(xfer("r-funds", "alice", "bob", 1_000_000)); r.Result != InsufficientFunds {
		t.Fatalf("r-funds: %s", r.Result)
	}
	if r := h.close("shut"); r.Result != OK {
		t.Fatalf("close shut: %s", r.Result)
	}
	if ev := h.advance(10 * time.Second); len(ev) != 1 || ev[0].Type != PendingExpiredEv || ev[0].Data.PendingID != "p-exp" {
		t.Fatalf("expiry of p-exp: %+v", ev)
	}
	h.wantBal("alice", "USD", bal{20, 1000, 100, 0})
	h.wantBal("bob", "USD", bal{0, 20, 0, 100})
	h.wantBal("erin", "USD", bal{0, 50, 5, 0})
	h.wantBal("shut", "USD", bal{0, 100, 0, 5})
	h.wantBal(World, "USD", bal{1150, 0, 0, 0})
	h.wantBal(World, "EUR", bal{500, 0, 0, 0})
	return h
}

func withRef(t Transfer, ref string) Transfer { t.Reference = ref; return t }

func withMeta(t Transfer, n, size int) Transfer {
	t.Metadata = map[string]string{}
	for i := 0; i < n; i++ {
		t.Metadata["k"+strconv.Itoa(i)] = strings.Repeat("v", size)
	}
	return t
}

func both(t Transfer, p string) Transfer { t.PostPendingID, t.VoidPendingID = p, p; return t }

type codeCase struct {
	name     string
	tr       Transfer
	code     Code
	status   Status    // "" means rejected
	original Code      // for exists
	ev       EventType // for ok
}

// codeCases holds every transfer result code, in the documented checking
// order, and for each pair of neighbouring checks a transfer that fails
// both, where the earlier check must win.
var codeCases = []codeCase{
	// invalid_id: the transfer id is checked first of all.
	{name: "empty id", tr: xfer("", "alice", "bob", 1), code: InvalidID},
	{name: "reserved id", tr: xfer("@t", "alice", "bob", 1), code: InvalidID},
	{name: "id with slash", tr: xfer("a/b", "alice", "bob", 1), code: InvalidID},
	{name: "id too long", tr: xfer(strings.Repeat("x", 65), "alice", "bob", 1), code: InvalidID},
	{name: "invalid_id before invalid_request", tr: both(xfer("", "alice", "bob", 1), "p-open"), code: InvalidID},
	{name: "invalid_id before amount_invalid", tr: xfer("", "alice", "bob", 0), code: InvalidID},

	// exists / exists_with_different_fields, before any other check.
	{name: "retry of a posted transfer", tr: deposit("d-alice", "alice", 1000), code: Exists, status: StatusPosted, original: OK},
	{name: "retry of a rejected transfer", tr: xfer("r-funds", "alice", "bob", 1_000_000), code: Exists, status: StatusRejected, original: InsufficientFunds},
	{name: "retry of a pending transfer since posted", tr: hold("p-post", "alice", "bob", 20, 0), code: Exists, status: StatusPending, original: OK},
	{name: "retry of an expired pending transfer", tr: hold("p-exp", "alice", "bob", 30, 10), code: Exists, status: StatusPending, original: OK},
	{name: "retry of a void", tr: void("v-void", "p-void", "alice", "bob"), code: Exists, status: StatusVoided, original: OK},
	{name: "retry of a post", tr: post("x-post", "p-post", "alice", "bob", 0), code: Exists, status: StatusPosted, original: OK},
	{name: "different amount", tr: deposit("d-alice", "alice", 999), code: ExistsWithDifferentFields},
	{name: "different reference", tr: withRef(deposit("d-alice", "alice", 1000), "x"), code: ExistsWithDifferentFields},
	{name: "different metadata", tr: withMeta(deposit("d-alice", "alice", 1000), 1, 1), code: ExistsWithDifferentFields},
	{name: "different linked flag", tr: linked(deposit("d-alice", "alice", 1000)), code: ExistsWithDifferentFields},
	{name: "rejected id with different fields", tr: xfer("r-funds", "alice", "bob", 1), code: ExistsWithDifferentFields},
	{name: "exists before invalid_request", tr: both(deposit("d-alice", "alice", 1000), "p-open"), code: ExistsWithDifferentFields},
	{name: "exists before amount_invalid", tr: deposit("d-alice", "alice", 0), code: ExistsWithDifferentFields},
	{name: "exists before insufficient_funds", tr: xfer("d-alice", "alice", "bob", 1_000_000), code: ExistsWithDifferentFields},

	// invalid_request and invalid party ids.
	{name: "invalid debit id", tr: xfer("t", "a/b", "bob", 1), code: InvalidID},
	{name: "reserved credit id", tr: xfer("t", "alice", "@clearing:1", 1), code: InvalidID},
	{name: "invalid pending id", tr: post("t", "@p", "alice", "bob", 0), code: InvalidID},
	{name: "post and void", tr: both(xfer("t", "alice", "bob", 0), "p-open"), code: InvalidRequest},
	{name: "pending post", tr: func() Transfer { t := post("t", "p-open", "alice", "bob", 0); t.Pending = true; return t }(), code: InvalidRequest},
	{name: "timeout without pending", tr: func() Transfer { t := xfer("t", "alice", "bob", 1); t.TimeoutSeconds = 5; return t }(), code: InvalidRequest},
	{name: "negative timeout", tr: hold("t", "alice", "bob", 1, -1), code: InvalidRequest},
	{name: "timeout too long", tr: hold("t", "alice", "bob", 1, MaxTimeoutSeconds+1), code: InvalidRequest},
	{name: "invalid_request before limit_exceeded", tr: withRef(both(xfer("t", "alice", "bob", 0), "p-open"), strings.Repeat("r", 300)), code: InvalidRequest},

	// limit_exceeded for the reference and metadata.
	{name: "reference too long", tr: withRef(xfer("t", "alice", "bob", 1), strings.Repeat("r", MaxReferenceLen+1)), code: LimitExceeded},
	{name: "too many metadata keys", tr: withMeta(xfer("t", "alice", "bob", 1), MaxMetaKeys+1, 1), code: LimitExceeded},
	{name: "metadata too large", tr: withMeta(xfer("t", "alice", "bob", 1), 2, 600), code: LimitExceeded},
	{name: "limit_exceeded before amount_invalid", tr: withRef(xfer("t", "alice", "bob", 0), strings.Repeat("r", 300)), code: LimitExceeded},

	// amount_invalid.
	{name: "zero amount", tr: xfer("t", "alice", "bob", 0), code: AmountInvalid},
	{name: "negative amount", tr: xfer("t", "alice", "bob", -5), code: AmountInvalid},
	{name: "min int amount", tr: xfer("t", "alice", "bob", math.MinInt64), code: AmountInvalid},
	{name: "negative post amount", tr: post("t", "p-open", "alice", "bob", -1), code: AmountInvalid},
	{name: "amount_invalid before accounts_must_be_different", tr: xfer("t", "alice", "alice", 0), code: AmountInvalid},

	// accounts_must_be_different.
	{name: "same account", tr: xfer("t", "alice", "alice", 1), code: AccountsMustBeDifferent},
	{name: "world to world", tr: xfer("t", World, World, 1), code: AccountsMustBeDifferent},
	{name: "accounts_must_be_different before debit_account_not_found", tr: xfer("t", "ghost", "ghost", 1), code: AccountsMustBeDifferent},

	// Posts and voids: pending_not_found, pending_already_resolved /
	// pending_expired, amount_invalid, account_closed.
	{name: "post of unknown id", tr: post("t", "nope", "alice", "bob", 0), code: PendingNotFound},
	{name: "post of a posted transfer", tr: post("t", "d-alice", World, "alice", 0), code: PendingNotFound},
	{name: "post of a rejected transfer", tr: post("t", "r-funds", "alice", "bob", 0), code: PendingNotFound},
	{name: "post naming other accounts", tr: post("t", "p-open", "alice", "dave", 0), code: PendingNotFound},
	{name: "void naming swapped accounts", tr: void("t", "p-open", "bob", "alice"), code: PendingNotFound},
	{name: "pending_not_found before amount_invalid", tr: post("t", "nope", "alice", "bob", maxAmt), code: PendingNotFound},
	{name: "post of a voided transfer", tr: post("t", "p-void", "alice", "bob", 0), code: PendingAlreadyResolved},
	{name: "void of a posted transfer", tr: void("t", "p-post", "alice", "bob"), code: PendingAlreadyResolved},
	{name: "second post", tr: post("t", "p-post", "alice", "bob", 0), code: PendingAlreadyResolved},
	{name: "pending_already_resolved before amount_invalid", tr: post("t", "p-post", "alice", "bob", maxAmt), code: PendingAlreadyResolved},
	{name: "post after expiry", tr: post("t", "p-exp", "alice", "bob", 0), code: PendingExpired},
	{name: "void after expiry", tr: void("t", "p-exp", "alice", "bob"), code: PendingExpired},
	{name: "pending_expired before amount_invalid", tr: post("t", "p-exp", "alice", "bob", 31), code: PendingExpired},
	{name: "post above the held amount", tr: post("t", "p-open", "alice", "bob", 101), code: AmountInvalid},
	{name: "partial void", tr: func() Transfer { t := void("t", "p-open", "alice", "bob"); t.Amount = 50; return t }(), code: AmountInvalid},
	{name: "amount_invalid before account_closed", tr: post("t", "p-shut", "erin", "shut", 6), code: AmountInvalid},
	{name: "post to a closed account", tr: post("t", "p-shut", "erin", "shut", 0), code: AccountClosed},
	{name: "void to a closed account releases the hold", tr: void("t", "p-shut", "erin", "shut"), code: OK, status: StatusVoided, ev: PendingVoided},
	{name: "full post", tr: post("t", "p-open", "alice", "bob", 0), code: OK, status: StatusPosted, ev: PendingPosted},
	{name: "full post by amount", tr: post("t", "p-open", "alice", "bob", 100), code: OK, status: StatusPosted, ev: PendingPosted},
	{name: "partial post", tr: post("t", "p-open", "alice", "bob", 40), code: OK, status: StatusPosted, ev: PendingPosted},
	{name: "void", tr: void("t", "p-open", "alice", "bob"), code: OK, status: StatusVoided, ev: PendingVoided},
	{name: "void by amount", tr: func() Transfer { t := void("t", "p-open", "alice", "bob"); t.Amount = 100; return t }(), code: OK, status: StatusVoided, ev: PendingVoided},

	// Everything else: debit_account_not_found, credit_account_not_found,
	// account_closed, currency_mismatch, limit_exceeded, insufficient_funds.
	{name: "unknown debit", tr: xfer("t", "ghost", "bob", 1), code: DebitAccountNotFound},
	{name: "debit_account_not_found before credit_account_not_found", tr: xfer("t", "ghost", "ghost2", 1), code: DebitAccountNotFound},
	{name: "unknown credit", tr: xfer("t", "alice", "ghost", 1), code: CreditAccountNotFound},
	{name: "deposit to unknown account", tr: deposit("t", "ghost", 1), code: CreditAccountNotFound},
	{name: "credit_account_not_found before account_closed", tr: xfer("t", "shut", "ghost", 1), code: CreditAccountNotFound},
	{name: "debit closed", tr: xfer("t", "shut", "bob", 1), code: AccountClosed},
	{name: "credit closed", tr: xfer("t", "alice", "shut", 1), code: AccountClosed},
	{name: "deposit to closed", tr: deposit("t", "shut", 1), code: AccountClosed},
	{name: "withdrawal from closed", tr: withdraw("t", "shut", 1), code: AccountClosed},
	{name: "pending to closed", tr: hold("t", "alice", "shut", 1, 0), code: AccountClosed},
	{name: "account_closed before currency_mismatch", tr: xfer("t", "shut", "carol", 1), code: AccountClosed},
	{name: "currencies differ", tr: xfer("t", "alice", "carol", 1), code: CurrencyMismatch},
	{name: "currency_mismatch before insufficient_funds", tr: xfer("t", "bob", "carol", 1_000_000), code: CurrencyMismatch},
	{name: "credit would overflow", tr: xfer("t", "dave", "alice", maxAmt), code: LimitExceeded},
	{name: "world debits would overflow", tr: deposit("t", "dave", maxAmt), code: LimitExceeded},
	{name: "held credits count toward overflow", tr: xfer("t", "dave", "bob", maxAmt-20), code: LimitExceeded},
	{name: "limit_exceeded before insufficient_funds", tr: xfer("t", "bob", "alice", maxAmt), code: LimitExceeded},
	{name: "overdraft", tr: xfer("t", "bob", "alice", 21), code: InsufficientFunds},
	{name: "holds count against available", tr: xfer("t", "alice", "bob", 881), code: InsufficientFunds},
	{name: "pending overdraft", tr: hold("t", "alice", "bob", 881, 0), code: InsufficientFunds},
	{name: "withdrawal overdraft", tr: withdraw("t", "erin", 46), code: InsufficientFunds},
	{name: "incoming holds are not available", tr: xfer("t", "bob", "dave", 100), code: InsufficientFunds},

	// ok.
	{name: "exact available", tr: xfer("t", "alice", "bob", 880), code: OK, status: StatusPosted, ev: TransferPosted},
	{name: "deposit", tr: deposit("t", "bob", 5), code: OK, status: StatusPosted, ev: TransferPosted},
	{name: "withdrawal", tr: withdraw("t", "erin", 45), code: OK, status: StatusPosted, ev: TransferPosted},
	{name: "allow_negative overdraft", tr: xfer("t", "dave", "bob", 1_000_000), code: OK, status: StatusPosted, ev: TransferPosted},
	{name: "max amount deposit", tr: deposit("t", "dave", maxAmt-1150), code: OK, status: StatusPosted, ev: TransferPosted},
	{name: "max amount overdraft", tr: xfer("t", "dave", "erin", maxAmt-50), code: OK, status: StatusPosted, ev: TransferPosted},
	{name: "pending", tr: hold("t", "alice", "bob", 880, 0), code: OK, status: StatusPending, ev: TransferPending},
	{name: "pending with timeout", tr: hold("t", "alice", "bob", 1, 60), code: OK, status: StatusPending, ev: TransferPending},
	{name: "reference and metadata at the limit", tr: withMeta(withRef(deposit("t", "bob", 1), strings.Repeat("r", MaxReferenceLen)), MaxMetaKeys, 60), code: OK, status: StatusPosted, ev: TransferPosted},
}

func TestResultCodes(t *testing.T) {
	for _, tc := range codeCases {
		t.Run(tc.name, func(t *testing.T) {
			h := fixture(t)
			before, seq, head := snap(h.st), h.st.Seq, h.st.Head
			res, evs := h.transfers(tc.tr)
			r := res[0]
			wantStatus := tc.status
			if wantStatus == "" {
				wantStatus = StatusRejected
			}
			if r.Result != tc.code || r.Status != wantStatus || r.Original != tc.original || r.ID != tc.tr.ID {
				t.Fatalf("got %+v, want %s %s original %q", r, tc.code, wantStatus, tc.original)
			}
			recorded := tc.code != Exists && tc.code != ExistsWithDifferentFields && CheckTransferID(&tc.tr) == nil
			switch {
			case !recorded:
				// No event, nothing changed; an invalid id leaves no record.
				if len(evs) != 0 || h.st.Seq != seq || h.st.Head != head || !snap(h.st).equal(before) {
					t.Fatalf("%s changed the state: %d events", tc.code, len(evs))
				}
				if tc.code == InvalidID {
					if _, ok := h.st.Record(tc.tr.ID); ok {
						t.Fatalf("invalid id %q was recorded", tc.tr.ID)
					}
				}
				if tc.code == Exists {
					rec, _ := h.st.Record(tc.tr.ID)
					if r.Seq == 0 || r.Seq != rec.Seq {
						t.Fatalf("exists answers seq %d, the record says %d", r.Seq, rec.Seq)
					}
				}
				return
			case tc.code == OK:
				if len(evs) != 1 || evs[0].Type != tc.ev || r.Seq != seq+1 || evs[0].Seq != r.Seq {
					t.Fatalf("events %+v, want one %s at seq %d", evs, tc.ev, seq+1)
				}
			default:
				// A business rejection is logged and moves no money.
				if len(evs) != 1 || evs[0].Type != TransferRejected || evs[0].Data.Result != tc.code || r.Seq != seq+1 {
					t.Fatalf("events %+v, want one TransferRejected %s", evs, tc.code)
				}
				if len(evs[0].Balances) != 0 || !snap(h.st).equal(before) {
					t.Fatal("a rejection changed balances")
				}
			}
			if evs[0].PrevHash != head || evs[0].Hash != h.st.Head || evs[0].Hash != evs[0].ComputeHash() {
				t.Fatal("event is not linked into the hash chain")
			}
			rec, ok := h.st.Record(tc.tr.ID)
			if !ok || rec.Result != tc.code || rec.Seq != r.Seq || !rec.Transfer.Same(&tc.tr) {
				t.Fatalf("record %+v (found %v)", rec, ok)
			}

			// The same request again is answered from the record and
			// changes nothing, also after a Flush hands the record to the
			// store.
			for _, flush := range []bool{false, true} {
				if flush {
					h.flush()
				}
				after, seq2, head2 := snap(h.st), h.st.Seq, h.st.Head
				res, evs := h.transfers(tc.tr)
				want := Result{ID: tc.tr.ID, Result: Exists, Status: wantStatus, Original: tc.code, Seq: r.Seq}
				if res[0] != want {
					t.Fatalf("retry (flushed %v): %+v, want %+v", flush, res[0], want)
				}
				if len(evs) != 0 || h.st.Seq != seq2 || h.st.Head != head2 || !snap(h.st).equal(after) {
					t.Fatalf("retry (flushed %v) changed the state", flush)
				}
				changed := tc.tr
				changed.Reference += "!"
				if res, evs := h.transfers(changed); res[0].Result != ExistsWithDifferentFields || len(evs) != 0 {
					t.Fatalf("changed retry: %+v, %d events", res[0], len(evs))
				}
			}
		})
	}
}

// TestCodeCoverage keeps the table honest: every transfer code the
// contract lists is produced by some case.
func TestCodeCoverage(t *testing.T) {
	seen := map[Code]bool{}
	for _, c := range codeCases {
		seen[c.code] = true
	}
	// Produced by other tests: linked_event_failed by the chain tests,
	// cross_shard_not_supported and wrong_shard by TestShards.
	for _, c := range []Code{OK, Exists, ExistsWithDifferentFields, InvalidID, InvalidRequest, LimitExceeded,
		AmountInvalid, AccountsMustBeDifferent, PendingNotFound, PendingAlreadyResolved, PendingExpired,
		DebitAccountNotFound, CreditAccountNotFound, AccountClosed, CurrencyMismatch, InsufficientFunds} {
		if !seen[c] {
			t.Errorf("no case produces %s", c)
		}
	}
}

func TestIdempotentRetryKeepsRejection(t *testing.T) {
	h := fixture(t)
	// r-funds was rejected for lack of funds. Money arriving later does
	// not turn a retry into a success: a rejected id stays rejected.
	h.must(deposit("big", "alice", 10_000_000))
	h.flush()
	before := snap(h.st)
	seq := h.st.Seq
	res, evs := h.transfers(xfer("r-funds", "alice", "bob", 1_000_000))
	if res[0].Result != Exists || res[0].Original != InsufficientFunds || res[0].Status != StatusRejected || len(evs) != 0 {
		t.Fatalf("retry: %+v, %d events", res[0], len(evs))
	}
	if h.st.Seq != seq || !snap(h.st).equal(before) {
		t.Fatal("retry of a rejected id changed the state")
	}
	// The same id inside a batch, twice: one decision, then exists.
	res, evs = h.transfers(xfer("n1", "alice", "bob", 1), xfer("n1", "alice", "bob", 1), xfer("n1", "alice", "bob", 2))
	if res[0].Result != OK || res[1].Result != Exists || res[1].Seq != res[0].Seq || res[2].Result != ExistsWithDifferentFields || len(evs) != 1 {
		t.Fatalf("duplicates in a batch: %+v, %d events", res, len(evs))
	}
}

func TestPostPartialReleasesTheRest(t *testing.T) {
	h := fixture(t)
	r := h.do(post("x", "p-open", "alice", "bob", 40))
	if r.Result != OK || r.Status != StatusPosted {
		t.Fatalf("post: %+v", r)
	}
	h.wantBal("alice", "USD", bal{60, 1000, 0, 0})
	h.wantBal("bob", "USD", bal{0, 60, 0, 0})
	rec, _ := h.st.Record("p-open")
	if rec.Status != StatusPosted || rec.ResolvedBy != "x" || rec.ResolvedAmount != 40 || rec.ResolvedSeq != r.Seq {
		t.Fatalf("pending record after post: %+v", rec)
	}
	if h.st.Pending() != 1 { // p-shut
		t.Fatalf("%d open pending transfers", h.st.Pending())
	}
	// The rest is released, not postable later.
	if r := h.do(post("y", "p-open", "alice", "bob", 60)); r.Result != PendingAlreadyResolved {
		t.Fatalf("second post: %s", r.Result)
	}
}

func TestVoidAndExpiryOnClosedAccountRelease(t *testing.T) {
	h := fixture(t)
	h.must(hold("p2", "erin", "bob", 10, 30))
	if r := h.close("erin"); r.Result != OK {
		t.Fatalf("close erin: %s", r.Result)
	}
	// erin is closed: a void still releases its hold, and so does expiry.
	if r := h.do(void("v", "p-shut", "erin", "shut")); r.Result != OK || r.Status != StatusVoided {
		t.Fatalf("void: %+v", r)
	}
	ev := h.advance(30 * time.Second)
	if len(ev) != 1 || ev[0].Data.PendingID != "p2" || ev[0].Data.Amount != 10 {
		t.Fatalf("expiry: %+v", ev)
	}
	h.wantBal("erin", "USD", bal{0, 50, 0, 0})
	h.wantBal("shut", "USD", bal{0, 100, 0, 0})
	h.wantBal("bob", "USD", bal{0, 20, 0, 100})
}

func TestOverflowNearMaxInt64(t *testing.T) {
	h := newHarness(t, 0, 1)
	h.open("a", "USD", true)
	h.open("b", "USD", false)
	h.open("c", "USD", false)
	// a may go negative, so its debits can reach MaxInt64 exactly.
	h.must(xfer("t1", "a", "b", maxAmt))
	h.wantBal("a", "USD", bal{maxAmt, 0, 0, 0})
	h.wantBal("b", "USD", bal{0, maxAmt, 0, 0})
	h.open("d", "USD", false)
	for _, tc := range []struct {
		tr   Transfer
		code Code
	}{
		{xfer("t2", "a", "c", 1), LimitExceeded},    // a's debits are full
		{deposit("t3", "b", 1), LimitExceeded},      // b's credits are full
		{hold("t4", "a", "c", 1, 0), LimitExceeded}, // holds count too
		{xfer("t5", "b", "c", maxAmt), OK},          // b spends it all
		{withdraw("t6", "c", maxAmt), OK},           // c to @world
		{deposit("t7", "c", 1), LimitExceeded},      // c's credits are full
		{withdraw("t8", "b", 1), LimitExceeded},     // b's debits are full
		{deposit("t9", "d", 5), OK},
		{hold("t10", "d", "c", 1, 0), LimitExceeded},   // c's credits with holds
		{withdraw("t11", "d", 5), LimitExceeded},       // @world's credits are full
		{hold("t12", "d", World, 5, 0), LimitExceeded}, // and cannot take a hold
		{xfer("t13", "d", "b", 5), LimitExceeded},      // the overflow check comes before funds
	} {
		if r := h.do(tc.tr); r.Result != tc.code {
			t.Fatalf("%s: %s, want %s", tc.tr.ID, r.Result, tc.code)
		}
	}
	if w := h.acc(World, "USD"); w.DebitsPosted != 5 || w.CreditsPosted != maxAmt || w.Balance() != maxAmt-5 {
		t.Fatalf("@world: %+v", w)
	}
	h.wantBal("a", "USD", bal{maxAmt, 0, 0, 0})
	h.wantBal("d", "USD", bal{0, 5, 0, 0})
}

func TestExpiryUsesLogTime(t *testing.T) {
	h := newHarness(t, 0, 1)
	h.begin(sec(1)) // log time goes back: ignored
	if h.st.Time != sec(1000) {
		t.Fatalf("log time went back to %d", h.st.Time)
	}
	h.open("a", "USD", false)
	h.open("b", "USD", false)
	h.must(deposit("d", "a", 100))
	h.must(hold("p1", "a", "b", 10, 60), hold("p2", "a", "b", 20, 30), hold("p3", "a", "b", 30, 30), hold("p4", "a", "b", 1, 0))
	if at, ok := h.st.NextExpiry(); !ok || at != sec(1030) {
		t.Fatalf("NextExpiry %d %v", at, ok)
	}
	// The wall clock is decades past these log times; only log time counts.
	if ev := h.begin(sec(1029)); len(ev) != 0 {
		t.Fatalf("expired early: %+v", ev)
	}
	// A post in the last entry before the timeout still works.
	if r := h.do(post("x3", "p3", "a", "b", 0)); r.Result != OK {
		t.Fatalf("post before expiry: %s", r.Result)
	}
	ev := h.begin(sec(1030))
	if len(ev) != 1 || ev[0].Type != PendingExpiredEv || ev[0].Data.PendingID != "p2" || ev[0].Data.Transfer != nil ||
		ev[0].Time != sec(1030) || ev[0].RaftIndex != h.index || ev[0].Data.Amount != 20 || ev[0].Data.Currency != "USD" {
		t.Fatalf("expiry at 1030: %+v", ev)
	}
	rec, _ := h.st.Record("p2")
	if rec.Status != StatusVoided || rec.ResolvedBy != "expired" || rec.ResolvedAmount != 20 || rec.ResolvedSeq != ev[0].Seq {
		t.Fatalf("expired record: %+v", rec)
	}
	for _, tr := range []Transfer{post("x2", "p2", "a", "b", 0), void("v2", "p2", "a", "b")} {
		if r := h.do(tr); r.Result != PendingExpired {
			t.Fatalf("%s after expiry: %s", tr.ID, r.Result)
		}
	}
	// Expired holds are released; the untimed one stays.
	h.wantBal("a", "USD", bal{30, 100, 11, 0})
	if ev := h.begin(sec(5000)); len(ev) != 1 || ev[0].Data.PendingID != "p1" {
		t.Fatalf("expiry at 5000: %+v", ev)
	}
	if _, ok := h.st.NextExpiry(); ok || h.st.Pending() != 1 {
		t.Fatalf("pending %d, NextExpiry still set", h.st.Pending())
	}
	h.wantBal("a", "USD", bal{30, 100, 1, 0})
}

func TestExpiryOrderIsDeterministic(t *testing.T) {
	h := newHarness(t, 0, 1)
	h.open("a", "USD", true)
	h.open("b", "USD", false)
	var ts []Transfer
	for i, id := range []string{"z", "m", "a", "q", "b"} {
		ts = append(ts, hold(id, "a", "b", int64(i+1), int64(10+i%2)))
	}
	h.must(ts...)
	ev := h.begin(sec(2000))
	var got []string
	for _, e := range ev {
		got = append(got, e.Data.PendingID)
	}
	// By expiry time, then id: z, a, b expire at 1010; m, q at 1011.
	if strings.Join(got, ",") != "a,b,z,m,q" {
		t.Fatalf("expiry order %v", got)
	}
}

func TestExpiryTimeSaturates(t *testing.T) {
	// A log time near the end of int64 must not wrap the expiry into the
	// past, where the hold would expire at once.
	h := newHarness(t, 0, 1)
	h.open("a", "USD", true)
	h.open("b", "USD", false)
	h.begin(Time(math.MaxInt64 - int64(time.Second)))
	h.must(hold("p", "a", "b", 1, MaxTimeoutSeconds))
	rec, _ := h.st.Record("p")
	if rec.ExpiresAt <= rec.Time {
		t.Fatalf("expires at %d, created at %d", rec.ExpiresAt, rec.Time)
	}
	if ev := h.advance(time.Nanosecond); len(ev) != 0 {
		t.Fatalf("expired at once: %+v", ev)
	}
}
