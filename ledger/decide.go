package ledger

import "math"

// Kind is a command's type.
type Kind uint8

const (
	CmdOpenAccounts Kind = 1
	CmdCloseAccount Kind = 2
	CmdTransfers    Kind = 3
	// Saga steps, sent by the saga driver (see saga.go).
	CmdSagaCredit  Kind = 4 // destination: credit, unless fenced
	CmdSagaFence   Kind = 5 // destination: refuse any later credit
	CmdSagaResolve Kind = 6 // source: complete or abort
)

// Command is one client request for one shard, as it travels in the Raft
// log. A Raft entry carries many commands; a linked chain never spans two.
type Command struct {
	Kind      Kind
	Accounts  []Account  // CmdOpenAccounts
	AccountID string     // CmdCloseAccount
	Transfers []Transfer // CmdTransfers
	Saga      []SagaStep // CmdSaga*
}

// Home returns the account whose shard owns transfer t: the debit account,
// or the credit account of a deposit (a debit from @world).
func Home(t *Transfer) string {
	if t.Debit == World {
		return t.Credit
	}
	return t.Debit
}

func (st *State) openAccount(a *Account) Result {
	res := Result{ID: a.ID, Shard: st.Shard}
	if p := CheckAccount(a); p != nil {
		res.Result = p.Code
		return res
	}
	if ShardOf(a.ID, st.Shards) != st.Shard {
		res.Result = WrongShard
		return res
	}
	if old := st.Accounts[a.ID]; old != nil {
		res.Seq = old.CreatedSeq
		res.Result = Exists
		if old.Currency != a.Currency || old.AllowNegative != a.AllowNegative || !sameMeta(old.Metadata, a.Metadata) {
			res.Result = ExistsWithDifferentFields
		}
		return res
	}
	acc := Account{ID: a.ID, Currency: a.Currency, AllowNegative: a.AllowNegative,
		Metadata: a.Metadata, CreatedSeq: st.Seq + 1, CreatedAt: int64(st.Time)}
	ev := st.emit(AccountOpened, Data{Account: &acc})
	res.Result, res.Seq = OK, ev.Seq
	return res
}

func (st *State) closeAccount(id string) Result {
	res := Result{ID: id, Shard: st.Shard}
	a := st.Accounts[id]
	switch {
	case !ValidID(id) || IsSystem(id):
		res.Result = InvalidID
	case a == nil:
		res.Result = AccountNotFound
	case a.Closed:
		res.Result = AccountClosed
	default:
		ev := st.emit(AccountClosedEv, Data{AccountID: id})
		res.Result, res.Seq = OK, ev.Seq
	}
	return res
}

// transfers decides a batch. Transfers marked linked form a chain with the
// ones after them up to the first unlinked one; a chain is applied whole or
// not at all.
func (st *State) transfers(ts []Transfer) []Result {
	out := make([]Result, len(ts))
	for i := 0; i < len(ts); {
		j := i
		for j < len(ts)-1 && ts[j].Linked {
			j++
		}
		if j == i && !ts[i].Linked {
			out[i] = st.transfer(&ts[i])
		} else {
			st.chain(ts[i:j+1], out[i:j+1])
		}
		i = j + 1
	}
	return out
}

// chain applies ts all or nothing. A chain left open at the end of a batch
// fails whole: the edge rejects it, this keeps Decide total.
func (st *State) chain(ts []Transfer, out []Result) {
	st.undo = newUndo(st)
	failed, code := -1, OK
	for k := range ts {
		out[k] = st.transfer(&ts[k])
		// A member that exists as a rejection fails the chain too:
		// applying the others without it would split what was linked.
		if c := out[k].Result; c != OK && (c != Exists || out[k].Original != OK) {
			failed, code = k, c
			break
		}
	}
	if failed < 0 && ts[len(ts)-1].Linked {
		failed, code = len(ts)-1, InvalidRequest
	}
	u := st.undo
	st.undo = nil
	if failed < 0 {
		return
	}
	u.rollback(st)
	for k := range ts {
		c := LinkedEventFailed
		if k == failed {
			c = code
		}
		out[k] = st.reject(&ts[k], c)
	}
}

// transfer decides and applies one transfer.
func (st *State) transfer(t *Transfer) Result {
	if p := CheckTransferID(t); p != nil {
		return Result{ID: t.ID, Result: InvalidID, Status: StatusRejected, Shard: st.Shard}
	}
	if r, ok := st.record(t.ID); ok {
		return st.existing(t, r)
	}
	code, typ, d := st.decide(t)
	if code != OK {
		return st.reject(t, code)
	}
	ev := st.emit(typ, d)
	r, _ := st.record(t.ID)
	return Result{ID: t.ID, Result: OK, Status: r.Outcome(), Shard: st.Shard, Seq: ev.Seq}
}

func (st *State) existing(t *Transfer, r *Record) Result {
	if !r.Transfer.Same(t) {
		return Result{ID: t.ID, Result: ExistsWithDifferentFields, Status: StatusRejected, Shard: st.Shard}
	}
	return Result{ID: t.ID, Result: Exists, Status: r.Outcome(), Original: r.Result, Shard: st.Shard, Seq: r.Seq}
}

