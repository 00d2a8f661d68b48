package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"

	"github.com/dgraph-io/badger/v4"
)

// The node directory maps node ids to their HTTP addresses. It travels in
// the Raft log of every shard (entries of KindNode) so every replica knows
// where to send a client, and it is part of the shard's snapshots.

var preNode = []byte("n:")

// nodeKind is the node directory.
var nodeKind = &kind{
	code:     KindNode,
	name:     "node",
	prefixes: [][]byte{preNode},
	apply:    (*FSM).applyNode,
	load:     (*FSM).loadNodes,
}

// EncodeNode returns a log entry that records node id's HTTP address
// (empty: forget the node).
func EncodeNode(id, http string) []byte {
	b := make([]byte, 0, 2+2*binary.MaxVarintLen16+len(id)+len(http))
	return appendNode(AppendHeader(b, KindNode), id, http)
}

// appendNode appends a node entry's payload: id and address as
// uvarint-length strings.
func appendNode(b []byte, id, http string) []byte {
	b = binary.AppendUvarint(b, uint64(len(id)))
	b = append(b, id...)
	b = binary.AppendUvarint(b, uint64(len(http)))
	return append(b, http...)
}

// decodeNode decodes a node entry's payload.
func decodeNode(p []byte) (id, http string, err error) {
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

func (f *FSM) applyNode(_ uint64, payload []byte) (any, []kv, error) {
	id, http, err := decodeNode(payload)
	if err != nil {
		return nil, nil, err
	}
	f.nodesMu.Lock()
	defer f.nodesMu.Unlock()
	next := maps.Clone(f.nodes)
	if http == "" {
		delete(next, id)
		f.nodes = next
		return nil, []kv{{k: key(preNode, id), del: true}}, nil
	}
	next[id] = http
	f.nodes = next
	return nil, []kv{{k: key(preNode, id), v: []byte(http)}}, nil
}

// Nodes returns the node directory: node id to HTTP address. The caller
// must not modify it.
func (f *FSM) Nodes() map[string]string {
	f.nodesMu.Lock()
	defer f.nodesMu.Unlock()
	return f.nodes
}

// loadNodes reads the directory from db.
func (f *FSM) loadNodes(db *badger.DB) (func(), error) {
	nodes := map[string]string{}
	err := db.View(func(txn *badger.Txn) error {
		return eachValue(txn, preNode, func(k, v []byte) error {
			nodes[string(k[len(preNode):])] = string(v)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: load nodes: %w", err)
	}
	return func() {
		f.nodesMu.Lock()
		f.nodes = nodes
		f.nodesMu.Unlock()
	}, nil
}
