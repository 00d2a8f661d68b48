package postgres

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"tally/ledger"
)

// sim runs real ledger states, one per shard, so that the fold is tested
// on the events the ledger emits.
type sim struct {
	t      *testing.T
	shards []*ledger.State
	stores []memStore
	events []ledger.Event
	index  uint64
	now    ledger.Time
}

type memStore map[string]*ledger.Record

func (m memStore) Record(id string) (*ledger.Record, bool) {
	r, ok := m[id]
	if !ok {
		return nil, false
	}
	c := *r
	return &c, true
}

// day0 is a log time late on a day, so that an hour later is the next day.
var day0 = ledger.Time(time.Date(2026, 12, 5, 23, 30, 0, 0, time.UTC).UnixNano())

func newSim(t *testing.T, n int) *sim {
	s := &sim{t: t, now: day0}
	for i := range n {
		st := memStore{}
		s.stores = append(s.stores, st)
		s.shards = append(s.shards, ledger.NewState(i, n, st))
	}
	return s
}

// exec runs one command on shard sh at the current time and keeps its
// events.
func (s *sim) exec(sh int, c ledger.Command) []ledger.Result {
	s.t.Helper()
	st := s.shards[sh]
	s.index++
	st.Begin(s.index, s.now)
	res := st.Execute(&c)
	ch := st.Flush()
	for _, r := range ch.Records {
		if !r.Open() {
			s.stores[sh][r.Transfer.ID] = r
		}
	}
	s.events = append(s.events, ch.Events...)
	return res
}

func (s *sim) shardOf(id string) int { return ledger.ShardOf(id, len(s.shards)) }

func (s *sim) open(ids ...string) {
	for _, id := range ids {
		s.exec(s.shardOf(id), ledger.Command{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{{ID: id, Currency: "USD"}}})
	}
}

func (s *sim) transfer(t ledger.Transfer) ledger.Result {
	s.t.Helper()
	return s.exec(s.shardOf(ledger.Home(&t)), ledger.Command{Kind: ledger.CmdTransfers, Transfers: []ledger.Transfer{t}})[0]
}

// saga runs a cross-shard transfer's three steps; credit says whether the
// destination accepts the credit (else the hold is released).
func (s *sim) saga(id, from, to string, amount int64, credit bool) {
	s.t.Helper()
	t := ledger.Transfer{ID: id, Debit: from, Credit: to, Amount: amount}
	src, dst := s.shardOf(from), s.shardOf(to)
	if r := s.transfer(t); r.Status != ledger.StatusInFlight {
		s.t.Fatalf("saga %s: hold answered %+v", id, r)
	}
	kind := ledger.CmdSagaCredit
	if !credit {
		kind = ledger.CmdSagaFence
	}
	r := s.exec(dst, ledger.Command{Kind: kind, Saga: []ledger.SagaStep{{Source: src, Transfer: t, Currency: "USD"}}})[0]
	s.exec(src, ledger.Command{Kind: ledger.CmdSagaResolve, Saga: []ledger.SagaStep{{Source: src, Transfer: t, Outcome: r.Result}}})
}

// view is the tables in memory: what write stores, applied the same way.
type view struct {
	accounts  map[accountKey]accountRow
	transfers map[transferKey]transferRow
	volumes   map[volumeKey]string
	offsets   map[int]offset
	events    int
}

func newView() *view {
	return &view{accounts: map[accountKey]accountRow{}, transfers: map[transferKey]transferRow{},
		volumes: map[volumeKey]string{}, offsets: map[int]offset{}}
}

// apply folds a batch, skipping what the view holds as Apply does.
func (v *view) apply(t *testing.T, events []ledger.Event) {
	t.Helper()
	var fresh []ledger.Event
	for _, e := range events {
		if e.Seq > v.offsets[e.Shard].Seq {
			fresh = append(fresh, e)
		}
	}
	c, err := fold(fresh)
	if err != nil {
		t.Fatal(err)
	}
	v.events += len(c.events)
	for k, a := range c.accounts {
		if old, ok := v.accounts[k]; ok && old.Closed {
			a.Closed = true
		}
		v.accounts[k] = *a
	}
	for _, r := range c.transfers {
		if _, ok := v.transfers[r.transferKey]; ok {
			t.Fatalf("transfer %v inserted twice", r.transferKey)
		}
		v.transfers[r.transferKey] = *r
	}
	for k, u := range c.updates {
		r, ok := v.transfers[k]
		if !ok {
			t.Fatalf("update of unknown transfer %v", k)
		}
		r.Status, r.Result, r.resolution = u.Status, u.Result, u.resolution
		v.transfers[k] = r
	}
	for k, n := range c.volumes {
		var had int64
		var amt string
		fmt.Sscanf(v.volumes[k], "%d/%s", &had, &amt)
		v.volumes[k] = fmt.Sprintf("%d/%s", had+n.Count, addDecimal(amt, n.Amount.String()))
	}
	maps.Copy(v.offsets, c.offsets)
}

