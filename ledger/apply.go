package ledger

import (
	"errors"
	"fmt"
)

const resolvedByExpiry = "expired"

// apply folds one event into the state: it moves the balances, updates the
// transfer records, fills in the resulting balances and links the event
// into the hash chain. The live path and replay share it, so replay
// rebuilds exactly what was applied.
func (st *State) apply(e *Event) error {
	touched, err := st.fold(e)
	if err != nil {
		return err
	}
	e.Balances = make([]Balance, len(touched))
	for i, a := range touched {
		st.dirtyAcc[a.Key()] = true
		e.Balances[i] = balanceOf(a)
	}
	e.PrevHash = st.Head
	e.Seal()
	st.Seq, st.Head = e.Seq, e.Hash
	st.events = append(st.events, *e)
	return nil
}

// fold moves the balances and records of one event and returns the
// accounts it touched, in the order of its balances.
func (st *State) fold(e *Event) (touched []*Account, err error) {
	if e.Seq != st.Seq+1 {
		return nil, fmt.Errorf("event seq %d after %d", e.Seq, st.Seq)
	}
	switch e.Type {
	case AccountOpened:
		touched, err = st.applyOpen(e)
	case AccountClosedEv:
		a := st.Accounts[e.Data.AccountID]
		if a == nil || IsSystem(e.Data.AccountID) {
			return nil, fmt.Errorf("close of unknown account %q", e.Data.AccountID)
		}
		st.saveAcc(a.Key())
		a.Closed = true
		touched = []*Account{a}
	case TransferPosted, TransferPending:
		touched, err = st.applyTransfer(e)
	case PendingPosted, PendingVoided, PendingExpiredEv:
		touched, err = st.applyResolve(e)
	case SagaDebitHeld:
		touched, err = st.applyHeld(e)
	case SagaCredited, SagaCreditRejected:
		touched, err = st.applyCredit(e)
	case SagaCompleted, SagaAborted:
		touched, err = st.applySagaEnd(e)
	case TransferRejected:
		if e.Data.Transfer == nil || e.Data.Result == OK {
			return nil, errors.New("rejection without transfer or code")
		}
		st.putRecord(&Record{Transfer: *e.Data.Transfer, Result: e.Data.Result,
			Status: StatusRejected, Seq: e.Seq, Time: int64(e.Time)}, false)
	default:
		return nil, fmt.Errorf("unknown event type %q", e.Type)
	}
	return touched, err
}

func (st *State) applyOpen(e *Event) ([]*Account, error) {
	a := e.Data.Account
	if a == nil || CheckAccount(&Account{ID: a.ID, Currency: a.Currency, Metadata: a.Metadata}) != nil {
		return nil, errors.New("open of an invalid account")
	}
	if st.Accounts[a.ID] != nil {
		return nil, fmt.Errorf("open of existing account %q", a.ID)
	}
	acc := *a
	st.saveAcc(acc.Key())
	st.Accounts[acc.Key()] = &acc
	return []*Account{&acc}, nil
}

// legs returns the debit and credit accounts of t in currency cur,
// creating @world where it is named.
func (st *State) legs(t *Transfer, cur string) (dr, cr *Account, err error) {
	get := func(id string) (*Account, error) {
		k := AccountKey(id, cur)
		if a := st.Accounts[k]; a != nil {
			st.saveAcc(k)
			return a, nil
		}
		if id != World || !ValidCurrency(cur) {
			return nil, fmt.Errorf("unknown account %q", id)
		}
		st.saveAcc(k)
		a := &Account{ID: World, Currency: cur, AllowNegative: true}
		st.Accounts[k] = a
		return a, nil
	}
	if dr, err = get(t.Debit); err != nil {
		return nil, nil, err
	}
	if cr, err = get(t.Credit); err != nil {
		return nil, nil, err
	}
	if dr.Currency != cr.Currency {
		return nil, nil, errors.New("currency mismatch")
	}
	return dr, cr, nil
}

