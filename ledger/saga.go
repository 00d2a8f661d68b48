package ledger

import (
	"errors"
	"fmt"
	"strconv"
)

// A cross-shard transfer from A (shard S) to B (shard D) runs as a saga
// of ordinary commands and events on the two shards, so that each shard
// sums to 0 after every event:
//
//	S: SagaDebitHeld    A.debits_pending  += x, @clearing:D.credits_pending += x
//	D: SagaCredited     B.credits_posted  += x, @clearing:S.debits_posted   += x
//	   (or SagaCreditRejected: nothing moves)
//	S: SagaCompleted    the holds become posted
//	   (or SagaAborted: the holds are released)
//
// D remembers every credit decision under SagaKey(S, id), so a repeated
// credit answers the stored outcome and a fence (an abort request) can
// only win over a credit that has not happened. A saga whose credit
// succeeded is never aborted: the driver aborts only on a rejection or a
// fence that D accepted.

// SagaStep is one saga command item.
type SagaStep struct {
	Source   int      // the source shard (credit, fence)
	Transfer Transfer // the client's transfer; resolve uses only its id
	Currency string
	Outcome  Code   // resolve: OK completes; any other code aborts with it
	Note     string // resolve: an operator's note for a manual resolution
}

// SagaKey is the record key under which a destination shard remembers its
// decision for the saga of transfer id from shard source. Transfer ids
// cannot start with '@', so the key never meets a client's id.
func SagaKey(source int, id string) string { return "@saga:" + strconv.Itoa(source) + ":" + id }

// ClearingID names the clearing account of the saga legs with shard peer.
func ClearingID(peer int) string { return ClearingPrefix + strconv.Itoa(peer) }

// decideHold checks the source side of a cross-shard transfer: the debit
// account, its funds including holds, and the clearing account's room.
// The credit account is checked by its own shard.
func (st *State) decideHold(t *Transfer, dest int) (Code, EventType, Data) {
	if t.Debit == World || t.Credit == World {
		return CrossShardNotSupported, "", Data{}
	}
	dr := st.Accounts[t.Debit]
	switch {
	case dr == nil:
		return DebitAccountNotFound, "", Data{}
	case dr.Closed:
		return AccountClosed, "", Data{}
	}
	cl := st.systemOr(ClearingID(dest), dr.Currency)
	if !addOK(dr.DebitsPosted+dr.DebitsPending, t.Amount) || !addOK(cl.CreditsPosted+cl.CreditsPending, t.Amount) {
		return LimitExceeded, "", Data{}
	}
	if !dr.AllowNegative && dr.DebitsPosted+dr.DebitsPending+t.Amount > dr.CreditsPosted {
		return InsufficientFunds, "", Data{}
	}
	tc := *t
	return OK, SagaDebitHeld, Data{Transfer: &tc, Currency: dr.Currency, Peer: &dest}
}

// systemOr returns system account id in currency cur, or a fresh one to
// decide against (apply creates it).
func (st *State) systemOr(id, cur string) *Account {
	if a := st.account(id, cur); a != nil {
		return a
	}
	return &Account{ID: id, Currency: cur, AllowNegative: true}
}

func (st *State) sagaStep(k Kind, s *SagaStep) Result {
	switch k {
	case CmdSagaCredit, CmdSagaFence:
		return st.destStep(k, s)
	}
	return st.resolveSaga(s)
}

// destStep decides a credit or a fence on the destination shard.
func (st *State) destStep(k Kind, s *SagaStep) Result {
	t := &s.Transfer
	key := SagaKey(s.Source, t.ID)
	res := Result{ID: t.ID, Shard: st.Shard, Status: StatusRejected}
	if s.Source < 0 || s.Source >= st.Shards || s.Source == st.Shard || CheckTransferID(t) != nil ||
		t.Amount <= 0 || !ValidCurrency(s.Currency) || !validUTF8(t) || !ValidID(t.Credit) || IsSystem(t.Credit) {
		res.Result = InvalidRequest
		return res
	}
	if ShardOf(t.Credit, st.Shards) != st.Shard {
		res.Result = WrongShard
		return res
	}
	if r, ok := st.record(key); ok {
		res.Result, res.Status, res.Seq = r.Result, r.Status, r.Seq
		return res
	}
	code := SagaAbortedCode
	if k == CmdSagaCredit {
		code = st.checkCredit(t, s.Source, s.Currency)
	}
	src := s.Source
	tc := *t
	d := Data{Transfer: &tc, Currency: s.Currency, Peer: &src}
	typ := SagaCredited
	if code != OK {
		typ, d.Result = SagaCreditRejected, code
	}
	ev := st.emit(typ, d)
	r, _ := st.record(key)
	res.Result, res.Status, res.Seq = r.Result, r.Status, ev.Seq
	return res
}