// reject records a business rejection, so that a retry of the id gets the
// same answer. Ids that are invalid or already known are not recorded.
func (st *State) reject(t *Transfer, code Code) Result {
	if CheckTransferID(t) != nil {
		return Result{ID: t.ID, Result: InvalidID, Status: StatusRejected, Shard: st.Shard}
	}
	if r, ok := st.record(t.ID); ok {
		return st.existing(t, r)
	}
	// A misrouted transfer is not this shard's to record, and one with
	// invalid UTF-8 could not be replayed from the log (see validUTF8).
	if code == WrongShard || !validUTF8(t) {
		return Result{ID: t.ID, Result: code, Status: StatusRejected, Shard: st.Shard}
	}
	tc := *t
	ev := st.emit(TransferRejected, Data{Transfer: &tc, Result: code, Currency: st.currencyOf(t)})
	return Result{ID: t.ID, Result: code, Status: StatusRejected, Shard: st.Shard, Seq: ev.Seq}
}

// decide runs the checks in the documented order and returns the first
// failing code, or OK with the event to emit.
func (st *State) decide(t *Transfer) (Code, EventType, Data) {
	if p := CheckTransfer(t); p != nil {
		return p.Code, "", Data{}
	}
	if ShardOf(Home(t), st.Shards) != st.Shard {
		return WrongShard, "", Data{}
	}
	if t.Resolves() != "" {
		return st.decideResolve(t)
	}
	other := t.Credit
	if Home(t) == t.Credit {
		other = t.Debit
	}
	if other != World && ShardOf(other, st.Shards) != st.Shard {
		// Pending and linked transfers stay on one shard; others run as
		// a saga (saga.go).
		if t.Pending || st.undo != nil {
			return CrossShardNotSupported, "", Data{}
		}
		return st.decideHold(t, ShardOf(other, st.Shards))
	}
	dr, cr, code := st.parties(t)
	if code != OK {
		return code, "", Data{}
	}
	tc := *t
	d := Data{Transfer: &tc, Currency: dr.Currency}
	if !addOK(dr.DebitsPosted+dr.DebitsPending, t.Amount) || !addOK(cr.CreditsPosted+cr.CreditsPending, t.Amount) {
		return LimitExceeded, "", Data{}
	}
	if !dr.AllowNegative && dr.DebitsPosted+dr.DebitsPending+t.Amount > dr.CreditsPosted {
		return InsufficientFunds, "", Data{}
	}
	if !t.Pending {
		return OK, TransferPosted, d
	}
	if t.TimeoutSeconds > 0 {
		// Saturate: a log time near the end of int64 must not wrap the
		// expiry into the past.
		d.ExpiresAt = st.Time + Time(t.TimeoutSeconds*1e9)
		if d.ExpiresAt < st.Time {
			d.ExpiresAt = math.MaxInt64
		}
	}
	return OK, TransferPending, d
}

// parties finds the two accounts of a transfer and checks that they are
// open and share a currency. A missing @world account is made on the fly:
// it exists implicitly for every currency.
func (st *State) parties(t *Transfer) (dr, cr *Account, code Code) {
	if t.Debit != World {
		if dr = st.Accounts[t.Debit]; dr == nil {
			return nil, nil, DebitAccountNotFound
		}
	}
	if t.Credit != World {
		if cr = st.Accounts[t.Credit]; cr == nil {
			return nil, nil, CreditAccountNotFound
		}
	}
	if dr == nil {
		dr = st.worldOr(cr.Currency)
	}
	if cr == nil {
		cr = st.worldOr(dr.Currency)
	}
	if dr.Closed || cr.Closed {
		return nil, nil, AccountClosed
	}
	if dr.Currency != cr.Currency {
		return nil, nil, CurrencyMismatch
	}
	return dr, cr, OK
}

// worldOr returns @world in currency cur, or a fresh zero one to decide
// against (apply creates it).
func (st *State) worldOr(cur string) *Account {
	if a := st.account(World, cur); a != nil {
		return a
	}
	return &Account{ID: World, Currency: cur, AllowNegative: true}
}

func (st *State) decideResolve(t *Transfer) (Code, EventType, Data) {
	p, ok := st.record(t.Resolves())
	if !ok || !p.Transfer.Pending || p.Result != OK ||
		p.Transfer.Debit != t.Debit || p.Transfer.Credit != t.Credit {
		return PendingNotFound, "", Data{}
	}
	if p.Status != StatusPending {
		if p.ResolvedBy == resolvedByExpiry {
			return PendingExpired, "", Data{}
		}
		return PendingAlreadyResolved, "", Data{}
	}
	amt, held := t.Amount, p.Transfer.Amount
	if amt == 0 {
		amt = held
	}
	if amt > held || (t.VoidPendingID != "" && amt != held) {
		return AmountInvalid, "", Data{}
	}
	tc := *t
	cur := st.currencyOf(&p.Transfer)
	d := Data{Transfer: &tc, PendingID: p.Transfer.ID, Amount: amt, Currency: cur}
	if t.VoidPendingID != "" {
		return OK, PendingVoided, d
	}
	dr, cr := st.account(t.Debit, cur), st.account(t.Credit, cur)
	if (dr != nil && dr.Closed) || (cr != nil && cr.Closed) {
		return AccountClosed, "", Data{}
	}
	return OK, PendingPosted, d
}
