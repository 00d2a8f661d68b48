package stream

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tally/ledger"
)

// memLog is a Log in memory whose events a test appends.
type memLog struct {
	mu     sync.Mutex
	shard  int
	events [][]byte
	ch     chan struct{}
}

func newMemLog(shard int) *memLog { return &memLog{shard: shard, ch: make(chan struct{})} }

func (l *memLog) add(t ledger.EventType, account string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	seq := uint64(len(l.events) + 1)
	b, _ := json.Marshal(ledger.Event{Shard: l.shard, Seq: seq, Type: t,
		Balances: []ledger.Balance{{Account: account, Currency: "USD"}}})
	l.events = append(l.events, b)
	close(l.ch)
	l.ch = make(chan struct{})
}

func (l *memLog) EventsRaw(after uint64, limit int) ([][]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if after >= uint64(len(l.events)) {
		return nil, nil
	}
	end := min(uint64(len(l.events)), after+uint64(limit))
	return append([][]byte(nil), l.events[after:end]...), nil
}

func (l *memLog) Applied() (uint64, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return 0, uint64(len(l.events))
}

func (l *memLog) WaitSeq(ctx context.Context, seq uint64) error {
	for {
		l.mu.Lock()
		ch, n := l.ch, uint64(len(l.events))
		l.mu.Unlock()
		if n >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func TestShardCatchUpThenFollow(t *testing.T) {
	log := newMemLog(0)
	for i := 0; i < 2*Page+10; i++ {
		log.add(ledger.TransferPosted, "alice")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan uint64, 4*Page)
	done := make(chan error, 1)
	go func() {
		done <- Shard(ctx, log, 5, Options{Follow: true, Idle: 50 * time.Millisecond},
			func(seq uint64, raw []byte) error { got <- seq; return nil },
			func(uint64) error { return nil })
	}()
	want := uint64(6)
	for ; want <= 2*Page+10; want++ {
		if seq := <-got; seq != want {
			t.Fatalf("got seq %d, want %d", seq, want)
		}
	}
	log.add(ledger.TransferPosted, "bob")
	select {
	case seq := <-got:
		if seq != want {
			t.Fatalf("live event: got seq %d, want %d", seq, want)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a live event was not delivered")
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Shard ended with %v, want context.Canceled", err)
	}
}

func TestShardFilterAndProgress(t *testing.T) {
	log := newMemLog(1)
	log.add(ledger.AccountOpened, "alice")
	log.add(ledger.TransferPosted, "bob")
	log.add(ledger.TransferPosted, "alice")
	f, err := ParseFilter("TransferPosted", "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	var seqs, marks []uint64
	err = Shard(context.Background(), log, 0, Options{Filter: f},
		func(seq uint64, raw []byte) error { seqs = append(seqs, seq); return nil },
		func(seq uint64) error { marks = append(marks, seq); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs) != "[3]" || fmt.Sprint(marks) != "[3]" {
		t.Fatalf("events %v progress %v, want [3] and [3]", seqs, marks)
	}
	// Idle and filtered out: progress still moves.
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	go func() { time.Sleep(50 * time.Millisecond); log.add(ledger.TransferPosted, "carol") }()
	marks = nil
	_ = Shard(ctx, log, 3, Options{Filter: f, Follow: true, Idle: 100 * time.Millisecond},
		func(seq uint64, raw []byte) error { t.Errorf("event %d passed the filter", seq); return nil },
		func(seq uint64) error { marks = append(marks, seq); return nil })
	if len(marks) == 0 || marks[len(marks)-1] != 4 {
		t.Fatalf("progress %v, want it to reach 4", marks)
	}
}

func TestParseFilterRefuses(t *testing.T) {
	for _, c := range [][3]string{{"Nope", "", ""}, {"", "bad id!", ""}, {"", "", "usd"}} {
		if _, err := ParseFilter(c[0], c[1], c[2]); err == nil {
			t.Errorf("ParseFilter%q: no error", c)
		}
	}
}

func TestAllInterleavesInShardOrder(t *testing.T) {
	logs := []*memLog{newMemLog(0), newMemLog(1), newMemLog(2)}
	for i := 0; i < 500; i++ {
		logs[i%3].add(ledger.TransferPosted, "a")
	}
	in := []Log{logs[0], logs[1], logs[2]}
	last := []uint64{10, 0, 0}
	var final []uint64
	n := 0
	err := All(context.Background(), in, []uint64{10, 0, 0}, Options{},
		func(sh int, seq uint64, raw []byte) error {
			if seq != last[sh]+1 {
				return fmt.Errorf("shard %d: seq %d after %d", sh, seq, last[sh])
			}
			last[sh] = seq
			n++
			return nil
		}, func(pos []uint64) error { final = append([]uint64(nil), pos...); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if n != 490 {
		t.Fatalf("%d events, want 490", n)
	}
	_ = final
}

func TestAllLeaksNoGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	logs := []Log{newMemLog(0), newMemLog(1)}
	for k := 0; k < 20; k++ {
		ctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(5 * time.Millisecond); cancel() }()
		_ = All(ctx, logs, []uint64{0, 0}, Options{Follow: true, Idle: 10 * time.Millisecond},
			func(int, uint64, []byte) error { return nil }, func([]uint64) error { return nil })
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after, %d before", n, before)
	}
}

func TestPositions(t *testing.T) {
	pos, err := ParsePositions("0:42,3:99", 4)
	if err != nil || fmt.Sprint(pos) != "[42 0 0 99]" || FormatPositions(pos) != "0:42,1:0,2:0,3:99" {
		t.Fatalf("got %v %v", pos, err)
	}
	pairs, err := ParsePairs("3:9, 7:1", 0)
	if err != nil || len(pairs) != 2 || pairs[3] != 9 || pairs[7] != 1 {
		t.Fatalf("ParsePairs with no shard count: %v %v", pairs, err)
	}
	for _, bad := range []string{"x", "0:1,0:2", "4:1", "0:-1", "-1:3", "0:", "+1:2", "1:+2"} {
		if _, err := ParsePositions(bad, 4); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// countingLog counts the events read from it.
type countingLog struct {
	*memLog
	mu   sync.Mutex
	read int
}

func (l *countingLog) EventsRaw(after uint64, limit int) ([][]byte, error) {
	page, err := l.memLog.EventsRaw(after, limit)
	l.mu.Lock()
	l.read += len(page)
	l.mu.Unlock()
	return page, err
}

// TestSlowReaderIsBounded: a reader that stops reading holds the stream
// to a bounded number of pages read ahead, however long the log is; it is
// fed from storage when it reads again.
func TestSlowReaderIsBounded(t *testing.T) {
	logs := make([]Log, 2)
	counts := make([]*countingLog, 2)
	for i := range logs {
		counts[i] = &countingLog{memLog: newMemLog(i)}
		for k := 0; k < 50*Page; k++ {
			counts[i].add(ledger.TransferPosted, "a")
		}
		logs[i] = counts[i]
	}
	release := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got atomic.Int64
	done := make(chan error, 1)
	go func() {
		done <- All(ctx, logs, []uint64{0, 0}, Options{Follow: true}, func(int, uint64, []byte) error {
			if got.Add(1) == 1 {
				<-release // the reader stalls on its first event
			}
			return nil
		}, func([]uint64) error { return nil })
	}()
	time.Sleep(300 * time.Millisecond)
	for i, c := range counts {
		c.mu.Lock()
		read := c.read
		c.mu.Unlock()
		t.Logf("shard %d: %d events read while the reader stalled", i, read)
		// The writer holds one item, the queue holds queue more, and each
		// reader one page of its own plus one it is handing over.
		if limit := (queue + 3) * Page; read > limit {
			t.Errorf("shard %d: %d events read ahead of a stalled reader, want at most %d", i, read, limit)
		}
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for got.Load() < 100*Page && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if n := got.Load(); n != 100*Page {
		t.Fatalf("the reader got %d events after it resumed, want %d", n, 100*Page)
	}
}

// TestFilterReadsEveryForm: an event matches alike as the API's JSON and
// in either stored form (JSON for a version-1 entry's event, binary
// otherwise).
func TestFilterReadsEveryForm(t *testing.T) {
	f, err := ParseFilter("TransferPosted", "alice", "USD")
	if err != nil {
		t.Fatal(err)
	}
	for _, enc := range []uint8{ledger.EncJSON, ledger.EncBinary} {
		e := ledger.Event{Seq: 1, Type: ledger.TransferPosted, Enc: enc,
			Data:     ledger.Data{Transfer: &ledger.Transfer{ID: "t", Debit: "bob", Credit: "alice", Amount: 1}, Currency: "USD"},
			Balances: []ledger.Balance{{Account: "alice", Currency: "USD", CreditsPosted: 1}}}
		e.Seal()
		js, _ := json.Marshal(&e)
		for _, raw := range [][]byte{e.Raw, js} {
			if ok, err := f.Match(raw); !ok || err != nil {
				t.Errorf("enc %d, %.20q: match %v, %v", enc, raw, ok, err)
			}
		}
	}
	if _, err := f.Match([]byte{9, 9}); err == nil {
		t.Error("an undecodable event matched")
	}
}
