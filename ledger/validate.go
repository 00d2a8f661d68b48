package ledger

import (
	"fmt"
	"unicode/utf8"
)

// ValidID reports whether s is 1 to 64 bytes of [A-Za-z0-9._:@-], or
// braces, which mark the part of an account id that places it (alice{eu}).
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == ':', c == '@', c == '-', c == '{', c == '}':
		default:
			return false
		}
	}
	return true
}

// ValidCurrency reports whether s is 1 to 12 uppercase letters or digits.
func ValidCurrency(s string) bool {
	if len(s) == 0 || len(s) > MaxCurrencyLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// ValidMetadata reports whether m has at most 16 keys and 1 KiB of keys
// and values together, with no empty key, all valid UTF-8.
func ValidMetadata(m map[string]string) bool {
	if len(m) > MaxMetaKeys {
		return false
	}
	n := 0
	for k, v := range m {
		if k == "" || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return false
		}
		n += len(k) + len(v)
	}
	return n <= MaxMetaBytes
}

// Problem is a validation failure: a code and a message for people.
type Problem struct {
	Code Code
	Msg  string
}

func (p *Problem) Error() string { return string(p.Code) + ": " + p.Msg }

func problem(c Code, format string, args ...any) *Problem {
	return &Problem{Code: c, Msg: fmt.Sprintf(format, args...)}
}

// CheckAccount validates a client's account creation without state.
func CheckAccount(a *Account) *Problem {
	switch {
	case !ValidID(a.ID):
		return problem(InvalidID, "account id %q must be 1 to %d bytes of [A-Za-z0-9._:@-]", a.ID, MaxIDLen)
	case IsSystem(a.ID):
		return problem(InvalidID, "account id %q: ids starting with @ are reserved", a.ID)
	case !ValidCurrency(a.Currency):
		return problem(CurrencyInvalid, "currency %q must be 1 to %d uppercase letters or digits", a.Currency, MaxCurrencyLen)
	case !ValidMetadata(a.Metadata):
		return problem(MetadataInvalid, "metadata must have at most %d non-empty keys and %d bytes", MaxMetaKeys, MaxMetaBytes)
	case a.Closed || a.DebitsPosted != 0 || a.CreditsPosted != 0 || a.DebitsPending != 0 || a.CreditsPending != 0:
		return problem(InvalidRequest, "account %q: balances and closed are not set by clients", a.ID)
	}
	return nil
}

// CheckTransferID validates only the transfer's id: the first check of all,
// before the idempotency lookup.
func CheckTransferID(t *Transfer) *Problem {
	if !ValidID(t.ID) || IsSystem(t.ID) {
		return problem(InvalidID, "transfer id %q must be 1 to %d bytes of [A-Za-z0-9._:@-], not starting with @", t.ID, MaxIDLen)
	}
	return nil
}

// CheckTransfer validates a client's transfer without state, in the order
// Decide applies the same checks.
func CheckTransfer(t *Transfer) *Problem {
	if p := CheckTransferID(t); p != nil {
		return p
	}
	if p := checkShape(t); p != nil {
		return p
	}
	if t.Resolves() != "" {
		if t.Amount < 0 {
			return problem(AmountInvalid, "transfer %s: amount must be 0 (all) or up to the pending amount", t.ID)
		}
	} else if t.Amount <= 0 {
		return problem(AmountInvalid, "transfer %s: amount must be 1 to %d", t.ID, int64(MaxAmount))
	}
	if t.Debit == t.Credit {
		return problem(AccountsMustBeDifferent, "transfer %s: debit and credit must be different accounts", t.ID)
	}
	return nil
}

func checkShape(t *Transfer) *Problem {
	switch {
	case !validParty(t.Debit):
		return problem(InvalidID, "transfer %s: debit %q must be an account id or @world", t.ID, t.Debit)
	case !validParty(t.Credit):
		return problem(InvalidID, "transfer %s: credit %q must be an account id or @world", t.ID, t.Credit)
	case t.PostPendingID != "" && t.VoidPendingID != "":
		return problem(InvalidRequest, "transfer %s: set post_pending_id or void_pending_id, not both", t.ID)
	case t.Resolves() != "" && (!ValidID(t.Resolves()) || IsSystem(t.Resolves())):
		return problem(InvalidID, "transfer %s: pending id %q is not a valid transfer id", t.ID, t.Resolves())
	case t.Resolves() != "" && t.Pending:
		return problem(InvalidRequest, "transfer %s: a post or void cannot itself be pending", t.ID)
	case t.TimeoutSeconds < 0 || t.TimeoutSeconds > MaxTimeoutSeconds:
		return problem(InvalidRequest, "transfer %s: timeout_seconds must be 0 to %d", t.ID, MaxTimeoutSeconds)
	case t.TimeoutSeconds != 0 && !t.Pending:
		return problem(InvalidRequest, "transfer %s: timeout_seconds needs pending", t.ID)
	case !validUTF8(t):
		return problem(InvalidRequest, "transfer %s: reference and metadata must be valid UTF-8", t.ID)
	case len(t.Reference) > MaxReferenceLen:
		return problem(LimitExceeded, "transfer %s: reference is longer than %d bytes", t.ID, MaxReferenceLen)
	case !ValidMetadata(t.Metadata):
		return problem(LimitExceeded, "transfer %s: metadata must have at most %d non-empty keys and %d bytes", t.ID, MaxMetaKeys, MaxMetaBytes)
	}
	return nil
}

// validUTF8 reports whether every string of t is valid UTF-8. Events are
// hashed and stored as JSON, which replaces invalid bytes, so an event
// holding them would not replay to its own hash.
func validUTF8(t *Transfer) bool {
	for _, s := range []string{t.ID, t.Debit, t.Credit, t.PostPendingID, t.VoidPendingID, t.Reference} {
		if !utf8.ValidString(s) {
			return false
		}
	}
	for k, v := range t.Metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return false
		}
	}
	return true
}

// validParty accepts a client account id or @world; other system
// accounts are moved only by the ledger itself.
func validParty(id string) bool {
	return id == World || (ValidID(id) && !IsSystem(id))
}

// CheckChains reports a linked chain left open at the end of a batch.
func CheckChains(ts []Transfer) *Problem {
	if n := len(ts); n > 0 && ts[n-1].Linked {
		return problem(InvalidRequest, "transfer %s: the last transfer of a batch cannot be linked (the chain is never closed)", ts[n-1].ID)
	}
	return nil
}