func (st *State) applyTransfer(e *Event) ([]*Account, error) {
	t := e.Data.Transfer
	if t == nil || t.Amount <= 0 {
		return nil, errors.New("transfer event without a valid transfer")
	}
	if _, ok := st.record(t.ID); ok {
		return nil, fmt.Errorf("transfer %q applied twice", t.ID)
	}
	dr, cr, err := st.legs(t, e.Data.Currency)
	if err != nil {
		return nil, err
	}
	if !addOK(dr.DebitsPosted+dr.DebitsPending, t.Amount) || !addOK(cr.CreditsPosted+cr.CreditsPending, t.Amount) {
		return nil, errors.New("balance overflow")
	}
	r := &Record{Transfer: *t, Result: OK, Status: StatusPosted, Seq: e.Seq, Time: int64(e.Time)}
	if e.Type == TransferPending {
		dr.DebitsPending += t.Amount
		cr.CreditsPending += t.Amount
		r.Status, r.ExpiresAt = StatusPending, int64(e.Data.ExpiresAt)
	} else {
		dr.DebitsPosted += t.Amount
		cr.CreditsPosted += t.Amount
	}
	st.putRecord(r, e.Type == TransferPending)
	return []*Account{dr, cr}, nil
}

func (st *State) applyResolve(e *Event) ([]*Account, error) {
	p, ok := st.pending[e.Data.PendingID]
	if !ok {
		return nil, fmt.Errorf("resolve of unknown pending transfer %q", e.Data.PendingID)
	}
	held, amt := p.Transfer.Amount, e.Data.Amount
	if amt <= 0 || amt > held || (e.Type != PendingPosted && amt != held) {
		return nil, fmt.Errorf("resolve of %q with amount %d", p.Transfer.ID, amt)
	}
	dr, cr, err := st.legs(&p.Transfer, e.Data.Currency)
	if err != nil {
		return nil, err
	}
	st.saveRec(p.Transfer.ID)
	dr.DebitsPending -= held
	cr.CreditsPending -= held
	p.Status, p.ResolvedSeq, p.ResolvedAmount = StatusVoided, e.Seq, amt
	if e.Type == PendingPosted {
		dr.DebitsPosted += amt
		cr.CreditsPosted += amt
		p.Status = StatusPosted
	}
	p.ResolvedBy = resolvedByExpiry
	if t := e.Data.Transfer; t != nil {
		p.ResolvedBy = t.ID
	} else if e.Type != PendingExpiredEv {
		return nil, errors.New("post or void without its transfer")
	}
	delete(st.pending, p.Transfer.ID)
	st.records[p.Transfer.ID] = p
	st.dirtyRec = append(st.dirtyRec, p.Transfer.ID)
	if t := e.Data.Transfer; t != nil {
		if _, ok := st.record(t.ID); ok {
			return nil, fmt.Errorf("transfer %q applied twice", t.ID)
		}
		st.putRecord(&Record{Transfer: *t, Result: OK, Status: p.Status, Seq: e.Seq, Time: int64(e.Time)}, false)
	}
	return []*Account{dr, cr}, nil
}

// putRecord stores a new record; open pending ones stay in memory.
func (st *State) putRecord(r *Record, open bool) {
	id := r.Transfer.ID
	st.saveRec(id)
	if open {
		st.pending[id] = r
		st.noteExpiry(r.ExpiresAt)
	} else {
		st.records[id] = r
	}
	st.dirtyRec = append(st.dirtyRec, id)
}

// Replay folds a stored event into the state and checks that it produces
// the stored balances and hash. It is how verify rebuilds a shard.
func (st *State) Replay(e Event) error {
	if e.Time < st.Time {
		return fmt.Errorf("event %d: time goes back", e.Seq)
	}
	want := e
	st.Index, st.Time = e.RaftIndex, e.Time
	if err := st.apply(&e); err != nil {
		return fmt.Errorf("event %d: %w", want.Seq, err)
	}
	if e.PrevHash != want.PrevHash || e.Hash != want.Hash {
		return fmt.Errorf("event %d: hash chain differs (stored %s, replayed %s)", want.Seq, want.Hash, e.Hash)
	}
	if len(e.Balances) != len(want.Balances) {
		return fmt.Errorf("event %d: balances differ", want.Seq)
	}
	for i := range e.Balances {
		if e.Balances[i] != want.Balances[i] {
			return fmt.Errorf("event %d: balance of %s differs: stored %+v, replayed %+v",
				want.Seq, want.Balances[i].Account, want.Balances[i], e.Balances[i])
		}
	}
	return nil
}

