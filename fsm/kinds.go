package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

// Kind names what a Raft log entry carries. Its code is written in the
// entry's envelope, so a code is never reused for another kind.
type Kind byte

// The registered kinds' codes. 0 is never a kind: it ends the list of
// parts in a snapshot.
const (
	KindLedger    Kind = 1 // a ledger.Entry: commands for ledger.State
	KindNode      Kind = 2 // a node directory change (EncodeNode)
	KindConsumers Kind = 3 // a consumer offset change (EncodeOffset)
	KindRestore   Kind = 4 // events restored from a backup (restore.go)
)

// envelopeV1 is the first byte of an entry in the envelope: the kind code
// follows, then the kind's payload. A later envelope version takes another
// first byte, so the byte that says how to read the rest is always the first.
const envelopeV1 byte = 0xE1

// Entries written before the envelope have no header, and Raft logs still
// hold them: a ledger entry starts with bareLedger, the version byte of
// the ledger codec at the time (part of the payload), and a node
// directory entry with bareNode (not part of the payload). Neither byte is
// envelopeV1, and no new kind gets a bare form: later ledger versions come
// only in the envelope.
const (
	bareLedger byte = 1
	bareNode   byte = 0xD1
)

// errEnvelope wraps every failure to read an entry's envelope.
var errEnvelope = errors.New("entry envelope")

// AppendHeader appends the envelope header of kind k to b; the kind's
// payload goes after it.
func AppendHeader(b []byte, k Kind) []byte { return append(b, envelopeV1, byte(k)) }

// decodeEnvelope returns the kind of an entry and its payload (a subslice
// of data: nothing is copied).
func decodeEnvelope(data []byte) (*kind, []byte, error) {
	if len(data) == 0 {
		return nil, nil, fmt.Errorf("%w: empty", errEnvelope)
	}
	switch data[0] {
	case envelopeV1:
		if len(data) < 2 {
			return nil, nil, fmt.Errorf("%w: no kind", errEnvelope)
		}
		k := kinds.byCode[data[1]]
		if k == nil {
			return nil, nil, fmt.Errorf("%w: unknown kind %d", errEnvelope, data[1])
		}
		return k, data[2:], nil
	case bareLedger:
		return kinds.byCode[KindLedger], data, nil
	case bareNode:
		return kinds.byCode[KindNode], data[1:], nil
	}
	return nil, nil, fmt.Errorf("%w: unknown header 0x%02x", errEnvelope, data[0])
}

// kind is everything the FSM does with one entry kind: apply its entries,
// own its keys in Badger, put them in a snapshot and load them back.
type kind struct {
	code Kind
	name string
	// prefixes are the Badger keys the kind owns, disjoint from every
	// other kind's. Its part of a snapshot is every key under them, in key
	// order; restoring the part writes those keys back, then runs load.
	prefixes [][]byte
	// apply decodes one entry's payload and returns the entry's response
	// and its writes. It runs on the FSM goroutine during ApplyBatch, with
	// f.txn the batch's transaction; if the payload does not decode it
	// returns the error having changed nothing.
	apply func(f *FSM, index uint64, payload []byte) (any, []kv, error)
	// load reads the kind's in-memory view from db, at Open and after a
	// snapshot has been restored into db, and returns what installs it.
	// install runs with f.mu held for writing, before f.publish.
	load func(f *FSM, db *badger.DB) (install func(), err error)
}

// table dispatches entries by kind code.
type table struct {
	byCode [256]*kind
	list   []*kind // in code order: the order of snapshot parts
}

// kinds is every entry kind this build knows. It is the one place a kind
// is registered; a duplicate code, an overlapping key prefix or a missing
// function stops the program when the package initialises.
var kinds = mustTable(
	ledgerKind,
	nodeKind,
	consumerKind,
	restoreKind,
)

// mustTable builds the dispatch table, panicking on a kind that would make
// dispatch or snapshots ambiguous.
func mustTable(ks ...*kind) *table {
	t := &table{}
	for _, k := range ks {
		switch {
		case k.code == 0:
			panic(fmt.Sprintf("fsm: entry kind %q has code 0", k.name))
		case t.byCode[k.code] != nil:
			panic(fmt.Sprintf("fsm: entry kind %d registered twice (%q and %q)", k.code, t.byCode[k.code].name, k.name))
		case k.apply == nil || k.load == nil || len(k.prefixes) == 0:
			panic(fmt.Sprintf("fsm: entry kind %d (%q) lacks apply, load or key prefixes", k.code, k.name))
		}
		for _, o := range append(t.list, k) {
			for i, p := range k.prefixes {
				for j, q := range o.prefixes {
					if (o != k || i != j) && (bytes.HasPrefix(p, q) || bytes.HasPrefix(q, p)) {
						panic(fmt.Sprintf("fsm: entry kind %q key prefix %q overlaps %q of %q", k.name, p, q, o.name))
					}
				}
			}
		}
		t.byCode[k.code] = k
		t.list = append(t.list, k)
	}
	slices.SortFunc(t.list, func(a, b *kind) int { return int(a.code) - int(b.code) })
	return t
}

// owns reports whether key is under one of k's prefixes.
func (k *kind) owns(key []byte) bool {
	for _, p := range k.prefixes {
		if bytes.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// loadKinds reads every kind's in-memory view from db and returns what
// installs them.
func (f *FSM) loadKinds(db *badger.DB) ([]func(), error) {
	out := make([]func(), 0, len(kinds.list))
	for _, k := range kinds.list {
		install, err := k.load(f, db)
		if err != nil {
			return nil, err
		}
		out = append(out, install)
	}
	return out, nil
}
