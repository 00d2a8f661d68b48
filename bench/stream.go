package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"tally/client"
	"tally/ledger"
	"tally/stream"
)

// StreamStat is what a consumer of the all-shards stream saw beside the
// load: the lag of live events (from the time the leader stamped to the
// time the consumer read the line), and, after the load, how fast it read
// the whole log again from seq 0.
type StreamStat struct {
	Events         int64   `json:"live_events"`
	LagP50MS       float64 `json:"lag_p50_ms"`
	LagP99MS       float64 `json:"lag_p99_ms"`
	LagMaxMS       float64 `json:"lag_max_ms"`
	CatchUpEvents  int64   `json:"catch_up_events"`
	CatchUpSeconds float64 `json:"catch_up_seconds"`
	CatchUpPerSec  float64 `json:"catch_up_events_per_sec"`
	Err            string  `json:"error,omitempty"`
}

// streamLine is what the consumer reads of each line.
type streamLine struct {
	Shard int         `json:"shard"`
	Seq   uint64      `json:"seq"`
	Time  ledger.Time `json:"time"`
}

// liveConsumer follows the all-shards stream from the cluster's current
// heads until stop is called, recording each event's lag.
type liveConsumer struct {
	mu     sync.Mutex
	lag    *hdrhistogram.PackedHistogram
	events int64
	last   map[int]uint64 // the last seq read, per shard
	err    error
	cancel context.CancelFunc
	done   chan struct{}
}

func startConsumer(ctx context.Context, c *client.Client) (*liveConsumer, error) {
	after := heads(ctx, c)
	if after == "" {
		return nil, errors.New("cannot read the shards' heads")
	}
	ctx, cancel := context.WithCancel(ctx)
	lc := &liveConsumer{lag: newHist(), last: map[int]uint64{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(lc.done)
		err := readStream(ctx, c.Addr()+"/v1/events?follow=true&after="+after, func(line []byte) error {
			var l streamLine
			if err := json.Unmarshal(line, &l); err != nil {
				return err
			}
			lag := time.Since(time.Unix(0, int64(l.Time)))
			lc.mu.Lock()
			record(lc.lag, lag)
			lc.events++
			lc.last[l.Shard] = l.Seq
			lc.mu.Unlock()
			return nil
		})
		if ctx.Err() == nil {
			lc.mu.Lock()
			lc.err = err
			lc.mu.Unlock()
		}
	}()
	return lc, nil
}

// stop ends the consumer once it has read every event the cluster had
// applied when the load ended, waiting at most drainTimeout for them.
func (lc *liveConsumer) stop(ctx context.Context, c *client.Client, stat *StreamStat) {
	if st, err := c.Cluster(ctx); err == nil {
		deadline := time.Now().Add(drainTimeout)
		for _, sh := range st.Shards {
			for time.Now().Before(deadline) && lc.seq(sh.Shard) < sh.AppliedSeq {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	lc.cancel()
	<-lc.done
	lc.mu.Lock()
	defer lc.mu.Unlock()
	stat.Events = lc.events
	stat.LagP50MS, stat.LagP99MS, stat.LagMaxMS = pct(lc.lag, 50), pct(lc.lag, 99), pct(lc.lag, 100)
	if lc.err != nil {
		stat.Err = lc.err.Error()
	}
}

// drainTimeout bounds the wait for the stream to deliver the last events
// of the load.
const drainTimeout = 10 * time.Second

func (lc *liveConsumer) seq(shard int) uint64 {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.last[shard]
}

// catchUp reads every shard's whole log through the all-shards stream,
// without following, and times it.
func catchUp(ctx context.Context, c *client.Client, stat *StreamStat) {
	start := time.Now()
	var n int64
	err := readStream(ctx, c.Addr()+"/v1/events", func([]byte) error { n++; return nil })
	el := time.Since(start)
	stat.CatchUpEvents, stat.CatchUpSeconds = n, el.Seconds()
	if el > 0 {
		stat.CatchUpPerSec = float64(n) / el.Seconds()
	}
	if err != nil && stat.Err == "" {
		stat.Err = "catch-up: " + err.Error()
	}
}

var progressPrefix = []byte(`{"progress"`)

// readStream reads an NDJSON stream at url and calls fn with each event
// line (progress lines are skipped). It is not client.StreamAll on
// purpose: the figures are the server's, without the cost of decoding
// every event into a ledger.Event on the client.
func readStream(ctx context.Context, url string, fn func(line []byte) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512)) // for the message only
		return fmt.Errorf("%s: %s: %s", url, strconv.Itoa(resp.StatusCode), bytes.TrimSpace(b))
	}
	r := bufio.NewReaderSize(resp.Body, 1<<20)
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// An event longer than the buffer: read the rest of it.
			rest, err2 := r.ReadBytes('\n')
			line, err = append(append([]byte(nil), line...), rest...), err2
		}
		if len(bytes.TrimSpace(line)) > 0 && !bytes.HasPrefix(line, progressPrefix) {
			if ferr := fn(line); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// ReadersStat is what the extra readers of a run read.
type ReadersStat struct {
	Streams int   `json:"streams"`
	Events  int64 `json:"events"`
	Failed  int   `json:"failed"`
}

// startReaders opens n all-shards streams from the current heads that
// read and discard the log; the returned function stops them and says
// what they read (nil when n is 0).
func startReaders(ctx context.Context, c *client.Client, n int) func() *ReadersStat {
	if n <= 0 {
		return func() *ReadersStat { return nil }
	}
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	stat := &ReadersStat{Streams: n}
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var read int64
			err := readStream(ctx, c.Addr()+"/v1/events?follow=true&after="+heads(ctx, c), func([]byte) error { read++; return nil })
			mu.Lock()
			defer mu.Unlock()
			stat.Events += read
			if err != nil && ctx.Err() == nil {
				stat.Failed++
			}
		}()
	}
	return func() *ReadersStat {
		cancel()
		wg.Wait()
		return stat
	}
}

// heads is every shard's applied seq as an after= list ("" when the
// status cannot be read: the stream then starts from seq 0).
func heads(ctx context.Context, c *client.Client) string {
	st, err := c.Cluster(ctx)
	if err != nil {
		return ""
	}
	pos := make([]uint64, len(st.Shards))
	for _, sh := range st.Shards {
		if sh.Shard >= 0 && sh.Shard < len(pos) {
			pos[sh.Shard] = sh.AppliedSeq
		}
	}
	return stream.FormatPositions(pos)
}
