package fsm

import (
	"encoding/binary"
	"fmt"

	"tally/ledger"
)

// Key layout (see fsm/DESIGN.md). Prefixes are one byte and a colon so that a
// listing of the database reads well.
var (
	preMeta  = []byte("m:")
	keyMeta  = []byte("m:applied")
	keyDirty = []byte("m:dirty")
	preEvent = []byte("e:")
	preAcct  = []byte("a:")
	preRec   = []byte("t:")
	preOpen  = []byte("p:")
	preHist  = []byte("h:")
	// preAborted indexes the sagas this shard started and aborted, for
	// operators; open sagas are in preOpen with the pending transfers.
	preAborted = []byte("ga:")
)

func key(prefix []byte, s string) []byte {
	k := make([]byte, 0, len(prefix)+len(s))
	return append(append(k, prefix...), s...)
}

func eventKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), preEvent...), seq)
}

// histKey indexes an event under an account key. Account keys never hold a
// NUL byte, so the NUL ends the key and prefix scans cannot run into a
// longer account id.
func histKey(acct string, seq uint64) []byte {
	k := make([]byte, 0, len(preHist)+len(acct)+9)
	k = append(append(append(k, preHist...), acct...), 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

func histPrefix(acct string) []byte {
	return append(append(append([]byte(nil), preHist...), acct...), 0)
}

// meta is what the state has applied: it is written in the same Badger
// transaction as the effects of the entries it names.
type meta struct {
	Index uint64      // last applied Raft index
	Seq   uint64      // last event seq
	Head  ledger.Hash // last event hash
	Time  ledger.Time // last entry's log time
}

func (m meta) encode() []byte {
	b := make([]byte, 0, 56)
	b = binary.BigEndian.AppendUint64(b, m.Index)
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = append(b, m.Head[:]...)
	return binary.BigEndian.AppendUint64(b, uint64(m.Time))
}

func decodeMeta(b []byte) (meta, error) {
	if len(b) != 56 {
		return meta{}, fmt.Errorf("meta: %d bytes, want 56", len(b))
	}
	var m meta
	m.Index = binary.BigEndian.Uint64(b)
	m.Seq = binary.BigEndian.Uint64(b[8:])
	copy(m.Head[:], b[16:48])
	m.Time = ledger.Time(binary.BigEndian.Uint64(b[48:]))
	return m, nil
}