func (st *State) checkCredit(t *Transfer, source int, cur string) Code {
	cr := st.Accounts[t.Credit]
	switch {
	case cr == nil:
		return CreditAccountNotFound
	case cr.Closed:
		return AccountClosed
	case cr.Currency != cur:
		return CurrencyMismatch
	}
	cl := st.systemOr(ClearingID(source), cur)
	if !addOK(cr.CreditsPosted+cr.CreditsPending, t.Amount) || !addOK(cl.DebitsPosted+cl.DebitsPending, t.Amount) {
		return LimitExceeded
	}
	return OK
}

// resolveSaga completes or aborts an open saga on its source shard. A
// saga already finished answers its outcome and changes nothing.
func (st *State) resolveSaga(s *SagaStep) Result {
	id := s.Transfer.ID
	res := Result{ID: id, Shard: st.Shard, Status: StatusRejected}
	r, ok := st.record(id)
	if !ok || r.Saga == nil || r.Saga.Role != RoleSource || s.Outcome == "" {
		res.Result = InvalidRequest
		return res
	}
	if !r.Open() {
		res.Result, res.Status, res.Seq = r.Result, r.Status, r.ResolvedSeq
		return res
	}
	peer := r.Saga.Peer
	d := Data{PendingID: id, Amount: r.Transfer.Amount, Currency: r.Saga.Currency, Peer: &peer, Note: s.Note}
	typ := SagaCompleted
	if s.Outcome != OK {
		typ, d.Result = SagaAborted, s.Outcome
	}
	ev := st.emit(typ, d)
	res.Result, res.Status, res.Seq = r.Result, r.Status, ev.Seq
	return res
}

// OpenSagas returns the open sagas this shard started, in id order.
func (st *State) OpenSagas() []Record {
	var out []Record
	for _, id := range sortedKeys(st.pending) {
		if r := st.pending[id]; r.Saga != nil {
			out = append(out, *r)
		}
	}
	return out
}

// Apply side.

func (st *State) applyHeld(e *Event) ([]*Account, error) {
	t := e.Data.Transfer
	if t == nil || t.Amount <= 0 || e.Data.Peer == nil {
		return nil, errors.New("saga hold without transfer or peer")
	}
	if _, ok := st.record(t.ID); ok {
		return nil, fmt.Errorf("transfer %q applied twice", t.ID)
	}
	dr, cl, err := st.sagaLegs(t.Debit, ClearingID(*e.Data.Peer), e.Data.Currency)
	if err != nil {
		return nil, err
	}
	if !addOK(dr.DebitsPosted+dr.DebitsPending, t.Amount) || !addOK(cl.CreditsPosted+cl.CreditsPending, t.Amount) {
		return nil, errors.New("balance overflow")
	}
	dr.DebitsPending += t.Amount
	cl.CreditsPending += t.Amount
	st.putRecord(&Record{Transfer: *t, Result: OK, Status: StatusInFlight, Seq: e.Seq, Time: int64(e.Time),
		Saga: &Saga{Role: RoleSource, Peer: *e.Data.Peer, Currency: e.Data.Currency, Step: StepHeld}}, true)
	return []*Account{dr, cl}, nil
}

