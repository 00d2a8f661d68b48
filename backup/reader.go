package backup

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"

	"tally/ledger"
)

// foldFlush is how many events the fold applies between flushes.
const foldFlush = 1024

// Reader reads a backup file and checks it as it goes: the header, every
// event's own hash and its place in its shard's hash chain (seq, prev
// hash, shard, time), that folding the events (ledger.State.ReplayHashed,
// as verify does) gives the balances each event carries, that each shard
// ends at its cut with the cut's head, its books summing to 0 with no
// account overdrawn, and the trailer. The fold keeps the accounts and
// the open pending transfers in memory, never the history. Any failure wraps ErrCorrupt, and the caller
// must discard what it read: a file is good only once Next has returned
// io.EOF. It is not safe for concurrent use.
type Reader struct {
	r       *bufio.Reader
	file    hash.Hash
	content hash.Hash
	h       Header
	n       int64

	shard int    // the section being read
	seq   uint64 // last seq read in it
	head  ledger.Hash
	st    *ledger.State // the fold of the section
	stats []Stats
	done  bool
	sum   Summary
}

// NewReader reads and checks the magic and the header of the file r.
func NewReader(r io.Reader) (*Reader, error) {
	br := &Reader{r: bufio.NewReaderSize(r, 64<<10), file: sha256.New(), content: sha256.New()}
	magic := make([]byte, len(Magic))
	if err := br.full(magic, false); err != nil {
		return nil, br.corrupt("magic: %w", err)
	}
	if string(magic) != Magic {
		return nil, fmt.Errorf("%w: not a backup file (no %q at its start)", ErrCorrupt, Magic[:7])
	}
	n, err := br.uvarint(false)
	if err != nil || n == 0 || n > maxHeader {
		return nil, br.corrupt("header length %d: %v", n, err)
	}
	js := make([]byte, n)
	if err := br.full(js, false); err != nil {
		return nil, br.corrupt("header: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&br.h); err != nil {
		return nil, br.corrupt("header: %v", err)
	}
	if err := br.h.check(); err != nil {
		return nil, br.corrupt("header: %v", err)
	}
	br.stats = make([]Stats, br.h.Shards)
	br.st = ledger.NewState(0, br.h.Shards, nil)
	return br, nil
}

// Header returns the file's header.
func (r *Reader) Header() Header { return r.h }

// Next returns the next event: its shard, its stored bytes (a fresh
// slice the caller may keep) and the event decoded. After the last
// event it checks the trailer and returns io.EOF, and only then is the
// whole file known good.
func (r *Reader) Next() (shard int, raw []byte, ev ledger.Event, err error) {
	for {
		if r.done {
			return 0, nil, ev, io.EOF
		}
		if r.shard == r.h.Shards {
			return 0, nil, ev, r.trailer()
		}
		n, err := r.uvarint(true)
		if err != nil || n > maxEvent {
			return 0, nil, ev, r.corrupt("shard %d after seq %d: length %d: %v", r.shard, r.seq, n, err)
		}
		if n == 0 {
			if err := r.endShard(); err != nil {
				return 0, nil, ev, err
			}
			continue
		}
		raw = make([]byte, n)
		if err := r.full(raw, true); err != nil {
			return 0, nil, ev, r.corrupt("shard %d event %d: %w", r.shard, r.seq+1, err)
		}
		if err := r.check(raw, &ev); err != nil {
			return 0, nil, ev, r.corrupt("shard %d event %d: %v", r.shard, r.seq+1, err)
		}
		st := &r.stats[r.shard]
		st.Events++
		st.Bytes += int64(n) + int64(uvarintLen(n))
		return r.shard, raw, ev, nil
	}
}

// check decodes one event and checks its hash and its place in the chain.
func (r *Reader) check(raw []byte, ev *ledger.Event) error {
	if err := ledger.DecodeEvent(raw, ev); err != nil {
		return err
	}
	switch {
	case !ledger.StoredHashOK(raw, ev):
		return fmt.Errorf("hash %s is not that of the event", ev.Hash)
	case ev.Shard != r.shard:
		return fmt.Errorf("event of shard %d", ev.Shard)
	case ev.Seq > r.h.Cut[r.shard].Seq:
		return fmt.Errorf("beyond the cut (seq %d)", r.h.Cut[r.shard].Seq)
	}
	// The chain's links (seq, prev_hash, time) are checked by the fold.
	if err := r.st.ReplayHashed(ev); err != nil {
		return err
	}
	if ev.Seq%foldFlush == 0 {
		r.st.Flush() // forget the records written: memory stays flat
	}
	r.seq, r.head = ev.Seq, ev.Hash
	return nil
}

func (r *Reader) endShard() error {
	c := r.h.Cut[r.shard]
	if r.seq != c.Seq || r.head != c.Head {
		return r.corrupt("shard %d ends at seq %d head %s, the cut says seq %d head %s", r.shard, r.seq, r.head, c.Seq, c.Head)
	}
	if err := r.st.CheckBooks(); err != nil {
		return r.corrupt("shard %d: %v", r.shard, err)
	}
	r.stats[r.shard].Shard, r.stats[r.shard].Seq = r.shard, r.seq
	r.shard++
	r.seq, r.head = 0, ledger.Hash{}
	r.st = ledger.NewState(r.shard, r.h.Shards, nil)
	return nil
}

func (r *Reader) trailer() error {
	var want, got ledger.Hash
	r.file.Sum(want[:0])
	r.content.Sum(r.sum.Content[:0])
	if _, err := io.ReadFull(r.r, got[:]); err != nil {
		return r.corrupt("trailer: %w", noEOF(err))
	}
	if got != want {
		return fmt.Errorf("%w: checksum %s, the file's bytes hash to %s", ErrCorrupt, got, want)
	}
	if _, err := r.r.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: bytes after the trailer", ErrCorrupt)
	}
	r.n += int64(len(got))
	r.done = true
	r.sum.Header, r.sum.Shards, r.sum.Bytes, r.sum.Checksum = r.h, r.stats, r.n, got
	return io.EOF
}