func addDecimal(a, b string) string {
	var x, y int64
	fmt.Sscan(a, &x)
	fmt.Sscan(b, &y)
	return fmt.Sprint(x + y)
}

// wantTransfer is a transfer row on alice's shard.
type wantTransfer struct {
	status ledger.Status
	amount int64
}

func TestFold(t *testing.T) {
	hour := ledger.Time(time.Hour)
	tests := []struct {
		name      string
		run       func(s *sim)
		transfers map[string]wantTransfer // by id; every row must be listed
		volumes   map[string]string       // "2026-12-05": "count/amount" of USD
	}{
		{name: "posted and rejected", run: func(s *sim) {
			s.open("alice", "carol")
			s.transfer(ledger.Transfer{ID: "d-1", Debit: ledger.World, Credit: "alice", Amount: 1000})
			s.transfer(ledger.Transfer{ID: "t-1", Debit: "alice", Credit: "carol", Amount: 300})
			s.transfer(ledger.Transfer{ID: "t-2", Debit: "alice", Credit: "carol", Amount: 5000})
		}, transfers: map[string]wantTransfer{"d-1": {ledger.StatusPosted, 1000}, "t-1": {ledger.StatusPosted, 300},
			"t-2": {ledger.StatusRejected, 5000}},
			volumes: map[string]string{"2026-12-05": "2/1300"}},
		{name: "pending posted in part, voided, expired", run: func(s *sim) {
			s.open("alice", "carol")
			s.transfer(ledger.Transfer{ID: "d-1", Debit: ledger.World, Credit: "alice", Amount: 1000})
			s.transfer(ledger.Transfer{ID: "h-1", Debit: "alice", Credit: "carol", Amount: 100, Pending: true})
			s.transfer(ledger.Transfer{ID: "h-2", Debit: "alice", Credit: "carol", Amount: 200, Pending: true})
			s.transfer(ledger.Transfer{ID: "h-3", Debit: "alice", Credit: "carol", Amount: 300, Pending: true, TimeoutSeconds: 60})
			s.now += hour
			s.transfer(ledger.Transfer{ID: "p-1", Debit: "alice", Credit: "carol", Amount: 60, PostPendingID: "h-1"})
			s.transfer(ledger.Transfer{ID: "v-2", Debit: "alice", Credit: "carol", VoidPendingID: "h-2"})
			s.transfer(ledger.Transfer{ID: "p-3", Debit: "alice", Credit: "carol", PostPendingID: "h-3"})
		}, transfers: map[string]wantTransfer{"d-1": {ledger.StatusPosted, 1000},
			"h-1": {ledger.StatusPosted, 100}, "p-1": {ledger.StatusPosted, 60},
			"h-2": {ledger.StatusVoided, 200}, "v-2": {ledger.StatusVoided, 200},
			"h-3": {ledger.StatusVoided, 300}, "p-3": {ledger.StatusRejected, 0}},
			volumes: map[string]string{"2026-12-05": "1/1000", "2026-12-06": "1/60"}},
		{name: "sagas completed and aborted", run: func(s *sim) {
			s.open("alice", "dave", "erin")
			s.transfer(ledger.Transfer{ID: "d-1", Debit: ledger.World, Credit: "alice", Amount: 1000})
			s.saga("x-1", "alice", "dave", 400, true)
			s.saga("x-2", "alice", "dave", 100, false)
		}, transfers: map[string]wantTransfer{"d-1": {ledger.StatusPosted, 1000},
			"x-1": {ledger.StatusPosted, 400}, "x-2": {ledger.StatusRejected, 100}},
			volumes: map[string]string{"2026-12-05": "2/1400"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, 4)
			home := s.shardOf("alice")
			if home != s.shardOf("carol") || home == s.shardOf("dave") {
				t.Fatalf("placement changed: alice on %d, dave on %d", s.shardOf("alice"), s.shardOf("dave"))
			}
			tc.run(s)
			whole := newView()
			whole.apply(t, s.events)
			checkLedger(t, s, whole)
			if len(whole.transfers) != len(tc.transfers) {
				t.Errorf("%d transfer rows, want %d: %v", len(whole.transfers), len(tc.transfers), whole.transfers)
			}
			for id, w := range tc.transfers {
				r := whole.transfers[transferKey{Shard: home, ID: id}]
				if r.Status != w.status || r.Amount != w.amount {
					t.Errorf("transfer %s: status %s amount %d, want %s %d", id, r.Status, r.Amount, w.status, w.amount)
				}
			}
			got := map[string]string{}
			for k, v := range whole.volumes {
				got[k.Day.Format("2006-01-02")] = v
			}
			if !maps.Equal(got, tc.volumes) {
				t.Errorf("daily volume %v, want %v", got, tc.volumes)
			}
			// Any split into batches, and any batch given twice, folds to
			// the same view.
			for size := 1; size <= len(s.events); size++ {
				v := newView()
				for i := 0; i < len(s.events); i += size {
					b := s.events[i:min(i+size, len(s.events))]
					v.apply(t, b)
					v.apply(t, b) // a batch given again after a crash
				}
				if !sameView(v, whole) {
					t.Fatalf("batches of %d fold to another view", size)
				}
			}
		})
	}
}

