package ledger

import (
	"fmt"
	"math"
	"slices"
	"sort"
)

// Store gives the ledger the transfer records it does not keep in memory
// (all but the open pending ones). It must return what the state held
// after the last Flush; the caller owns the result.
type Store interface {
	Record(id string) (*Record, bool)
}

// State is one shard's ledger state: every account with its balances, the
// open pending transfers, and the head of the event log. It is the only
// writer of these; it is not safe for concurrent use.
type State struct {
	Shard  int
	Shards int
	Seq    uint64 // last event's seq
	Head   Hash   // last event's hash
	Time   Time   // log time of the entry being applied (never decreases)
	Index  uint64 // Raft index of the entry being applied

	Accounts map[string]*Account // by Key()
	pending  map[string]*Record  // open pending transfers by id
	records  map[string]*Record  // records read or written since Flush
	store    Store
	nextExp  Time  // lower bound of the open pendings' expiry times; 0: none
	enc      uint8 // encoding of the events of the entry being applied

	dirtyAcc map[string]bool
	// dirtyRec lists the ids of the records written since the last Flush,
	// an id once per write: appending costs a replay of millions of
	// records far less than a second map would.
	dirtyRec []string
	events   []Event
	undo     *undo
}

// NewState returns the empty state of shard `shard` of `shards`.
func NewState(shard, shards int, store Store) *State {
	return &State{Shard: shard, Shards: shards, store: store, enc: EncodingOf(EntryVersion),
		Accounts: map[string]*Account{}, pending: map[string]*Record{},
		records: map[string]*Record{}, dirtyAcc: map[string]bool{}}
}

// SetStore sets where the state reads records it does not hold.
func (st *State) SetStore(s Store) { st.store = s }

// Load puts an open pending record into the state, for a caller that
// rebuilds it from storage.
func (st *State) Load(r *Record) {
	st.pending[r.Transfer.ID] = r
	st.noteExpiry(r.ExpiresAt)
}

// Pending returns the number of open pending transfers.
func (st *State) Pending() int { return len(st.pending) }

// NextExpiry returns a time at or before which the next open pending
// transfer expires, and whether there is one. The leader uses it to
// propose an entry that lets expiry happen without other traffic.
func (st *State) NextExpiry() (Time, bool) { return st.nextExp, st.nextExp != 0 }

// Changes is what a batch changed since the last Flush, for storage.
type Changes struct {
	Accounts []*Account
	Records  []*Record
	Events   []Event
}

// Flush returns the accounts and records changed and the events emitted
// since the last Flush, and forgets them.
func (st *State) Flush() Changes {
	var c Changes
	for _, k := range sortedKeys(st.dirtyAcc) {
		if a, ok := st.Accounts[k]; ok {
			c.Accounts = append(c.Accounts, a)
		}
	}
	slices.Sort(st.dirtyRec)
	for _, id := range slices.Compact(st.dirtyRec) {
		if r, ok := st.record(id); ok {
			c.Records = append(c.Records, r)
		}
	}
	c.Events = st.events
	st.events = nil
	st.records = map[string]*Record{}
	st.dirtyAcc = map[string]bool{}
	st.dirtyRec = nil
	return c
}

// Reserve makes room for about n records written before the next Flush,
// for a replay that knows how long the log it folds is: a map grown a
// record at a time spends a third of such a replay rehashing. It does
// nothing once records are held.
func (st *State) Reserve(n int) {
	if len(st.records) == 0 && len(st.dirtyRec) == 0 && n > 0 {
		st.records, st.dirtyRec = make(map[string]*Record, n), make([]string, 0, n)
	}
}

// EachRecord calls fn with every transfer record the state holds in
// memory, in no order, and returns how many there are: the open pending
// ones and those read or written since the last Flush. A state that only
// replayed a log (no store, nothing loaded) holds exactly the records it
// wrote: Flush's, without sorting or forgetting them (a verifier compares
// millions). It only reads: another goroutine may read the state
// meanwhile. fn must not change the records.
func (st *State) EachRecord(fn func(r *Record)) int {
	n := len(st.pending)
	for _, r := range st.pending {
		fn(r)
	}
	for _, r := range st.records {
		if r != nil {
			n++
			fn(r)
		}
	}
	return n
}

