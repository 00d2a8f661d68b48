package ledger

import (
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"testing"
	"time"
)

// mapStore is an in-memory Store that keeps what Flush hands over, as the
// fsm does in Badger. It stores and returns copies, so that the state
// cannot change a record behind a Flush.
type mapStore map[string]*Record

func (m mapStore) Record(id string) (*Record, bool) {
	r, ok := m[id]
	if !ok {
		return nil, false
	}
	c := *r
	return &c, true
}

func (m mapStore) put(c Changes) {
	for _, r := range c.Records {
		cp := *r
		m[r.Transfer.ID] = &cp
	}
}

// sec is a log time in whole seconds.
func sec(s int64) Time { return Time(s * int64(time.Second)) }

// harness drives one State the way the fsm does: one Begin per Raft entry,
// commands executed in it, Flush into a store. It checks the books after
// every command.
type harness struct {
	t      testing.TB
	st     *State
	store  mapStore
	index  uint64
	now    Time
	events []Event // flushed events, in order
	// version is the codec version of the entries begin starts (0:
	// EntryVersion).
	version byte
}

func newHarness(t testing.TB, shard, shards int) *harness {
	t.Helper()
	h := &harness{t: t, store: mapStore{}}
	h.st = NewState(shard, shards, h.store)
	h.begin(sec(1000))
	return h
}

// begin starts a new Raft entry at log time at and returns the events the
// entry's expiries emitted.
func (h *harness) begin(at Time) []Event {
	h.t.Helper()
	n := len(h.st.events)
	h.index++
	h.now = at
	if h.version != 0 {
		h.st.BeginEntry(h.index, at, h.version)
	} else {
		h.st.Begin(h.index, at)
	}
	h.checkBooks()
	return append([]Event(nil), h.st.events[n:]...)
}

// advance starts a new entry d later than the last one.
func (h *harness) advance(d time.Duration) []Event {
	h.t.Helper()
	return h.begin(h.now + Time(d))
}

func (h *harness) exec(c *Command) []Result {
	h.t.Helper()
	res := h.st.Execute(c)
	h.checkBooks()
	return res
}

func (h *harness) open(id, cur string, allowNegative bool) {
	h.t.Helper()
	res := h.exec(&Command{Kind: CmdOpenAccounts, Accounts: []Account{{ID: id, Currency: cur, AllowNegative: allowNegative}}})
	if res[0].Result != OK {
		h.t.Fatalf("open %s: %s", id, res[0].Result)
	}
}

func (h *harness) close(id string) Result {
	h.t.Helper()
	return h.exec(&Command{Kind: CmdCloseAccount, AccountID: id})[0]
}

// transfers executes one batch and returns its results and the events it
// emitted.
func (h *harness) transfers(ts ...Transfer) ([]Result, []Event) {
	h.t.Helper()
	n := len(h.st.events)
	res := h.exec(&Command{Kind: CmdTransfers, Transfers: ts})
	if len(res) != len(ts) {
		h.t.Fatalf("%d results for %d transfers", len(res), len(ts))
	}
	return res, append([]Event(nil), h.st.events[n:]...)
}

// do executes one transfer and returns its result.
func (h *harness) do(t Transfer) Result {
	h.t.Helper()
	res, _ := h.transfers(t)
	return res[0]
}

// must executes transfers that must all succeed.
func (h *harness) must(ts ...Transfer) {
	h.t.Helper()
	res, _ := h.transfers(ts...)
	for i, r := range res {
		if r.Result != OK {
			h.t.Fatalf("transfer %s: %s, want ok", ts[i].ID, r.Result)
		}
	}
}

func (h *harness) flush() {
	h.t.Helper()
	c := h.st.Flush()
	h.store.put(c)
	h.events = append(h.events, c.Events...)
}

// acc returns a copy of an account, or fails the test.
func (h *harness) acc(id, cur string) Account {
	h.t.Helper()
	a := h.st.account(id, cur)
	if a == nil {
		h.t.Fatalf("no account %s", AccountKey(id, cur))
	}
	return *a
}

// bal is an account's four balance fields.
type bal struct{ dp, cp, dpend, cpend int64 }

func balOf(a Account) bal {
	return bal{a.DebitsPosted, a.CreditsPosted, a.DebitsPending, a.CreditsPending}
}

func (b bal) String() string {
	return fmt.Sprintf("posted %d/%d pending %d/%d", b.dp, b.cp, b.dpend, b.cpend)
}

func (h *harness) wantBal(id, cur string, want bal) {
	h.t.Helper()
	if got := balOf(h.acc(id, cur)); got != want {
		h.t.Fatalf("balance of %s: %v, want %v", AccountKey(id, cur), got, want)
	}
}

func (h *harness) checkBooks() {
	h.t.Helper()
	if err := checkBooks(h.st); err != nil {
		h.t.Fatal(err)
	}
}