func (st *State) applyCredit(e *Event) ([]*Account, error) {
	t := e.Data.Transfer
	if t == nil || t.Amount <= 0 || e.Data.Peer == nil {
		return nil, errors.New("saga credit without transfer or peer")
	}
	key := SagaKey(*e.Data.Peer, t.ID)
	if _, ok := st.record(key); ok {
		return nil, fmt.Errorf("saga %q decided twice", key)
	}
	rec := &Record{Transfer: *t, Result: OK, Status: StatusPosted, Seq: e.Seq, Time: int64(e.Time),
		Saga: &Saga{Role: RoleDestination, Peer: *e.Data.Peer, Currency: e.Data.Currency, Step: StepCredited}}
	rec.Transfer.ID = key
	var touched []*Account
	if e.Type == SagaCreditRejected {
		if e.Data.Result == OK || e.Data.Result == "" {
			return nil, errors.New("saga rejection without a code")
		}
		rec.Result, rec.Status, rec.Saga.Step = e.Data.Result, StatusRejected, StepRejected
	} else {
		cl, cr, err := st.sagaLegs(ClearingID(*e.Data.Peer), t.Credit, e.Data.Currency)
		if err != nil {
			return nil, err
		}
		if !addOK(cr.CreditsPosted+cr.CreditsPending, t.Amount) || !addOK(cl.DebitsPosted+cl.DebitsPending, t.Amount) {
			return nil, errors.New("balance overflow")
		}
		cr.CreditsPosted += t.Amount
		cl.DebitsPosted += t.Amount
		touched = []*Account{cr, cl}
	}
	st.putRecord(rec, false)
	return touched, nil
}

func (st *State) applySagaEnd(e *Event) ([]*Account, error) {
	r, ok := st.pending[e.Data.PendingID]
	if !ok || r.Saga == nil || e.Data.Peer == nil || *e.Data.Peer != r.Saga.Peer || e.Data.Amount != r.Transfer.Amount {
		return nil, fmt.Errorf("end of unknown saga %q", e.Data.PendingID)
	}
	dr, cl, err := st.sagaLegs(r.Transfer.Debit, ClearingID(r.Saga.Peer), r.Saga.Currency)
	if err != nil {
		return nil, err
	}
	amt := r.Transfer.Amount
	st.saveRec(r.Transfer.ID)
	dr.DebitsPending -= amt
	cl.CreditsPending -= amt
	saga := *r.Saga
	saga.Note = e.Data.Note
	if e.Type == SagaCompleted {
		dr.DebitsPosted += amt
		cl.CreditsPosted += amt
		r.Status, saga.Step = StatusPosted, StepCompleted
	} else {
		if e.Data.Result == OK || e.Data.Result == "" {
			return nil, errors.New("saga abort without a code")
		}
		r.Status, r.Result, saga.Step = StatusRejected, e.Data.Result, StepAborted
	}
	r.Saga, r.ResolvedSeq = &saga, e.Seq
	delete(st.pending, r.Transfer.ID)
	st.records[r.Transfer.ID] = r
	st.dirtyRec = append(st.dirtyRec, r.Transfer.ID)
	return []*Account{dr, cl}, nil
}

// sagaLegs returns the client account and the clearing account of a saga
// leg, creating the clearing account on first use.
func (st *State) sagaLegs(debit, credit, cur string) (dr, cr *Account, err error) {
	get := func(id string) (*Account, error) {
		k := AccountKey(id, cur)
		if a := st.Accounts[k]; a != nil {
			st.saveAcc(k)
			return a, nil
		}
		if !IsSystem(id) || !ValidCurrency(cur) {
			return nil, fmt.Errorf("unknown account %q", id)
		}
		st.saveAcc(k)
		a := &Account{ID: id, Currency: cur, AllowNegative: true}
		st.Accounts[k] = a
		return a, nil
	}
	if dr, err = get(debit); err != nil {
		return nil, nil, err
	}
	if cr, err = get(credit); err != nil {
		return nil, nil, err
	}
	if dr.Currency != cr.Currency {
		return nil, nil, errors.New("currency mismatch")
	}
	return dr, cr, nil
}

// Crosses reports whether plain transfer t runs as a saga: its accounts
// live on two shards (a system account such as @world lives on every
// shard). Posting or voiding a pending transfer never crosses.
func Crosses(t *Transfer, shards int) bool {
	if t.Debit == "" || t.Credit == "" {
		return false
	}
	other := t.Credit
	if Home(t) == t.Credit {
		other = t.Debit
	}
	return other != World && ShardOf(other, shards) != ShardOf(Home(t), shards)
}
