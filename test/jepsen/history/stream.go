package history

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sync"
)

// The stream record (stream.jsonl) is what the run's stream follower
// received from GET /v1/events?follow=true, one line per event, progress
// mark, connection and disconnection, in the order received. It goes
// straight to a file, so a long run does not hold it in memory; checker
// C9 reads it back a line at a time.

// Kinds of stream entries.
const (
	SConnect  = "connect"  // a stream was asked of Node from After on
	SEvent    = "event"    // an event line
	SProgress = "progress" // a progress line
	SBad      = "bad"      // a line that is neither (Why holds its start)
	SEnd      = "end"      // the connection ended (Why says how)
	SStop     = "stop"     // the follower stopped (Seqs: its positions)
)

// StreamEntry is one line of the stream record.
type StreamEntry struct {
	Time int64  `json:"time"` // nanoseconds since the run started
	Kind string `json:"kind"`
	Conn int    `json:"conn"`           // the connection's number, from 1
	Node string `json:"node,omitempty"` // connect: the node or proxy asked

	// connect: the position asked per shard (the after= list).
	After []uint64 `json:"after,omitempty"`

	// event
	Shard    int              `json:"shard"`
	Seq      uint64           `json:"seq,omitempty"`
	Type     string           `json:"type,omitempty"`
	PrevHash string           `json:"prev_hash,omitempty"`
	Hash     string           `json:"hash,omitempty"`
	Balances []AccountBalance `json:"balances,omitempty"`

	// progress: every shard's seq as the line said it (by shard number);
	// stop: the follower's last seq per shard, and the final applied seq
	// per shard it waited for (Target), and whether it got there.
	Seqs     map[string]uint64 `json:"seqs,omitempty"`
	Target   map[string]uint64 `json:"target,omitempty"`
	CaughtUp bool              `json:"caught_up,omitempty"`

	// end: why the connection ended; bad: the line's start.
	Why string `json:"why,omitempty"`
}

// StreamWriter appends stream entries to a file. Safe for concurrent use.
type StreamWriter struct {
	mu  sync.Mutex
	f   *os.File
	w   *bufio.Writer
	err error
}

// NewStreamWriter writes the stream record to path.
func NewStreamWriter(path string) (*StreamWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &StreamWriter{f: f, w: bufio.NewWriterSize(f, 1<<16)}, nil
}

// Add appends one entry.
func (s *StreamWriter) Add(e *StreamEntry) {
	b, err := json.Marshal(e)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.f == nil {
		return
	}
	if err == nil {
		_, err = s.w.Write(append(b, '\n'))
	}
	s.err = err
}

// Flush pushes buffered entries to the file.
func (s *StreamWriter) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return s.err
	}
	if err := s.w.Flush(); err != nil && s.err == nil {
		s.err = err
	}
	return s.err
}

// Close flushes and closes the file.
func (s *StreamWriter) Close() error {
	s.Flush()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return s.err
	}
	if err := s.f.Close(); err != nil && s.err == nil {
		s.err = err
	}
	s.f = nil
	return s.err
}

// StreamSource hands a stream record's entries to fn one at a time, in
// the order received, and stops at fn's first error.
type StreamSource func(fn func(*StreamEntry) error) error

// StreamFile reads the stream record at path a line at a time.
func StreamFile(path string) StreamSource {
	return func(fn func(*StreamEntry) error) error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for n := 1; sc.Scan(); n++ {
			if len(sc.Bytes()) == 0 {
				continue
			}
			var e StreamEntry
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				return fmt.Errorf("stream record line %d: %w", n, err)
			}
			if err := fn(&e); err != nil {
				return err
			}
		}
		return sc.Err()
	}
}

// StreamEntries serves entries held in memory (tests).
func StreamEntries(es []StreamEntry) StreamSource {
	return func(fn func(*StreamEntry) error) error {
		for i := range es {
			if err := fn(&es[i]); err != nil {
				return err
			}
		}
		return nil
	}
}
