package postgres

import (
	"encoding/json"
	"fmt"
	"math/big"
	"time"

	"tally/ledger"
)

// The fold turns a batch of events (each shard's in seq order, none of
// them already in the view) into the rows it changes. It is pure: the
// SQL in apply.go writes what it returns.

// accountKey identifies an account row. A client account lives on one
// shard in one currency; a system account (@world, @clearing:N) exists
// on every shard, once per currency, so the shard and the currency are
// part of every account's key.
type accountKey struct {
	Shard    int
	ID       string
	Currency string
}

// accountRow is an account's balances after the last event of the batch
// that touched it.
type accountRow struct {
	accountKey
	Balance        int64
	Available      int64
	DebitsPosted   int64
	CreditsPosted  int64
	DebitsPending  int64
	CreditsPending int64
	Closed         bool
	Seq            uint64
}

// transferKey identifies a transfer row: ids are unique per shard.
type transferKey struct {
	Shard int
	ID    string
}

// transferRow is a transfer as the view shows it. A transfer within one
// shard is a row on that shard; a cross-shard transfer (a saga) is one
// row on its source shard (the debit's), in_flight from the hold until
// it completes (posted) or aborts (rejected), with PeerShard naming the
// destination. The destination's credit moves its accounts and is in
// the events table but makes no transfer row, so that each client
// transfer is one row, as `tally transfer get` shows it.
type transferRow struct {
	transferKey
	Debit     string
	Credit    string
	Amount    int64
	Currency  string
	Status    ledger.Status
	Result    ledger.Code // the rejection code, "" unless rejected
	PendingID string      // the pending transfer a post or void resolves
	PeerShard *int        // the destination of a saga
	Seq       uint64      // the event that decided the transfer
	Time      time.Time
	ExpiresAt *time.Time
	resolution
}

// resolution is how a pending transfer or a saga was settled.
type resolution struct {
	ResolvedSeq    *uint64
	ResolvedBy     string // the post or void transfer's id, or "expired"
	ResolvedAmount *int64
}

// transferUpdate settles a row that an earlier batch inserted.
type transferUpdate struct {
	transferKey
	Status ledger.Status
	Result ledger.Code
	resolution
}

// volumeKey is one row of the daily aggregate.
type volumeKey struct {
	Currency string
	Day      time.Time // midnight UTC
}

// volume counts the transfers posted on a day and their amounts (a sum
// of int64 amounts may pass the int64 range; the column is numeric).
type volume struct {
	Count  int64
	Amount big.Int
}

// eventRow is an event as the events table stores it.
type eventRow struct {
	Shard     int
	Seq       uint64
	Type      ledger.EventType
	Time      time.Time
	RaftIndex uint64
	Data      []byte
	Balances  []byte
	PrevHash  string
	Hash      string
}

// changes are the rows one batch changes.
type changes struct {
	events    []eventRow
	accounts  map[accountKey]*accountRow
	transfers []*transferRow // new rows, in event order
	updates   map[transferKey]*transferUpdate
	volumes   map[volumeKey]*volume
	offsets   map[int]offset
	byKey     map[transferKey]*transferRow
}

// offset is where a shard's events stand in the view.
type offset struct {
	Seq  uint64
	Hash ledger.Hash
}

// resolvedByExpiry is the ResolvedBy of a pending transfer that timed
// out, as the cluster's transfer records say it.
const resolvedByExpiry = "expired"

// fold computes the changes of events, which must follow what the view
// already holds on each shard.
func fold(events []ledger.Event) (*changes, error) {
	c := &changes{accounts: map[accountKey]*accountRow{}, updates: map[transferKey]*transferUpdate{},
		volumes: map[volumeKey]*volume{}, offsets: map[int]offset{}, byKey: map[transferKey]*transferRow{}}
	for i := range events {
		e := &events[i]
		row, err := eventRowOf(e)
		if err != nil {
			return nil, err
		}
		c.events = append(c.events, row)
		c.balances(e)
		if err := c.transfer(e); err != nil {
			return nil, fmt.Errorf("shard %d seq %d (%s): %w", e.Shard, e.Seq, e.Type, err)
		}
		c.offsets[e.Shard] = offset{Seq: e.Seq, Hash: e.Hash}
	}
	return c, nil
}

func eventRowOf(e *ledger.Event) (eventRow, error) {
	data, err := json.Marshal(e.Data)
	if err != nil {
		return eventRow{}, fmt.Errorf("encode event %d/%d: %w", e.Shard, e.Seq, err)
	}
	bal := e.Balances
	if bal == nil {
		bal = []ledger.Balance{}
	}
	balances, err := json.Marshal(bal)
	if err != nil {
		return eventRow{}, fmt.Errorf("encode event %d/%d: %w", e.Shard, e.Seq, err)
	}
	return eventRow{Shard: e.Shard, Seq: e.Seq, Type: e.Type, Time: logTime(e.Time), RaftIndex: e.RaftIndex,
		Data: data, Balances: balances, PrevHash: e.PrevHash.String(), Hash: e.Hash.String()}, nil
}

