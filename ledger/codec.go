package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Entry is the payload of one Raft log entry: the leader's time and the
// commands it batched. The encoding is compact, versioned and checked: a
// decoder that meets bytes it does not understand returns an error and
// never panics or allocates more than the input justifies.
type Entry struct {
	Time     Time
	Commands []Command
	// Version is the codec version the entry was decoded from, or the one
	// Encode writes (0: EntryVersion). Version 2 has the layout of version
	// 1; it says that the entry's events are hashed and stored in the
	// binary encoding (EncodingOf), where those of a version-1 entry are
	// JSON. Every replica must apply an entry with the version it was
	// proposed with, so the version travels in the entry.
	Version byte
}

// EntryVersion is the first byte of the entries this build proposes.
// Version 1 entries decode for ever: Raft logs and their replays hold
// them, and their events keep the JSON hash they were written with.
const EntryVersion byte = 2

// entryV1 is the version of the entries written before the binary event
// encoding.
const entryV1 byte = 1

// maxStr bounds any string in an entry; the real limits are smaller.
const maxStr = 4096

// ErrDecode wraps every decoding failure.
var ErrDecode = errors.New("decode entry")

// Encode appends the encoding of e to b, in version e.Version (0:
// EntryVersion).
func (e *Entry) Encode(b []byte) []byte {
	v := e.Version
	if v == 0 {
		v = EntryVersion
	}
	b = append(b, v)
	b = binary.AppendVarint(b, int64(e.Time))
	b = binary.AppendUvarint(b, uint64(len(e.Commands)))
	for i := range e.Commands {
		b = e.Commands[i].encode(b)
	}
	return b
}

func (c *Command) encode(b []byte) []byte {
	b = append(b, byte(c.Kind))
	switch c.Kind {
	case CmdOpenAccounts:
		b = binary.AppendUvarint(b, uint64(len(c.Accounts)))
		for i := range c.Accounts {
			a := &c.Accounts[i]
			b = appendStr(b, a.ID)
			b = appendStr(b, a.Currency)
			b = appendBool(b, a.AllowNegative)
			b = appendMeta(b, a.Metadata)
		}
	case CmdCloseAccount:
		b = appendStr(b, c.AccountID)
	case CmdTransfers:
		b = binary.AppendUvarint(b, uint64(len(c.Transfers)))
		for i := range c.Transfers {
			b = appendTransfer(b, &c.Transfers[i])
		}
	case CmdSagaCredit, CmdSagaFence, CmdSagaResolve:
		b = binary.AppendUvarint(b, uint64(len(c.Saga)))
		for i := range c.Saga {
			s := &c.Saga[i]
			b = binary.AppendVarint(b, int64(s.Source))
			b = appendTransfer(b, &s.Transfer)
			b = appendStr(b, s.Currency)
			b = appendStr(b, string(s.Outcome))
			b = appendStr(b, s.Note)
		}
	}
	return b
}

func appendTransfer(b []byte, t *Transfer) []byte {
	b = appendStr(b, t.ID)
	b = appendStr(b, t.Debit)
	b = appendStr(b, t.Credit)
	b = binary.AppendVarint(b, t.Amount)
	var f byte
	if t.Pending {
		f |= 1
	}
	if t.Linked {
		f |= 2
	}
	b = append(b, f)
	b = binary.AppendVarint(b, t.TimeoutSeconds)
	b = appendStr(b, t.PostPendingID)
	b = appendStr(b, t.VoidPendingID)
	b = appendStr(b, t.Reference)
	return appendMeta(b, t.Metadata)
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendMeta(b []byte, m map[string]string) []byte {
	b = binary.AppendUvarint(b, uint64(len(m)))
	for _, k := range sortedKeys(m) {
		b = appendStr(b, k)
		b = appendStr(b, m[k])
	}
	return b
}

// DecodeEntry decodes an entry encoded by Encode.
func DecodeEntry(p []byte) (Entry, error) {
	d := decoder{p: p}
	var e Entry
	if e.Version = d.byte(); e.Version != entryV1 && e.Version != EntryVersion {
		return Entry{}, fmt.Errorf("%w: version %d", ErrDecode, e.Version)
	}
	e.Time = Time(d.varint())
	n := d.count(MaxBatch)
	e.Commands = make([]Command, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		e.Commands = append(e.Commands, d.command())
	}
	if d.err == nil && len(d.p) != 0 {
		d.fail("%d trailing bytes", len(d.p))
	}
	if d.err != nil {
		return Entry{}, d.err
	}
	return e, nil
}

type decoder struct {
	p   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrDecode, fmt.Sprintf(format, args...))
	}
	d.p = nil
}

