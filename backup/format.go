// Package backup is the file a backup of a cluster is written to and
// restored from, and the rule that picks its cut. A backup holds, for
// every shard, its events 1..seq in their stored form, where the seqs
// form one cut across shards that keeps every cross-shard saga whole
// (cut.go). The format, byte by byte, is in docs/spec.md (Backup and
// restore):
//
//	magic "TALLYBK\n"
//	header     uvarint length, then JSON (Header)
//	per shard, in shard order:
//	  events   uvarint length (> 0), then the event's stored bytes, for seq 1..cut
//	  end      uvarint 0
//	trailer    SHA-256 of every byte before it
//
// Writer and Reader stream: neither holds more than one event.
package backup

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"tally/ledger"
)

// Magic starts every backup file.
const Magic = "TALLYBK\n"

// FormatVersion is the version of the layout that Writer writes and
// Reader reads.
const FormatVersion = 1

// Limits of what a Reader accepts.
const (
	maxHeader = 1 << 20
	maxEvent  = 1 << 20 // the largest stored value the ledger writes
	maxShards = 64
)

// ErrCorrupt wraps every reason a backup file is refused: truncated,
// altered, or not a backup at all.
var ErrCorrupt = errors.New("backup file is corrupt")

// Header is what a backup says about itself, before any event.
type Header struct {
	Format int `json:"format"`
	Shards int `json:"shards"`
	// Epoch is the source cluster's restore epoch (0: never restored);
	// the cluster restored from the file has epoch Epoch+1.
	Epoch   uint64    `json:"epoch"`
	Created time.Time `json:"created"`
	// Cut is every shard's last seq in the file and the hash-chain head
	// at that seq, in shard order.
	Cut []Point `json:"cut"`
	// InFlight counts the sagas in flight at the cut: held on their
	// source inside it, not yet ended there. The restored cluster finishes
	// them. 0 when the backup could hold new sagas back while it took the
	// cut, as it does unless a node did not answer.
	InFlight int `json:"in_flight"`
	// Note says why sagas could not be held back, when they could not.
	Note string `json:"note,omitempty"`
}

// Point is one shard's position in a cut.
type Point struct {
	Shard int         `json:"shard"`
	Seq   uint64      `json:"seq"`
	Head  ledger.Hash `json:"head"`
}

// Stats is what a Reader or a Writer saw of one shard.
type Stats struct {
	Shard  int    `json:"shard"`
	Seq    uint64 `json:"seq"`
	Events uint64 `json:"events"`
	Bytes  int64  `json:"bytes"`
}

// Summary describes a whole backup file.
type Summary struct {
	Header Header  `json:"header"`
	Shards []Stats `json:"shards"`
	Bytes  int64   `json:"bytes"`
	// Content is the SHA-256 of the shards' sections (every event and
	// the end markers, not the header): two backups of the same events
	// have the same content, whenever and from whichever cluster they
	// were taken.
	Content ledger.Hash `json:"content_sha256"`
	// Checksum is the file's trailer.
	Checksum ledger.Hash `json:"checksum"`
}

func (h *Header) check() error {
	switch {
	case h.Format != FormatVersion:
		return fmt.Errorf("format %d, this build reads %d", h.Format, FormatVersion)
	case h.Shards < 1 || h.Shards > maxShards:
		return fmt.Errorf("%d shards", h.Shards)
	case len(h.Cut) != h.Shards:
		return fmt.Errorf("cut has %d shards, header says %d", len(h.Cut), h.Shards)
	}
	for i, p := range h.Cut {
		if p.Shard != i {
			return fmt.Errorf("cut entry %d names shard %d", i, p.Shard)
		}
		if p.Seq == 0 && p.Head != (ledger.Hash{}) {
			return fmt.Errorf("shard %d: empty with head %s", i, p.Head)
		}
	}
	return nil
}

// Writer writes a backup file. It is not safe for concurrent use.
type Writer struct {
	w       *bufio.Writer
	file    hash.Hash // every byte
	content hash.Hash // the sections
	h       Header
	shard   int
	stats   []Stats
	n       int64
	buf     []byte
}

// NewWriter writes the magic and h to w and returns the writer of the
// events that follow.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	h.Format = FormatVersion
	if err := h.check(); err != nil {
		return nil, fmt.Errorf("backup header: %w", err)
	}
	bw := &Writer{w: bufio.NewWriterSize(w, 64<<10), file: sha256.New(), content: sha256.New(), h: h,
		stats: make([]Stats, h.Shards)}
	js, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	bw.write([]byte(Magic), false)
	bw.buf = binary.AppendUvarint(bw.buf[:0], uint64(len(js)))
	bw.write(bw.buf, false)
	if err := bw.write(js, false); err != nil {
		return nil, err
	}
	return bw, nil
}

func (w *Writer) write(b []byte, content bool) error {
	w.file.Write(b)
	if content {
		w.content.Write(b)
	}
	w.n += int64(len(b))
	_, err := w.w.Write(b)
	return err
}

// Event writes the next event of the current shard, in its stored form.
func (w *Writer) Event(raw []byte) error {
	if w.shard >= w.h.Shards {
		return errors.New("backup: event after the last shard")
	}
	if len(raw) == 0 || len(raw) > maxEvent {
		return fmt.Errorf("backup: shard %d: event of %d bytes", w.shard, len(raw))
	}
	w.buf = binary.AppendUvarint(w.buf[:0], uint64(len(raw)))
	w.write(w.buf, true)
	st := &w.stats[w.shard]
	st.Events++
	st.Bytes += int64(len(w.buf) + len(raw))
	return w.write(raw, true)
}

// EndShard ends the current shard's section; the next event is the next
// shard's.
func (w *Writer) EndShard() error {
	if w.shard >= w.h.Shards {
		return errors.New("backup: more shards than the header says")
	}
	if st := w.stats[w.shard]; st.Events != w.h.Cut[w.shard].Seq {
		return fmt.Errorf("backup: shard %d: %d events written, cut is %d", w.shard, st.Events, w.h.Cut[w.shard].Seq)
	}
	w.stats[w.shard].Shard, w.stats[w.shard].Seq = w.shard, w.h.Cut[w.shard].Seq
	w.shard++
	return w.write([]byte{0}, true)
}

// Close writes the trailer once every shard has ended, flushes, and
// returns the summary. It does not close the underlying writer.
func (w *Writer) Close() (Summary, error) {
	if w.shard != w.h.Shards {
		return Summary{}, fmt.Errorf("backup: %d of %d shards written", w.shard, w.h.Shards)
	}
	var s Summary
	w.file.Sum(s.Checksum[:0])
	w.content.Sum(s.Content[:0])
	if err := w.write(s.Checksum[:], false); err != nil {
		return Summary{}, err
	}
	if err := w.w.Flush(); err != nil {
		return Summary{}, err
	}
	s.Header, s.Shards, s.Bytes = w.h, w.stats, w.n
	return s, nil
}