// ReplayHashed folds a stored event as Replay does, for a caller that
// has already checked the event's own hash against the bytes it was
// decoded from (StoredHashOK), perhaps on another goroutine: it checks
// the seq, the time, that prev_hash is the head and that the event's
// balances are those the fold produces, but does not encode the event
// again. It keeps nothing of e but copies (Flush returns no events for
// it), so e may be reused once it returns.
func (st *State) ReplayHashed(e *Event) error {
	if err := Follows(e, st.Seq, st.Head, st.Time); err != nil {
		return err
	}
	st.Index, st.Time = e.RaftIndex, e.Time
	touched, err := st.fold(e)
	if err != nil {
		return fmt.Errorf("event %d: %w", e.Seq, err)
	}
	if len(touched) != len(e.Balances) {
		return fmt.Errorf("event %d: balances differ", e.Seq)
	}
	for i, a := range touched {
		st.dirtyAcc[a.Key()] = true
		if b := balanceOf(a); b != e.Balances[i] {
			return fmt.Errorf("event %d: balance of %s differs: stored %+v, replayed %+v",
				e.Seq, e.Balances[i].Account, e.Balances[i], b)
		}
	}
	st.Seq, st.Head = e.Seq, e.Hash
	return nil
}

// undo remembers what a linked chain changed so that a failed chain leaves
// no trace.
type undo struct {
	seq    uint64
	head   Hash
	nexp   Time
	events int
	acc    map[string]*Account
	rec    map[string]undoRec
}

type undoRec struct {
	r       *Record // nil: absent
	pending bool
}

func newUndo(st *State) *undo {
	return &undo{seq: st.Seq, head: st.Head, nexp: st.nextExp, events: len(st.events),
		acc: map[string]*Account{}, rec: map[string]undoRec{}}
}

func (st *State) saveAcc(k string) {
	if st.undo == nil {
		return
	}
	if _, ok := st.undo.acc[k]; ok {
		return
	}
	var cp *Account
	if a := st.Accounts[k]; a != nil {
		c := *a
		cp = &c
	}
	st.undo.acc[k] = cp
}

func (st *State) saveRec(id string) {
	if st.undo == nil {
		return
	}
	if _, ok := st.undo.rec[id]; ok {
		return
	}
	u := undoRec{}
	if r, ok := st.pending[id]; ok {
		c := *r
		u = undoRec{r: &c, pending: true}
	} else if r, ok := st.records[id]; ok && r != nil {
		c := *r
		u.r = &c
	}
	st.undo.rec[id] = u
}

func (u *undo) rollback(st *State) {
	for k, a := range u.acc {
		if a == nil {
			delete(st.Accounts, k)
		} else {
			st.Accounts[k] = a
		}
	}
	for id, r := range u.rec {
		delete(st.pending, id)
		delete(st.records, id)
		switch {
		case r.r == nil:
		case r.pending:
			st.pending[id] = r.r
		default:
			st.records[id] = r.r
		}
	}
	st.Seq, st.Head, st.nextExp = u.seq, u.head, u.nexp
	st.events = st.events[:u.events]
}

// Follows checks the links that tie event e to the one before it in its
// shard's chain, which had seq, hash head and log time t: the next seq,
// its hash as prev_hash, and a time that does not go back.
func Follows(e *Event, seq uint64, head Hash, t Time) error {
	switch {
	case e.Seq != seq+1:
		return fmt.Errorf("event seq %d after %d", e.Seq, seq)
	case e.Time < t:
		return fmt.Errorf("event %d: time goes back", e.Seq)
	case e.PrevHash != head:
		return fmt.Errorf("event %d: hash chain differs (prev_hash %s, head %s)", e.Seq, e.PrevHash, head)
	}
	return nil
}

// CheckBooks checks what every state must keep: each currency's balances
// sum to 0, and no account is overdrawn against its rules.
func (st *State) CheckBooks() error {
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