func (d *decoder) byte() byte {
	if len(d.p) < 1 {
		d.fail("short input")
		return 0
	}
	c := d.p[0]
	d.p = d.p[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.p)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.p)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.p = d.p[n:]
	return v
}

// count reads a length that must fit the limit and the remaining input
// (every item takes at least one byte), so a forged length cannot make the
// decoder allocate much.
func (d *decoder) count(limit int) int {
	v := d.uvarint()
	if v > uint64(limit) || v > uint64(len(d.p)) {
		d.fail("count %d out of range", v)
		return 0
	}
	return int(v)
}

func (d *decoder) str() string {
	n := d.uvarint()
	if n > maxStr || n > uint64(len(d.p)) {
		d.fail("string length %d out of range", n)
		return ""
	}
	s := string(d.p[:n])
	d.p = d.p[n:]
	return s
}

func (d *decoder) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail("bad bool")
	return false
}

func (d *decoder) meta() map[string]string {
	n := d.count(MaxMetaKeys)
	if n == 0 {
		return nil
	}
	m := make(map[string]string, n)
	for i := 0; i < n && d.err == nil; i++ {
		k := d.str()
		m[k] = d.str()
	}
	return m
}

func (d *decoder) command() Command {
	c := Command{Kind: Kind(d.byte())}
	switch c.Kind {
	case CmdOpenAccounts:
		n := d.count(MaxBatch)
		c.Accounts = make([]Account, 0, n)
		for i := 0; i < n && d.err == nil; i++ {
			c.Accounts = append(c.Accounts, Account{ID: d.str(), Currency: d.str(), AllowNegative: d.bool(), Metadata: d.meta()})
		}
	case CmdCloseAccount:
		c.AccountID = d.str()
	case CmdTransfers:
		n := d.count(MaxBatch)
		c.Transfers = make([]Transfer, 0, n)
		for i := 0; i < n && d.err == nil; i++ {
			c.Transfers = append(c.Transfers, d.transfer())
		}
	case CmdSagaCredit, CmdSagaFence, CmdSagaResolve:
		n := d.count(MaxBatch)
		c.Saga = make([]SagaStep, 0, n)
		for i := 0; i < n && d.err == nil; i++ {
			src := d.varint()
			if src < 0 || src > 1<<16 {
				d.fail("saga source shard %d out of range", src)
			}
			c.Saga = append(c.Saga, SagaStep{Source: int(src), Transfer: d.transfer(),
				Currency: d.str(), Outcome: Code(d.str()), Note: d.str()})
		}
	default:
		d.fail("unknown command kind %d", c.Kind)
	}
	return c
}

func (d *decoder) transfer() Transfer {
	t := Transfer{ID: d.str(), Debit: d.str(), Credit: d.str(), Amount: d.varint()}
	f := d.byte()
	if f&^3 != 0 {
		d.fail("bad transfer flags %#x", f)
	}
	t.Pending, t.Linked = f&1 != 0, f&2 != 0
	t.TimeoutSeconds = d.varint()
	t.PostPendingID, t.VoidPendingID = d.str(), d.str()
	t.Reference = d.str()
	t.Metadata = d.meta()
	return t
}
