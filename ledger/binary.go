package ledger

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"
)

// The stored forms of events, transfer records and accounts. A stored
// value is either JSON (it starts with '{'), as every build wrote before
// entry version 2 and as the events of version-1 entries still are, or
// the binary encoding, whose first byte is its version, EncBinary. The
// layout is in fsm/DESIGN.md ("Value encodings"); every reader accepts
// both forms.
//
// The binary encoding is canonical: a decoder accepts only what the
// encoder writes (shortest varints, known flags, metadata keys in
// ascending order, valid UTF-8, no trailing bytes), so a value that
// decodes encodes back to the same bytes, and the hash of an event's
// stored bytes is the hash of its canonical encoding.

// Event encodings: what an event's hash covers and how it is stored.
const (
	// EncJSON is the event's JSON with both hashes zeroed: the events of
	// version-1 entries. An event's "enc" is absent in its JSON.
	EncJSON uint8 = 0
	// EncBinary is the binary encoding: the events of version-2 entries.
	// It is also the first byte of every stored binary value.
	EncBinary uint8 = 2
)

// EncodingOf returns the encoding of the events of an entry of the
// given codec version.
func EncodingOf(version byte) uint8 {
	if version <= entryV1 {
		return EncJSON
	}
	return EncBinary
}

// Bounds of a stored value, beyond those the entry codec shares.
const (
	maxBalances = 64        // resulting balances of one event; it touches two or three
	dataMask    = 1<<10 - 1 // the fields of Data the encoding knows
	maxValue    = 1 << 20   // a stored value; the real ones are a few KiB at most
	replacement = "\uFFFD"  // what JSON puts for an invalid byte
	hashesLen   = 2 * len(Hash{})
)

// ErrStored wraps every failure to decode a stored value.
var ErrStored = errors.New("decode stored value")

// Data field bits: bit i set means the field follows, in this order.
const (
	dAccount = 1 << iota
	dAccountID
	dTransfer
	dResult
	dPendingID
	dAmount
	dCurrency
	dExpiresAt
	dPeer
	dNote
)

// Encoding.

// appendText appends a uvarint length and s as valid UTF-8: each invalid
// byte becomes U+FFFD, as in the JSON the API serves, so that a reader
// recomputing the hash from that JSON gets the same bytes. The ledger
// refuses invalid UTF-8 in what it records; this keeps the encoding
// total.
func appendText(b []byte, s string) []byte {
	if !utf8.ValidString(s) {
		s = validText(s)
	}
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func validText(s string) string {
	out := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			out = append(out, replacement...)
		} else {
			out = append(out, s[i:i+n]...)
		}
		i += n
	}
	return string(out)
}

