package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"tally/test/jepsen/history"
)

// Follower is a consumer of the all-shards event stream that runs
// through the whole fault run, for checker C9: it follows
// GET /v1/events?follow=true from one node (or the proxy), and when that
// connection breaks, stalls, or has run for a while, it connects to
// another and resumes with after= its last seen seq per shard. It records
// every line it receives and every connection in the stream record
// (stream.jsonl), straight to the file: it holds nothing in memory but
// its positions.
//
// It has its own HTTP client, like the rest of the suite independent of
// tally/client, so that it judges the server and not our client.
type Follower struct {
	hc      *http.Client
	targets []streamTarget
	rec     *history.StreamWriter
	start   time.Time
	rng     *rand.Rand // the run goroutine's alone
	// stall is the silence after which a connection is given up: a
	// stream sends progress after a second without events.
	stall time.Duration

	mu            sync.Mutex
	pos           []uint64
	events, conns int
	cancel        context.CancelFunc
	done          chan struct{}
	stopOnce      sync.Once
	stopErr       error
}

type streamTarget struct{ name, addr string }

var (
	errStalled = errors.New("stalled: no line for the stall time")
	errRotate  = errors.New("rotate: moving to another node")
	errStopped = errors.New("stopped: the run is over")
)

// StartFollower starts following every shard's events from seq 0 on,
// recording to path; times are counted from start.
func StartFollower(c *Cluster, path string, start time.Time, seed uint64) (*Follower, error) {
	rec, err := history.NewStreamWriter(path)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		DialContext:        c.dial,
		DisableCompression: true,
		// A node that accepts but does not answer (paused) is given up.
		ResponseHeaderTimeout: 3 * time.Second,
		MaxIdleConnsPerHost:   1,
		IdleConnTimeout:       5 * time.Second,
	}
	f := &Follower{hc: &http.Client{Transport: tr}, rec: rec, start: start, stall: 3 * time.Second,
		rng: rand.New(rand.NewPCG(seed, 0xC9)), pos: make([]uint64, c.Shards), done: make(chan struct{})}
	for _, n := range c.Nodes {
		f.targets = append(f.targets, streamTarget{n.ID, n.HTTP})
	}
	f.targets = append(f.targets, streamTarget{"proxy", c.ProxyAddr})
	ctx, cancel := context.WithCancelCause(context.Background())
	f.cancel = func() { cancel(errStopped) }
	go f.run(ctx)
	return f, nil
}

func (f *Follower) now() int64 { return time.Since(f.start).Nanoseconds() }

// run connects again and again, to the next target each time, until
// stopped; after a round in which no target answered it waits a little.
func (f *Follower) run(ctx context.Context) {
	defer close(f.done)
	next := f.rng.IntN(len(f.targets))
	failed := 0
	for ctx.Err() == nil {
		t := f.targets[next%len(f.targets)]
		next++
		if f.follow(ctx, t) {
			failed = 0
			continue
		}
		if failed++; failed >= len(f.targets) {
			failed = 0
			sleepCtx(ctx, 250*time.Millisecond)
		}
	}
}

// follow reads one connection until it breaks, stalls, is rotated away
// from, or the follower stops. It reports whether any line came.
func (f *Follower) follow(ctx context.Context, t streamTarget) bool {
	f.mu.Lock()
	f.conns++
	conn, after := f.conns, slices.Clone(f.pos)
	f.mu.Unlock()
	f.rec.Add(&history.StreamEntry{Time: f.now(), Kind: history.SConnect, Conn: conn, Node: t.name, After: after})
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	got, why := f.read(cctx, cancel, conn, t, after)
	if cause := context.Cause(cctx); cause != nil && why == "" {
		why = cause.Error()
	}
	f.rec.Add(&history.StreamEntry{Time: f.now(), Kind: history.SEnd, Conn: conn, Node: t.name, Why: why})
	_ = f.rec.Flush()
	return got
}

