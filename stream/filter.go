package stream

import (
	"fmt"
	"slices"
	"strings"

	"tally/ledger"
)

// Filter passes the events a reader asked for: of one of Types (any when
// empty), touching Account (any when ""), in Currency (any when ""). A
// nil Filter passes everything without decoding anything.
type Filter struct {
	Types    map[ledger.EventType]bool
	Account  string
	Currency string
}

// ParseFilter reads the filter parameters of a stream: types, a comma
// separated list of event types; account, an account id; currency.
// Every filter given must be valid; none given is a nil Filter.
func ParseFilter(types, account, currency string) (*Filter, error) {
	if types == "" && account == "" && currency == "" {
		return nil, nil
	}
	f := &Filter{Account: account, Currency: currency}
	if types != "" {
		f.Types = map[ledger.EventType]bool{}
		for _, t := range strings.Split(types, ",") {
			et := ledger.EventType(strings.TrimSpace(t))
			if !slices.Contains(ledger.EventTypes, et) {
				return nil, fmt.Errorf("types: %q is not an event type (one of %s)", t, typeNames())
			}
			f.Types[et] = true
		}
	}
	if account != "" && !ledger.ValidID(account) {
		return nil, fmt.Errorf("account: %q is not a valid account id", account)
	}
	if currency != "" && !ledger.ValidCurrency(currency) {
		return nil, fmt.Errorf("currency: %q is not a currency code", currency)
	}
	return f, nil
}

func typeNames() string {
	var b strings.Builder
	for i, t := range ledger.EventTypes {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(t))
	}
	return b.String()
}

// Match reports whether the event raw passes f; raw is its JSON, or
// either of the forms the log stores. An event that does not decode is an
// error: the log is corrupt, and a reader must not silently miss it.
func (f *Filter) Match(raw []byte) (bool, error) {
	if f == nil {
		return true, nil
	}
	var e ledger.Event
	if err := ledger.DecodeEvent(raw, &e); err != nil {
		return false, fmt.Errorf("stream: event does not decode: %w", err)
	}
	return f.matches(&e), nil
}

func (f *Filter) matches(e *ledger.Event) bool {
	if len(f.Types) > 0 && !f.Types[e.Type] {
		return false
	}
	if f.Account != "" && !touches(e, f.Account) {
		return false
	}
	return f.Currency == "" || inCurrency(e, f.Currency)
}

// touches reports whether event e is about account id: it names it, or
// changed its balance.
func touches(e *ledger.Event, id string) bool {
	d := &e.Data
	if d.AccountID == id || (d.Account != nil && d.Account.ID == id) ||
		(d.Transfer != nil && (d.Transfer.Debit == id || d.Transfer.Credit == id)) {
		return true
	}
	for _, b := range e.Balances {
		if b.Account == id {
			return true
		}
	}
	return false
}

// inCurrency reports whether event e moves or concerns currency cur.
func inCurrency(e *ledger.Event, cur string) bool {
	d := &e.Data
	if d.Currency == cur || (d.Account != nil && d.Account.Currency == cur) {
		return true
	}
	for _, b := range e.Balances {
		if b.Currency == cur {
			return true
		}
	}
	return false
}