// checkBooks checks what must hold after every command: every currency
// sums to zero, nobody without allow_negative is overdrawn (holds
// included), no balance field is negative or overflows, and the pending
// fields are exactly the sums of the open pending transfers.
func checkBooks(st *State) error {
	for cur, s := range st.Sums() {
		if s.Sign() != 0 {
			return fmt.Errorf("currency %s sums to %s", cur, s)
		}
	}
	if o := st.Overdrawn(); len(o) != 0 {
		return fmt.Errorf("overdrawn: %v", o)
	}
	held := map[string][2]*big.Int{}
	for k, a := range st.Accounts {
		if a.DebitsPosted < 0 || a.CreditsPosted < 0 || a.DebitsPending < 0 || a.CreditsPending < 0 {
			return fmt.Errorf("account %s has a negative field: %+v", k, *a)
		}
		if a.DebitsPending > math.MaxInt64-a.DebitsPosted || a.CreditsPending > math.MaxInt64-a.CreditsPosted {
			return fmt.Errorf("account %s: posted plus pending overflows: %+v", k, *a)
		}
		if k != a.Key() {
			return fmt.Errorf("account %s stored under key %s", a.Key(), k)
		}
		held[k] = [2]*big.Int{new(big.Int), new(big.Int)}
	}
	for id, r := range st.pending {
		saga := r.Saga != nil && r.Saga.Role == RoleSource && r.Status == StatusInFlight && r.Saga.Step == StepHeld
		if r.Result != OK || !saga && (r.Status != StatusPending || !r.Transfer.Pending) {
			return fmt.Errorf("open pending %s is %s/%s", id, r.Result, r.Status)
		}
		if r.ExpiresAt != 0 && r.ExpiresAt <= r.Time {
			return fmt.Errorf("pending %s created at %d expires at %d", id, r.Time, r.ExpiresAt)
		}
		cur := st.currencyOf(&r.Transfer)
		dk, ck := AccountKey(r.Transfer.Debit, cur), AccountKey(r.Transfer.Credit, cur)
		if saga {
			// A saga holds against the clearing account of its peer shard.
			ck = AccountKey(ClearingID(r.Saga.Peer), r.Saga.Currency)
		}
		if held[dk][0] == nil || held[ck][1] == nil {
			return fmt.Errorf("pending %s names a missing account", id)
		}
		held[dk][0].Add(held[dk][0], big.NewInt(r.Transfer.Amount))
		held[ck][1].Add(held[ck][1], big.NewInt(r.Transfer.Amount))
	}
	for k, a := range st.Accounts {
		if held[k][0].Cmp(big.NewInt(a.DebitsPending)) != 0 || held[k][1].Cmp(big.NewInt(a.CreditsPending)) != 0 {
			return fmt.Errorf("account %s holds %d/%d, open pending transfers add up to %s/%s",
				k, a.DebitsPending, a.CreditsPending, held[k][0], held[k][1])
		}
	}
	// NextExpiry is a lower bound of the open expiry times: a pending
	// transfer below it, or with no bound at all, would never expire.
	n, ok := st.NextExpiry()
	for id, r := range st.pending {
		if r.ExpiresAt != 0 && (!ok || r.ExpiresAt < int64(n)) {
			return fmt.Errorf("pending %s expires at %d, NextExpiry is %d (%v)", id, r.ExpiresAt, n, ok)
		}
	}
	return nil
}

// snapshot is a deep copy of what a command may change besides the log:
// the accounts and the open pending transfers.
type snapshot struct {
	accounts map[string]Account
	pending  map[string]Record
	nextExp  Time
}

func snap(st *State) snapshot {
	s := snapshot{accounts: map[string]Account{}, pending: map[string]Record{}, nextExp: st.nextExp}
	for k, a := range st.Accounts {
		s.accounts[k] = *a
	}
	for id, r := range st.pending {
		s.pending[id] = *r
	}
	return s
}

func (s snapshot) equal(o snapshot) bool { return reflect.DeepEqual(s, o) }

// idOnShard returns an id starting with prefix that ShardOf places on
// shard of shards.
func idOnShard(t testing.TB, prefix string, shard, shards int) string {
	t.Helper()
	for i := 0; i < 10000; i++ {
		id := prefix + strconv.Itoa(i)
		if ShardOf(id, shards) == shard {
			return id
		}
	}
	t.Fatalf("no id %s* on shard %d of %d", prefix, shard, shards)
	return ""
}

// Transfer builders, to keep tables short.
func xfer(id, debit, credit string, amount int64) Transfer {
	return Transfer{ID: id, Debit: debit, Credit: credit, Amount: amount}
}

func deposit(id, to string, amount int64) Transfer { return xfer(id, World, to, amount) }

func withdraw(id, from string, amount int64) Transfer { return xfer(id, from, World, amount) }

func hold(id, debit, credit string, amount, timeout int64) Transfer {
	t := xfer(id, debit, credit, amount)
	t.Pending, t.TimeoutSeconds = true, timeout
	return t
}

func post(id, pendingID, debit, credit string, amount int64) Transfer {
	t := xfer(id, debit, credit, amount)
	t.PostPendingID = pendingID
	return t
}

func void(id, pendingID, debit, credit string) Transfer {
	t := xfer(id, debit, credit, 0)
	t.VoidPendingID = pendingID
	return t
}

func linked(t Transfer) Transfer {
	t.Linked = true
	return t
}