func (f *Follower) read(ctx context.Context, cancel context.CancelCauseFunc, conn int, t streamTarget, after []uint64) (bool, string) {
	u := fmt.Sprintf("http://%s/v1/events?follow=true&after=%s", t.addr, url.QueryEscape(positions(after)))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		if c := context.Cause(ctx); c != nil {
			return false, c.Error()
		}
		return false, err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return false, fmt.Sprintf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	stall := time.AfterFunc(f.stall, func() { cancel(errStalled) })
	defer stall.Stop()
	rotate := time.Now().Add(3*time.Second + time.Duration(f.rng.Int64N(int64(6*time.Second))))
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	got := false
	for sc.Scan() {
		stall.Reset(f.stall)
		got = true
		if len(sc.Bytes()) > 0 {
			f.line(conn, sc.Bytes())
		}
		if time.Now().After(rotate) {
			cancel(errRotate)
			return got, errRotate.Error()
		}
	}
	if c := context.Cause(ctx); c != nil {
		return got, c.Error()
	}
	if err := sc.Err(); err != nil {
		return got, err.Error()
	}
	return got, "the server ended the stream"
}

// streamLine is a line of the stream: an event or a progress mark.
type streamLine struct {
	Progress *struct {
		Seqs map[string]uint64 `json:"seqs"`
	} `json:"progress"`
	Shard    *int                     `json:"shard"`
	Seq      uint64                   `json:"seq"`
	Type     string                   `json:"type"`
	PrevHash string                   `json:"prev_hash"`
	Hash     string                   `json:"hash"`
	Balances []history.AccountBalance `json:"balances"`
}

// line records one line and moves the positions past an event.
func (f *Follower) line(conn int, b []byte) {
	var l streamLine
	e := &history.StreamEntry{Time: f.now(), Conn: conn}
	switch err := json.Unmarshal(b, &l); {
	case err != nil || (l.Progress == nil && l.Shard == nil):
		e.Kind, e.Why = history.SBad, fmt.Sprintf("%.200s", b)
	case l.Progress != nil:
		e.Kind, e.Seqs = history.SProgress, l.Progress.Seqs
	default:
		e.Kind, e.Shard, e.Seq, e.Type, e.PrevHash, e.Hash, e.Balances = history.SEvent, *l.Shard, l.Seq, l.Type,
			l.PrevHash, l.Hash, l.Balances
		f.mu.Lock()
		f.events++
		if s := *l.Shard; s >= 0 && s < len(f.pos) {
			f.pos[s] = max(f.pos[s], l.Seq)
		}
		f.mu.Unlock()
	}
	f.rec.Add(e)
}

// Positions returns the last seq seen per shard.
func (f *Follower) Positions() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.pos)
}

// WaitCaughtUp waits up to d until the follower has seen every shard's
// target seq.
func (f *Follower) WaitCaughtUp(ctx context.Context, target []uint64, d time.Duration) bool {
	return waitFor(d, func() bool {
		pos := f.Positions()
		for s, t := range target {
			if s < len(pos) && pos[s] < t {
				return false
			}
		}
		return true
	}) && ctx.Err() == nil
}

// Stop ends the follower and closes the stream record with its positions,
// the final seqs it waited for and whether it got there. Safe to call
// more than once.
func (f *Follower) Stop(target []uint64, caughtUp bool) (events, conns int, err error) {
	f.stopOnce.Do(func() {
		f.cancel()
		<-f.done
		f.rec.Add(&history.StreamEntry{Time: f.now(), Kind: history.SStop, Seqs: seqMap(f.Positions()),
			Target: seqMap(target), CaughtUp: caughtUp})
		f.stopErr = f.rec.Close()
		f.hc.CloseIdleConnections()
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.events, f.conns, f.stopErr
}

func seqMap(pos []uint64) map[string]uint64 {
	if pos == nil {
		return nil
	}
	m := make(map[string]uint64, len(pos))
	for s, p := range pos {
		m[strconv.Itoa(s)] = p
	}
	return m
}

// positions writes an after= list: "0:42,1:17".
func positions(pos []uint64) string {
	parts := make([]string, len(pos))
	for s, p := range pos {
		parts[s] = fmt.Sprintf("%d:%d", s, p)
	}
	return strings.Join(parts, ",")
}