// appendMetaText appends a metadata map: a uvarint count, then each key
// and value, keys in ascending byte order. Nil and empty encode alike.
func appendMetaText(b []byte, m map[string]string) []byte {
	if len(m) == 0 {
		return append(b, 0)
	}
	var buf [MaxMetaKeys]string
	keys := buf[:0]
	valid := true
	for k, v := range m {
		keys = append(keys, k)
		valid = valid && utf8.ValidString(k) && utf8.ValidString(v)
	}
	if !valid {
		// As JSON decodes it: keys that become equal keep the value of
		// the last in key order.
		c := make(map[string]string, len(m))
		slices.Sort(keys)
		for _, k := range keys {
			c[validText(k)] = validText(m[k])
		}
		m, keys = c, keys[:0]
		for k := range c {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendText(b, k)
		b = appendText(b, m[k])
	}
	return b
}

func appendFlags(b []byte, f0, f1 bool) []byte {
	var f byte
	if f0 {
		f |= 1
	}
	if f1 {
		f |= 2
	}
	return append(b, f)
}

// appendTransferBody: id, debit, credit, amount, flags (1 pending, 2
// linked), timeout_seconds, post_pending_id, void_pending_id, reference,
// metadata.
func appendTransferBody(b []byte, t *Transfer) []byte {
	b = appendText(b, t.ID)
	b = appendText(b, t.Debit)
	b = appendText(b, t.Credit)
	b = binary.AppendVarint(b, t.Amount)
	b = appendFlags(b, t.Pending, t.Linked)
	b = binary.AppendVarint(b, t.TimeoutSeconds)
	b = appendText(b, t.PostPendingID)
	b = appendText(b, t.VoidPendingID)
	b = appendText(b, t.Reference)
	return appendMetaText(b, t.Metadata)
}

// appendAccountBody: id, currency, flags (1 allow_negative, 2 closed),
// metadata, the four balances, created_seq, created_at.
func appendAccountBody(b []byte, a *Account) []byte {
	b = appendText(b, a.ID)
	b = appendText(b, a.Currency)
	b = appendFlags(b, a.AllowNegative, a.Closed)
	b = appendMetaText(b, a.Metadata)
	b = binary.AppendVarint(b, a.DebitsPosted)
	b = binary.AppendVarint(b, a.CreditsPosted)
	b = binary.AppendVarint(b, a.DebitsPending)
	b = binary.AppendVarint(b, a.CreditsPending)
	b = binary.AppendUvarint(b, a.CreatedSeq)
	return binary.AppendVarint(b, a.CreatedAt)
}

func (d *Data) bits() uint64 {
	var f uint64
	set := func(bit uint64, on bool) {
		if on {
			f |= bit
		}
	}
	set(dAccount, d.Account != nil)
	set(dAccountID, d.AccountID != "")
	set(dTransfer, d.Transfer != nil)
	set(dResult, d.Result != "")
	set(dPendingID, d.PendingID != "")
	set(dAmount, d.Amount != 0)
	set(dCurrency, d.Currency != "")
	set(dExpiresAt, d.ExpiresAt != 0)
	set(dPeer, d.Peer != nil)
	set(dNote, d.Note != "")
	return f
}

// appendData writes which fields are set (the fields JSON would not
// omit) and then those fields, so that an event decoded from its JSON
// encodes to the same bytes.
func (d *Data) appendData(b []byte) []byte {
	f := d.bits()
	b = binary.AppendUvarint(b, f)
	if f&dAccount != 0 {
		b = appendAccountBody(b, d.Account)
	}
	if f&dAccountID != 0 {
		b = appendText(b, d.AccountID)
	}
	if f&dTransfer != 0 {
		b = appendTransferBody(b, d.Transfer)
	}
	if f&dResult != 0 {
		b = appendText(b, string(d.Result))
	}
	if f&dPendingID != 0 {
		b = appendText(b, d.PendingID)
	}
	if f&dAmount != 0 {
		b = binary.AppendVarint(b, d.Amount)
	}
	if f&dCurrency != 0 {
		b = appendText(b, d.Currency)
	}
	if f&dExpiresAt != 0 {
		b = binary.AppendVarint(b, int64(d.ExpiresAt))
	}
	if f&dPeer != 0 {
		b = binary.AppendVarint(b, int64(*d.Peer))
	}
	if f&dNote != 0 {
		b = appendText(b, d.Note)
	}
	return b
}

func appendBalance(b []byte, x *Balance) []byte {
	b = appendText(b, x.Account)
	b = appendText(b, x.Currency)
	b = binary.AppendVarint(b, x.DebitsPosted)
	b = binary.AppendVarint(b, x.CreditsPosted)
	b = binary.AppendVarint(b, x.DebitsPending)
	b = binary.AppendVarint(b, x.CreditsPending)
	b = binary.AppendVarint(b, x.Balance)
	return binary.AppendVarint(b, x.Available)
}

// AppendCanonical appends the binary encoding of e without its hashes,
// which its hash covers when e.Enc is EncBinary: the version byte,
// shard, seq, raft_index, time, type, data and balances.
func (e *Event) AppendCanonical(b []byte) []byte {
	b = append(b, EncBinary)
	b = binary.AppendVarint(b, int64(e.Shard))
	b = binary.AppendUvarint(b, e.Seq)
	b = binary.AppendUvarint(b, e.RaftIndex)
	b = binary.AppendVarint(b, int64(e.Time))
	b = appendText(b, string(e.Type))
	b = e.Data.appendData(b)
	b = binary.AppendUvarint(b, uint64(len(e.Balances)))
	for i := range e.Balances {
		b = appendBalance(b, &e.Balances[i])
	}
	return b
}

// AppendBinary appends the stored binary form of e: its canonical
// encoding, then prev_hash and hash, 32 bytes each.
func (e *Event) AppendBinary(b []byte) []byte {
	b = e.AppendCanonical(b)
	b = append(b, e.PrevHash[:]...)
	return append(b, e.Hash[:]...)
}

// AppendBinary appends the stored binary form of a: the version byte,
// then the account as an event's data holds it.
func (a *Account) AppendBinary(b []byte) []byte {
	return appendAccountBody(append(b, EncBinary), a)
}

// AppendBinary appends the stored binary form of r: the version byte,
// the transfer, result, status, seq, time, expires_at, resolved_seq,
// resolved_by, resolved_amount, then 0, or 1 and the saga's role, peer
// shard, currency, step and note.
func (r *Record) AppendBinary(b []byte) []byte {
	b = append(b, EncBinary)
	b = appendTransferBody(b, &r.Transfer)
	b = appendText(b, string(r.Result))
	b = appendText(b, string(r.Status))
	b = binary.AppendUvarint(b, r.Seq)
	b = binary.AppendVarint(b, r.Time)
	b = binary.AppendVarint(b, r.ExpiresAt)
	b = binary.AppendUvarint(b, r.ResolvedSeq)
	b = appendText(b, r.ResolvedBy)
	b = binary.AppendVarint(b, r.ResolvedAmount)
	if r.Saga == nil {
		return append(b, 0)
	}
	s := r.Saga
	b = append(b, 1)
	b = appendText(b, s.Role)
	b = binary.AppendVarint(b, int64(s.Peer))
	b = appendText(b, s.Currency)
	b = appendText(b, s.Step)
	return appendText(b, s.Note)
}

// Decoding.

// vdec reads a binary value p. Its strings are substrings of s, one copy
// of the whole value, when s is set; otherwise names come from a Names
// and other strings are copied one by one.
type vdec struct {
	p     []byte
	s     string
	names *Names
	i     int
	err   error
}

func (d *vdec) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: at byte %d: %s", ErrStored, d.i, fmt.Sprintf(format, args...))
	}
	d.i = len(d.p)
}