// Begin starts a Raft entry of the version this build proposes
// (EntryVersion); see BeginEntry.
func (st *State) Begin(index uint64, t Time) { st.BeginEntry(index, t, EntryVersion) }

// BeginEntry starts a Raft entry of codec version version: it sets the
// entry's index and log time (never earlier than the previous entry's)
// and the encoding of the entry's events (EncodingOf: JSON for version 1,
// binary after), and expires every pending transfer whose timeout has
// passed by that time. The version is the entry's own, so every replica
// hashes its events alike, whichever version it would propose itself.
func (st *State) BeginEntry(index uint64, t Time, version byte) {
	st.enc = EncodingOf(version)
	st.Index = index
	if t > st.Time {
		st.Time = t
	}
	if st.nextExp == 0 || st.nextExp > st.Time {
		return
	}
	var due []*Record
	st.nextExp = 0
	for _, r := range st.pending {
		if r.ExpiresAt != 0 && r.ExpiresAt <= int64(st.Time) {
			due = append(due, r)
		} else {
			st.noteExpiry(r.ExpiresAt)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		if due[i].ExpiresAt != due[j].ExpiresAt {
			return due[i].ExpiresAt < due[j].ExpiresAt
		}
		return due[i].Transfer.ID < due[j].Transfer.ID
	})
	for _, r := range due {
		st.emit(PendingExpiredEv, Data{PendingID: r.Transfer.ID, Amount: r.Transfer.Amount, Currency: st.currencyOf(&r.Transfer)})
	}
}

func (st *State) noteExpiry(at int64) {
	if at != 0 && (st.nextExp == 0 || Time(at) < st.nextExp) {
		st.nextExp = Time(at)
	}
}

// Execute decides a command and applies its events. It returns one result
// per item, in order.
func (st *State) Execute(c *Command) []Result {
	switch c.Kind {
	case CmdOpenAccounts:
		out := make([]Result, len(c.Accounts))
		for i := range c.Accounts {
			out[i] = st.openAccount(&c.Accounts[i])
		}
		return out
	case CmdCloseAccount:
		return []Result{st.closeAccount(c.AccountID)}
	case CmdTransfers:
		return st.transfers(c.Transfers)
	case CmdSagaCredit, CmdSagaFence, CmdSagaResolve:
		out := make([]Result, len(c.Saga))
		for i := range c.Saga {
			out[i] = st.sagaStep(c.Kind, &c.Saga[i])
		}
		return out
	}
	return nil
}

// record finds a transfer record: open pending first, then this batch's,
// then the store.
func (st *State) record(id string) (*Record, bool) {
	if r, ok := st.pending[id]; ok {
		return r, true
	}
	if r, ok := st.records[id]; ok {
		return r, r != nil
	}
	if st.store == nil {
		return nil, false
	}
	r, ok := st.store.Record(id)
	if ok {
		st.records[id] = r
	}
	return r, ok
}

// Record returns a copy of the record of transfer id, if any.
func (st *State) Record(id string) (Record, bool) {
	r, ok := st.record(id)
	if !ok {
		return Record{}, false
	}
	return *r, true
}

// account returns the account id in currency cur, or nil.
func (st *State) account(id, cur string) *Account {
	return st.Accounts[AccountKey(id, cur)]
}

// currencyOf returns the currency a transfer moves: that of its client account.
func (st *State) currencyOf(t *Transfer) string {
	id := t.Debit
	if IsSystem(id) {
		id = t.Credit
	}
	if a := st.Accounts[id]; a != nil {
		return a.Currency
	}
	return ""
}

func (st *State) emit(typ EventType, d Data) Event {
	e := Event{Shard: st.Shard, Seq: st.Seq + 1, RaftIndex: st.Index, Time: st.Time, Type: typ, Data: d, Enc: st.enc}
	if err := st.apply(&e); err != nil {
		// Decide checked everything apply needs: a failure is a bug, and
		// continuing would let replicas diverge.
		panic(fmt.Sprintf("ledger: shard %d: apply decided event: %v", st.Shard, err))
	}
	return e
}

func addOK(a, b int64) bool { return b >= 0 && a <= math.MaxInt64-b }

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
