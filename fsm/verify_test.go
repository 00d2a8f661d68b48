package fsm

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"tally/ledger"
)

// TestVerifyDetectsTampering changes the stored state behind the FSM's
// back, the way a disk fault or an operator with a Badger tool could, and
// checks that Verify reports it.
func TestVerifyDetectsTampering(t *testing.T) {
	logs := logsOf(1, newGen(12).data(120))
	base := t.TempDir()
	f := open(t, base)
	applyIn(f, logs, 16)
	st := status(t, f)
	rep := verify(t, f)
	if rep.Events != st.AppliedSeq || rep.Head != st.Head || rep.StateHash != st.StateHash || rep.Accounts != st.Accounts {
		t.Fatalf("verify of an untouched state: %+v, status %+v", rep, st)
	}
	evs := allEvents(t, f)
	var pending ledger.Event
	posted := map[uint8]ledger.Event{} // the first of each encoding after seq 10
	for _, e := range evs {
		if _, ok := posted[e.Enc]; !ok && e.Type == ledger.TransferPosted && e.Seq > 10 {
			posted[e.Enc] = e
		}
		if e.Type == ledger.TransferPending {
			if r, _, err := f.Transfer(e.Data.Transfer.ID); err == nil && r.Status == ledger.StatusPending {
				pending = e
			}
		}
	}
	if len(posted) != 2 || pending.Seq == 0 {
		t.Fatalf("no posted transfer of each encoding (%d) or open pending one (%d) to tamper with", len(posted), pending.Seq)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	for _, enc := range []uint8{ledger.EncJSON, ledger.EncBinary} {
		t.Run(fmt.Sprintf("enc=%d", enc), func(t *testing.T) { tamperCases(t, base, posted[enc], pending) })
	}
}

func tamperCases(t *testing.T, base string, posted, pending ledger.Event) {
	acct := posted.Data.Transfer.Credit
	if ledger.IsSystem(acct) {
		acct = posted.Data.Transfer.Debit
	}
	for _, tc := range []struct {
		name   string
		tamper func(txn *badger.Txn) error
		want   string
	}{
		{"event amount", func(txn *badger.Txn) error {
			return editStored(txn, eventKey(posted.Seq), func(e *ledger.Event) { e.Data.Transfer.Amount++ })
		}, fmt.Sprintf("event %d: hash", posted.Seq)},
		{"event balances", func(txn *badger.Txn) error {
			// With its own hash made again: the next event's prev_hash
			// would tell, but the balances tell first.
			return editStored(txn, eventKey(posted.Seq), func(e *ledger.Event) { e.Balances[0].CreditsPosted += 7; e.Seal() })
		}, fmt.Sprintf("event %d: balance of", posted.Seq)},
		{"event removed", func(txn *badger.Txn) error {
			return txn.Delete(eventKey(posted.Seq))
		}, fmt.Sprintf("event seq %d after %d", posted.Seq+1, posted.Seq-1)},
		{"account balance", func(txn *badger.Txn) error {
			return editStored(txn, key(preAcct, acct), func(a *ledger.Account) { a.CreditsPosted += 100 })
		}, "stored account " + acct + " differs from replay"},
		{"account removed", func(txn *badger.Txn) error {
			return txn.Delete(key(preAcct, acct))
		}, "accounts stored"},
		{"transfer record", func(txn *badger.Txn) error {
			return editStored(txn, key(preRec, posted.Data.Transfer.ID), func(r *ledger.Record) { r.Status = ledger.StatusVoided })
		}, "stored record " + posted.Data.Transfer.ID + " differs from replay"},
		{"record added", func(txn *badger.Txn) error {
			// An idempotency record no event made: a later transfer with
			// this id would be answered "exists" and never applied.
			r := ledger.Record{Transfer: ledger.Transfer{ID: "ghost", Debit: acct, Credit: ledger.World, Amount: 1},
				Result: ledger.OK, Status: ledger.StatusPosted, Seq: posted.Seq}
			return txn.Set(key(preRec, "ghost"), r.AppendBinary(nil))
		}, "stored record ghost was not replayed"},
		{"record removed", func(txn *badger.Txn) error {
			return txn.Delete(key(preRec, posted.Data.Transfer.ID))
		}, "transfer records stored"},
		{"open pending index", func(txn *badger.Txn) error {
			return txn.Delete(key(preOpen, pending.Data.Transfer.ID))
		}, "open pending transfers stored"},
		{"applied head", func(txn *badger.Txn) error {
			m, err := readMeta(txn)
			if err != nil {
				return err
			}
			m.Head[0] ^= 1
			return txn.Set(keyMeta, m.encode())
		}, "replay ends at seq"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, base, dir)
			withBadger(t, dir, tc.tamper)
			f := open(t, dir)
			_, err := f.Verify(t.Context())
			if err == nil {
				t.Fatal("verify passed on a tampered state")
			}
			if !strings.HasPrefix(err.Error(), "verify shard 0: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("verify: %v\nwant an error about %q", err, tc.want)
			}
		})
	}
}

// editStored rewrites the event, account or record at k in place, in the
// form it is stored in.
func editStored[T ledger.Event | ledger.Account | ledger.Record](txn *badger.Txn, k []byte, edit func(*T)) error {
	item, err := txn.Get(k)
	if err != nil {
		return fmt.Errorf("get %q: %w", k, err)
	}
	old, err := item.ValueCopy(nil)
	if err != nil {
		return err
	}
	var v T
	var b []byte
	switch p := any(&v).(type) {
	case *ledger.Event:
		err = ledger.DecodeEvent(old, p)
		edit(&v)
		b = p.AppendBinary(nil)
	case *ledger.Account:
		err = ledger.DecodeAccount(old, p)
		edit(&v)
		b = p.AppendBinary(nil)
	case *ledger.Record:
		err = ledger.DecodeRecord(old, p)
		edit(&v)
		b = p.AppendBinary(nil)
	}
	if err != nil {
		return err
	}
	if old[0] == '{' {
		if b, err = json.Marshal(&v); err != nil {
			return err
		}
	}
	return txn.Set(k, b)
}