func (d *vdec) byte() byte {
	if d.i >= len(d.p) {
		d.fail("short input")
		return 0
	}
	c := d.p[d.i]
	d.i++
	return c
}

// uvarint reads a uvarint in its shortest form.
func (d *vdec) uvarint() uint64 {
	if d.i < len(d.p) && d.p[d.i] < 0x80 {
		c := d.p[d.i]
		d.i++
		return uint64(c)
	}
	var x uint64
	for k, sh := 0, uint(0); k < binary.MaxVarintLen64; k, sh = k+1, sh+7 {
		if d.i >= len(d.p) {
			d.fail("short input")
			return 0
		}
		c := d.p[d.i]
		d.i++
		if c < 0x80 {
			if (k == binary.MaxVarintLen64-1 && c > 1) || (c == 0 && k > 0) {
				d.fail("bad uvarint")
				return 0
			}
			return x | uint64(c)<<sh
		}
		x |= uint64(c&0x7f) << sh
	}
	d.fail("bad uvarint")
	return 0
}

func (d *vdec) varint() int64 {
	u := d.uvarint()
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

// count reads a length of at most limit items of at least min bytes each
// that the rest of the input can hold.
func (d *vdec) count(limit, min int) int {
	v := d.uvarint()
	if v > uint64(limit) || v*uint64(min) > uint64(len(d.p)-d.i) {
		d.fail("count %d out of range", v)
		return 0
	}
	return int(v)
}

func (d *vdec) str() string { return d.text(false) }

// name reads a string that repeats from value to value: an account id, a
// currency, a code.
func (d *vdec) name() string { return d.text(true) }

func (d *vdec) text(name bool) string {
	n := d.uvarint()
	if n > maxStr || n > uint64(len(d.p)-d.i) {
		d.fail("string length %d out of range", n)
		return ""
	}
	start := d.i
	d.i += int(n)
	b := d.p[start:d.i]
	if !utf8.Valid(b) {
		d.fail("invalid UTF-8")
		return ""
	}
	switch {
	case d.s != "":
		return d.s[start:d.i]
	case n == 0:
		return ""
	case name && d.names != nil:
		return d.names.get(b)
	}
	return string(b)
}

// nonEmptyName reads a name that a set bit says is there.
func (d *vdec) nonEmptyName() string {
	s := d.name()
	if s == "" {
		d.fail("empty field marked present")
	}
	return s
}

// nonEmpty reads a string that a set bit says is there.
func (d *vdec) nonEmpty() string {
	s := d.str()
	if s == "" {
		d.fail("empty field marked present")
	}
	return s
}

func (d *vdec) flags() (bool, bool) {
	f := d.byte()
	if f&^3 != 0 {
		d.fail("bad flags %#x", f)
	}
	return f&1 != 0, f&2 != 0
}

func (d *vdec) meta() map[string]string {
	n := d.count(MaxMetaKeys, 2)
	if n == 0 {
		return nil
	}
	m := make(map[string]string, n)
	prev := ""
	for i := 0; i < n && d.err == nil; i++ {
		k := d.str()
		if i > 0 && k <= prev {
			d.fail("metadata keys out of order")
		}
		m[k], prev = d.str(), k
	}
	return m
}

func (d *vdec) transfer(t *Transfer) {
	t.ID, t.Debit, t.Credit = d.str(), d.name(), d.name()
	t.Amount = d.varint()
	t.Pending, t.Linked = d.flags()
	t.TimeoutSeconds = d.varint()
	t.PostPendingID, t.VoidPendingID, t.Reference = d.str(), d.str(), d.str()
	t.Metadata = d.meta()
}

func (d *vdec) account(a *Account) {
	a.ID, a.Currency = d.name(), d.name()
	a.AllowNegative, a.Closed = d.flags()
	a.Metadata = d.meta()
	a.DebitsPosted, a.CreditsPosted = d.varint(), d.varint()
	a.DebitsPending, a.CreditsPending = d.varint(), d.varint()
	a.CreatedSeq = d.uvarint()
	a.CreatedAt = d.varint()
}

func (d *vdec) int() int { return int(d.varint()) }

// room is what decoding an event may reuse: the pointed-to parts of a
// previous event that no one holds any more.
type room struct {
	tr   Transfer
	acc  Account
	peer int
}

func (d *vdec) data(x *Data, r *room) {
	f := d.uvarint()
	if f&^dataMask != 0 {
		d.fail("unknown data fields %#x", f)
		return
	}
	*x = Data{}
	if f&dAccount != 0 {
		var a *Account
		if r != nil {
			a = &r.acc
		} else {
			a = new(Account)
		}
		d.account(a)
		x.Account = a
	}
	if f&dAccountID != 0 {
		x.AccountID = d.nonEmptyName()
	}
	if f&dTransfer != 0 {
		var t *Transfer
		if r != nil {
			t = &r.tr
		} else {
			t = new(Transfer)
		}
		d.transfer(t)
		x.Transfer = t
	}
	if f&dResult != 0 {
		x.Result = Code(d.nonEmptyName())
	}
	if f&dPendingID != 0 {
		x.PendingID = d.nonEmpty()
	}
	if f&dAmount != 0 {
		if x.Amount = d.varint(); x.Amount == 0 {
			d.fail("zero amount marked present")
		}
	}
	if f&dCurrency != 0 {
		x.Currency = d.nonEmptyName()
	}
	if f&dExpiresAt != 0 {
		if x.ExpiresAt = Time(d.varint()); x.ExpiresAt == 0 {
			d.fail("zero expiry marked present")
		}
	}
	if f&dPeer != 0 {
		var p *int
		if r != nil {
			p = &r.peer
		} else {
			p = new(int)
		}
		*p = d.int()
		x.Peer = p
	}
	if f&dNote != 0 {
		x.Note = d.nonEmpty()
	}
}

// knownType returns the constant of a known event type, so that a
// decoded event holds no copy of its type (the conversion in the switch
// does not allocate).
func knownType(b []byte) (EventType, bool) {
	switch string(b) {
	case string(AccountOpened):
		return AccountOpened, true
	case string(AccountClosedEv):
		return AccountClosedEv, true
	case string(TransferPosted):
		return TransferPosted, true
	case string(TransferPending):
		return TransferPending, true
	case string(PendingPosted):
		return PendingPosted, true
	case string(PendingVoided):
		return PendingVoided, true
	case string(PendingExpiredEv):
		return PendingExpiredEv, true
	case string(TransferRejected):
		return TransferRejected, true
	case string(SagaDebitHeld):
		return SagaDebitHeld, true
	case string(SagaCredited):
		return SagaCredited, true
	case string(SagaCreditRejected):
		return SagaCreditRejected, true
	case string(SagaCompleted):
		return SagaCompleted, true
	case string(SagaAborted):
		return SagaAborted, true
	}
	return "", false
}

// eventType reads an event's type.
func (d *vdec) eventType() EventType {
	start := d.i
	n := d.uvarint()
	if n <= maxStr && n <= uint64(len(d.p)-d.i) {
		if t, ok := knownType(d.p[d.i : d.i+int(n)]); ok {
			d.i += int(n)
			return t
		}
	}
	d.i = start
	return EventType(d.str())
}

// event decodes a stored binary event (canonical encoding and hashes).
func (d *vdec) event(e *Event, r *room) {
	if len(d.p) < 1+hashesLen || len(d.p) > maxValue {
		d.fail("event of %d bytes", len(d.p))
		return
	}
	end := len(d.p) - hashesLen
	copy(e.PrevHash[:], d.p[end:])
	copy(e.Hash[:], d.p[end+len(Hash{}):])
	d.p = d.p[:end]
	if v := d.byte(); v != EncBinary {
		d.fail("version %d", v)
		return
	}
	e.Enc, e.Raw = EncBinary, nil
	e.Shard = d.int()
	e.Seq, e.RaftIndex = d.uvarint(), d.uvarint()
	e.Time = Time(d.varint())
	e.Type = d.eventType()
	d.data(&e.Data, r)
	n := d.count(maxBalances, 8)
	switch {
	case r != nil && e.Balances != nil && cap(e.Balances) >= n:
		e.Balances = e.Balances[:n]
	case n == 0:
		e.Balances = []Balance{} // as JSON has it: [], not null
	default:
		e.Balances = make([]Balance, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		b := &e.Balances[i]
		b.Account, b.Currency = d.name(), d.name()
		b.DebitsPosted, b.CreditsPosted = d.varint(), d.varint()
		b.DebitsPending, b.CreditsPending = d.varint(), d.varint()
		b.Balance, b.Available = d.varint(), d.varint()
	}
	d.end()
}

func (d *vdec) end() {
	if d.err == nil && d.i != len(d.p) {
		d.fail("%d trailing bytes", len(d.p)-d.i)
	}
}

// stored returns the decoder of a binary value p. Its strings are
// substrings of one copy of p: one allocation for all of them, and p may
// be reused (a Badger value is valid only inside its callback).
func stored(p []byte) vdec { return vdec{p: p, s: string(p)} }

// isJSON reports whether a stored value is JSON rather than binary.
func isJSON(p []byte) bool { return len(p) > 0 && p[0] == '{' }

func checkStored(p []byte) error {
	switch {
	case len(p) == 0:
		return fmt.Errorf("%w: empty", ErrStored)
	case len(p) > maxValue:
		return fmt.Errorf("%w: %d bytes", ErrStored, len(p))
	case !isJSON(p) && p[0] != EncBinary:
		return fmt.Errorf("%w: unknown form 0x%02x", ErrStored, p[0])
	}
	return nil
}

// DecodeEvent decodes a stored event in either form into e, which it
// overwrites. The strings of a binary event share one copy of p.
func DecodeEvent(p []byte, e *Event) error {
	if err := checkStored(p); err != nil {
		return err
	}
	if isJSON(p) {
		*e = Event{}
		if err := json.Unmarshal(p, e); err != nil {
			return fmt.Errorf("%w: %v", ErrStored, err)
		}
		e.Enc = EncJSON
		return nil
	}
	d := stored(p)
	d.event(e, nil)
	return d.err
}

// DecodeAccount decodes a stored account in either form into a.
func DecodeAccount(p []byte, a *Account) error {
	if err := checkStored(p); err != nil {
		return err
	}
	*a = Account{}
	if isJSON(p) {
		if err := json.Unmarshal(p, a); err != nil {
			return fmt.Errorf("%w: %v", ErrStored, err)
		}
		return nil
	}
	d := stored(p)
	d.i = 1
	d.account(a)
	d.end()
	return d.err
}

// DecodeRecord decodes a stored transfer record in either form into r.
func DecodeRecord(p []byte, r *Record) error {
	if err := checkStored(p); err != nil {
		return err
	}
	*r = Record{}
	if isJSON(p) {
		if err := json.Unmarshal(p, r); err != nil {
			return fmt.Errorf("%w: %v", ErrStored, err)
		}
		return nil
	}
	d := stored(p)
	d.i = 1
	d.transfer(&r.Transfer)
	r.Result, r.Status = Code(d.str()), Status(d.str())
	r.Seq, r.Time, r.ExpiresAt = d.uvarint(), d.varint(), d.varint()
	r.ResolvedSeq, r.ResolvedBy, r.ResolvedAmount = d.uvarint(), d.str(), d.varint()
	switch d.byte() {
	case 0:
	case 1:
		r.Saga = &Saga{Role: d.str(), Peer: d.int(), Currency: d.str(), Step: d.str(), Note: d.str()}
	default:
		d.fail("bad saga marker")
	}
	d.end()
	return d.err
}

// EventBuf decodes stored events where speed matters (replay): it
// reuses its balances and its room for the transfer, account and peer
// an event points to. Its Event is valid until the next Decode; what the
// ledger keeps of it (State.ReplayHashed) it copies, and the strings and
// metadata maps it shares are never reused.
type EventBuf struct {
	Event
	room room
	// Names, when set, gives the names of a binary event (account ids,
	// currencies, codes) and its other strings are copied one by one, so
	// that what a replay keeps (a record's ids) holds no copy of the
	// whole event. Without it an event's strings share one copy of it.
	Names *Names
}

// Names keeps one copy of each string that repeats from event to event:
// account ids, currencies, codes. It keeps at most maxNames of them; it is
// not safe for concurrent use. The zero value is ready.
type Names struct{ m map[string]string }

const maxNames = 1 << 16

func (n *Names) get(b []byte) string {
	if s, ok := n.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if n.m == nil {
		n.m = map[string]string{}
	}
	if len(n.m) < maxNames {
		n.m[s] = s
	}
	return s
}

// Decode decodes the stored event p in either form.
func (b *EventBuf) Decode(p []byte) error {
	if err := checkStored(p); err != nil {
		return err
	}
	if isJSON(p) {
		b.Event = Event{}
		if err := json.Unmarshal(p, &b.Event); err != nil {
			return fmt.Errorf("%w: %v", ErrStored, err)
		}
		b.Enc = EncJSON
		return nil
	}
	d := vdec{p: p, names: b.Names}
	if b.Names == nil {
		d = stored(p)
	}
	d.event(&b.Event, &b.room)
	return d.err
}

// StoredHashOK reports whether e, decoded from the stored value p, holds
// its own hash: for a binary event SHA-256(prev_hash || the canonical
// bytes of p), which the canonical decoding makes the hash of e's
// encoding without encoding it again; for a JSON event its ComputeHash.
// It reads only p and e, so it can run apart from the replay that folds
// e, in parallel with it.
func StoredHashOK(p []byte, e *Event) bool {
	if isJSON(p) {
		return e.ComputeHash() == e.Hash
	}
	if len(p) < 1+hashesLen {
		return false
	}
	return hashOf(e.PrevHash, p[:len(p)-hashesLen]) == e.Hash
}