// Summary returns what the reader has read; it is complete once Next
// has returned io.EOF.
func (r *Reader) Summary() Summary {
	if r.done {
		return r.sum
	}
	return Summary{Header: r.h, Shards: append([]Stats(nil), r.stats...), Bytes: r.n}
}

// Position returns the section being read and the bytes read so far,
// for progress reports.
func (r *Reader) Position() (shard int, bytes int64) { return r.shard, r.n }

// Check reads a whole backup file from r and returns its summary, or
// why it is refused.
func Check(r io.Reader) (Summary, error) {
	br, err := NewReader(r)
	if err != nil {
		return Summary{}, err
	}
	for {
		if _, _, _, err := br.Next(); err == io.EOF {
			return br.Summary(), nil
		} else if err != nil {
			return br.Summary(), err
		}
	}
}

func (r *Reader) full(b []byte, content bool) error {
	n, err := io.ReadFull(r.r, b)
	r.consumed(b[:n], content)
	return noEOF(err)
}

func (r *Reader) uvarint(content bool) (uint64, error) {
	var x uint64
	var s uint
	for i := 0; i < binary.MaxVarintLen64; i++ {
		c, err := r.r.ReadByte()
		if err != nil {
			return 0, noEOF(err)
		}
		r.consumed([]byte{c}, content)
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				break
			}
			return x | uint64(c)<<s, nil
		}
		x |= uint64(c&0x7f) << s
		s += 7
	}
	return 0, errors.New("bad length")
}

func (r *Reader) consumed(b []byte, content bool) {
	r.file.Write(b)
	if content {
		r.content.Write(b)
	}
	r.n += int64(len(b))
}

func (r *Reader) corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %w", ErrCorrupt, r.n, fmt.Errorf(format, args...))
}

// noEOF reports an end of input inside the file as a truncation.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("truncated: the file ends early")
	}
	return err
}

func uvarintLen(n uint64) int { return len(binary.AppendUvarint(nil, n)) }