// balances upserts the accounts an event touched: every event carries
// their full balances after it, so no arithmetic is needed.
func (c *changes) balances(e *ledger.Event) {
	for _, b := range e.Balances {
		k := accountKey{Shard: e.Shard, ID: b.Account, Currency: b.Currency}
		a := c.accounts[k]
		if a == nil {
			a = &accountRow{accountKey: k}
			c.accounts[k] = a
		}
		closed := a.Closed || (e.Type == ledger.AccountClosedEv && e.Data.AccountID == b.Account)
		*a = accountRow{accountKey: k, Balance: b.Balance, Available: b.Available, DebitsPosted: b.DebitsPosted,
			CreditsPosted: b.CreditsPosted, DebitsPending: b.DebitsPending, CreditsPending: b.CreditsPending,
			Closed: closed, Seq: e.Seq}
	}
}

// transfer folds the event into the transfer rows and the aggregate.
func (c *changes) transfer(e *ledger.Event) error {
	d := &e.Data
	switch e.Type {
	case ledger.TransferPosted, ledger.TransferPending, ledger.SagaDebitHeld, ledger.TransferRejected:
		if d.Transfer == nil {
			return fmt.Errorf("no transfer")
		}
		r := c.newRow(e, d.Transfer, d.Transfer.Amount)
		switch e.Type {
		case ledger.TransferPosted:
			c.posted(e, d.Transfer.Amount)
		case ledger.TransferPending:
			r.Status = ledger.StatusPending
			if d.ExpiresAt != 0 {
				t := logTime(d.ExpiresAt)
				r.ExpiresAt = &t
			}
		case ledger.SagaDebitHeld:
			r.Status, r.PeerShard = ledger.StatusInFlight, d.Peer
		case ledger.TransferRejected:
			r.Status, r.Result, r.PendingID = ledger.StatusRejected, d.Result, d.Transfer.Resolves()
		}
	case ledger.PendingPosted, ledger.PendingVoided, ledger.PendingExpiredEv:
		return c.resolve(e)
	case ledger.SagaCompleted:
		c.settle(e, ledger.StatusPosted, "", resolution{ResolvedSeq: ptr(e.Seq)})
		c.posted(e, d.Amount)
	case ledger.SagaAborted:
		c.settle(e, ledger.StatusRejected, d.Result, resolution{ResolvedSeq: ptr(e.Seq)})
	}
	// AccountOpened, AccountClosed: accounts only. SagaCredited and
	// SagaCreditRejected: the destination's side of a saga, whose row is
	// on the source shard.
	return nil
}

// resolve settles a pending transfer and records the post or void
// itself, which is a transfer of its own (PendingExpired has none).
func (c *changes) resolve(e *ledger.Event) error {
	d := &e.Data
	res := resolution{ResolvedSeq: ptr(e.Seq), ResolvedBy: resolvedByExpiry, ResolvedAmount: ptr(d.Amount)}
	status := ledger.StatusVoided
	if e.Type == ledger.PendingPosted {
		status = ledger.StatusPosted
	}
	if d.Transfer != nil {
		res.ResolvedBy = d.Transfer.ID
	} else if e.Type != ledger.PendingExpiredEv {
		return fmt.Errorf("no transfer")
	}
	c.settle(e, status, "", res)
	if d.Transfer != nil {
		r := c.newRow(e, d.Transfer, d.Amount)
		r.Status, r.PendingID = status, d.PendingID
	}
	if e.Type == ledger.PendingPosted {
		c.posted(e, d.Amount)
	}
	return nil
}

func (c *changes) newRow(e *ledger.Event, t *ledger.Transfer, amount int64) *transferRow {
	r := &transferRow{transferKey: transferKey{Shard: e.Shard, ID: t.ID}, Debit: t.Debit, Credit: t.Credit,
		Amount: amount, Currency: e.Data.Currency, Status: ledger.StatusPosted, Seq: e.Seq, Time: logTime(e.Time)}
	c.transfers = append(c.transfers, r)
	c.byKey[r.transferKey] = r
	return r
}

// settle changes the status of the row of e.Data.PendingID: in place when
// this batch inserts it, else as an update of the stored row.
func (c *changes) settle(e *ledger.Event, status ledger.Status, result ledger.Code, res resolution) {
	k := transferKey{Shard: e.Shard, ID: e.Data.PendingID}
	if r := c.byKey[k]; r != nil {
		r.Status, r.Result, r.resolution = status, result, res
		return
	}
	c.updates[k] = &transferUpdate{transferKey: k, Status: status, Result: result, resolution: res}
}

// posted counts a posting in the day's aggregate: a transfer posted at
// once, a pending one posted (the amount posted), or a saga completed
// (on its source shard only, so a cross-shard transfer counts once).
func (c *changes) posted(e *ledger.Event, amount int64) {
	t := logTime(e.Time)
	k := volumeKey{Currency: e.Data.Currency, Day: time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)}
	v := c.volumes[k]
	if v == nil {
		v = &volume{}
		c.volumes[k] = v
	}
	v.Count++
	v.Amount.Add(&v.Amount, big.NewInt(amount))
}

func logTime(t ledger.Time) time.Time { return time.Unix(0, int64(t)).UTC() }

func ptr[T any](v T) *T { return &v }
