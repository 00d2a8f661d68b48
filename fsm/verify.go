package fsm

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/dgraph-io/badger/v4"

	"tally/ledger"
)

// Report is the outcome of Verify.
type Report struct {
	Events     uint64      `json:"events"`
	AppliedSeq uint64      `json:"applied_seq"`
	Head       ledger.Hash `json:"head_hash"`
	StateHash  ledger.Hash `json:"state_hash"`
	Accounts   int         `json:"accounts"`
	Records    int         `json:"records"`
}

// Verify rebuilds the shard by folding its event log from seq 1, checking
// every event's balances and hash on the way, then compares what it built
// with the stored accounts, transfer records, open pending index and
// applied head, all read at one point in time. It also checks that every
// currency sums to 0 and that no account is overdrawn.
func (f *FSM) Verify(ctx context.Context) (Report, error) {
	var rep Report
	_, err := f.view(func(txn *badger.Txn) error {
		m, err := readMeta(txn)
		if err != nil {
			return err
		}
		st := ledger.NewState(f.shard, f.shards, nil)
		if err := replayAll(ctx, txn, st, &rep); err != nil {
			return err
		}
		if st.Seq != m.Seq || st.Head != m.Head {
			return fmt.Errorf("replay ends at seq %d head %s, state says seq %d head %s", st.Seq, st.Head, m.Seq, m.Head)
		}
		rep.AppliedSeq, rep.Head, rep.StateHash = m.Seq, m.Head, st.StateHash()
		if err := checkBooks(st); err != nil {
			return err
		}
		c := st.Flush()
		rep.Accounts, rep.Records = len(st.Accounts), len(c.Records)
		return compareStored(txn, st, c)
	})
	if err != nil {
		return rep, fmt.Errorf("verify shard %d: %w", f.shard, err)
	}
	return rep, nil
}

func replayAll(ctx context.Context, txn *badger.Txn, st *ledger.State, rep *Report) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: preEvent, PrefetchValues: true, PrefetchSize: 256})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if rep.Events%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		var e ledger.Event
		if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &e) }); err != nil {
			return fmt.Errorf("decode event %x: %w", it.Item().Key(), err)
		}
		if err := st.Replay(e); err != nil {
			return err
		}
		rep.Events++
	}
	return nil
}

func checkBooks(st *ledger.State) error {
	for cur, s := range st.Sums() {
		if s.Sign() != 0 {
			return fmt.Errorf("currency %s sums to %s, not 0", cur, s)
		}
	}
	if o := st.Overdrawn(); len(o) > 0 {
		return fmt.Errorf("overdrawn accounts: %v", o)
	}
	return nil
}

// compareStored checks the stored derived state against the replay.
func compareStored(txn *badger.Txn, st *ledger.State, c ledger.Changes) error {
	stored := 0
	err := eachValue(txn, preAcct, func(k, v []byte) error {
		stored++
		var a ledger.Account
		if err := json.Unmarshal(v, &a); err != nil {
			return err
		}
		want := st.Accounts[string(k[len(preAcct):])]
		if want == nil || !reflect.DeepEqual(normal(*want), normal(a)) {
			return fmt.Errorf("stored account %s differs from replay: stored %+v, replay %+v", k[len(preAcct):], a, want)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if stored != len(st.Accounts) {
		return fmt.Errorf("%d accounts stored, %d replayed", stored, len(st.Accounts))
	}
	// Replay rebuilds every record, so a stored one it did not make (an
	// id that would wrongly answer "exists") shows in the count.
	records := 0
	if err := eachValue(txn, preRec, func(_, _ []byte) error { records++; return nil }); err != nil {
		return err
	}
	if records != len(c.Records) {
		return fmt.Errorf("%d transfer records stored, %d replayed", records, len(c.Records))
	}
	for _, r := range c.Records {
		got, ok, err := getRecord(txn, r.Transfer.ID)
		if err != nil {
			return err
		}
		if !ok || !reflect.DeepEqual(normalRec(*got), normalRec(*r)) {
			return fmt.Errorf("stored record %s differs from replay: stored %+v, replay %+v", r.Transfer.ID, got, r)
		}
	}
	open := 0
	err = eachValue(txn, preOpen, func(k, _ []byte) error {
		open++
		return nil
	})
	if err != nil {
		return err
	}
	if open != st.Pending() {
		return fmt.Errorf("%d open pending transfers stored, %d replayed", open, st.Pending())
	}
	return nil
}

// normal makes empty and nil metadata compare equal.
func normal(a ledger.Account) ledger.Account {
	if len(a.Metadata) == 0 {
		a.Metadata = nil
	}
	return a
}

func normalRec(r ledger.Record) ledger.Record {
	if len(r.Transfer.Metadata) == 0 {
		r.Transfer.Metadata = nil
	}
	return r
}