// checkLedger compares the view with the ledger's own state: every
// account's balances and every client transfer's status.
func checkLedger(t *testing.T, s *sim, v *view) {
	t.Helper()
	n := 0
	for sh, st := range s.shards {
		for _, a := range st.Accounts {
			n++
			r, ok := v.accounts[accountKey{Shard: sh, ID: a.ID, Currency: a.Currency}]
			if !ok || r.Balance != a.Balance() || r.Available != a.Available() || r.DebitsPending != a.DebitsPending ||
				r.CreditsPending != a.CreditsPending || r.Closed != a.Closed {
				t.Errorf("account %s/%s on shard %d: view %+v, ledger %+v", a.ID, a.Currency, sh, r, *a)
			}
		}
		if off := v.offsets[sh]; off.Seq != st.Seq || off.Hash != st.Head {
			t.Errorf("shard %d: offset %d, ledger at %d", sh, off.Seq, st.Seq)
		}
	}
	if n != len(v.accounts) {
		t.Errorf("%d account rows, the ledger has %d", len(v.accounts), n)
	}
	for k, r := range v.transfers {
		rec, ok := s.shards[k.Shard].Record(k.ID)
		if !ok {
			t.Errorf("transfer %v: not in the ledger", k)
			continue
		}
		if rec.Status != r.Status {
			t.Errorf("transfer %v: view says %s, ledger %s", k, r.Status, rec.Status)
		}
	}
}

func sameView(a, b *view) bool {
	if !maps.Equal(a.accounts, b.accounts) || !maps.Equal(a.volumes, b.volumes) || !maps.Equal(a.offsets, b.offsets) ||
		a.events != b.events || len(a.transfers) != len(b.transfers) {
		return false
	}
	for k, r := range a.transfers {
		if rowString(r) != rowString(b.transfers[k]) {
			return false
		}
	}
	return true
}

func TestFoldRefusesATransferEventWithoutItsTransfer(t *testing.T) {
	_, err := fold([]ledger.Event{{Shard: 0, Seq: 1, Type: ledger.TransferPosted}})
	if err == nil {
		t.Fatal("folded a TransferPosted without a transfer")
	}
}

// rowString prints a row with its pointers followed.
func rowString(r transferRow) string {
	deref := func(p any) string {
		switch v := p.(type) {
		case *int:
			if v != nil {
				return fmt.Sprint(*v)
			}
		case *int64:
			if v != nil {
				return fmt.Sprint(*v)
			}
		case *uint64:
			if v != nil {
				return fmt.Sprint(*v)
			}
		case *time.Time:
			if v != nil {
				return v.String()
			}
		}
		return "nil"
	}
	return fmt.Sprintf("%v %s %s %d %s %s %s %s %s %d %s %s %s %s %s", r.transferKey, r.Debit, r.Credit, r.Amount,
		r.Currency, r.Status, r.Result, r.PendingID, deref(r.PeerShard), r.Seq, r.Time, deref(r.ExpiresAt),
		deref(r.ResolvedSeq), r.ResolvedBy, deref(r.ResolvedAmount))
}
