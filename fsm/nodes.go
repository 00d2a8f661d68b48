package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"

	"github.com/dgraph-io/badger/v4"
)

// The node directory maps node ids to their HTTP addresses. It travels in
// the Raft log of every shard (entries that start with nodeEntry instead of
// ledger.EntryVersion) so every replica knows where to send a client, and
// it is part of the shard's snapshots.

const nodeEntry byte = 0xD1

var preNode = []byte("n:")

// EncodeNode returns a log entry that records node id's HTTP address
// (empty: forget the node).
func EncodeNode(id, http string) []byte {
	b := []byte{nodeEntry}
	b = binary.AppendUvarint(b, uint64(len(id)))
	b = append(b, id...)
	b = binary.AppendUvarint(b, uint64(len(http)))
	return append(b, http...)
}

func decodeNode(p []byte) (id, http string, err error) {
	if len(p) == 0 || p[0] != nodeEntry {
		return "", "", errors.New("not a node entry")
	}
	p = p[1:]
	var out [2]string
	for i := range out {
		n, k := binary.Uvarint(p)
		if k <= 0 || n > 256 || n > uint64(len(p)-k) {
			return "", "", errors.New("bad node entry")
		}
		out[i] = string(p[k : k+int(n)])
		p = p[k+int(n):]
	}
	if len(p) != 0 || out[0] == "" {
		return "", "", errors.New("bad node entry")
	}
	return out[0], out[1], nil
}

func (f *FSM) applyNode(index uint64, data []byte) []kv {
	id, http, err := decodeNode(data)
	if err != nil {
		panic(fmt.Sprintf("fsm: shard %d: entry %d: %v", f.shard, index, err))
	}
	f.nodesMu.Lock()
	defer f.nodesMu.Unlock()
	next := maps.Clone(f.nodes)
	if http == "" {
		delete(next, id)
		f.nodes = next
		return []kv{{k: key(preNode, id), del: true}}
	}
	next[id] = http
	f.nodes = next
	return []kv{{k: key(preNode, id), v: []byte(http)}}
}

// Nodes returns the node directory: node id to HTTP address. The caller
// must not modify it.
func (f *FSM) Nodes() map[string]string {
	f.nodesMu.Lock()
	defer f.nodesMu.Unlock()
	return f.nodes
}

func loadNodes(db *badger.DB) (map[string]string, error) {
	out := map[string]string{}
	err := db.View(func(txn *badger.Txn) error {
		return eachValue(txn, preNode, func(k, v []byte) error {
			out[string(k[len(preNode):])] = string(v)
			return nil
		})
	})
	return out, err
}
