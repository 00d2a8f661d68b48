package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tally/api/wire"
	"tally/ledger"
)

// chain builds shard's log of n events with a real hash chain.
func chain(shard, n int) []ledger.Event {
	var out []ledger.Event
	var prev ledger.Hash
	for seq := 1; seq <= n; seq++ {
		e := ledger.Event{Shard: shard, Seq: uint64(seq), Type: ledger.TransferPosted, PrevHash: prev,
			Data: ledger.Data{Transfer: &ledger.Transfer{ID: fmt.Sprintf("t-%d-%d", shard, seq), Debit: "a", Credit: "b", Amount: 1}}}
		e.Seal()
		out = append(out, e)
		prev = e.Hash
	}
	return out
}

// streamNode is a fake node that serves the stream endpoints over fixed
// logs. Its knobs, set before use, make it misbehave.
type streamNode struct {
	logs [][]ledger.Event
	// cutAfter, when positive, ends each stream after that many events
	// without a final progress line, as a node that dies would.
	cutAfter int
	// rewind sends this many events before the requested position again.
	rewind int
	// mutate, when set, changes an event before it is sent.
	mutate func(e *ledger.Event)
	// epoch, when set, is the restore epoch the streams answer.
	epoch string

	mu      sync.Mutex
	streams int
	offsets map[string]map[int]uint64
	puts    []string
	srv     *httptest.Server
}

func newStreamNode(t *testing.T, logs [][]ledger.Event) *streamNode {
	t.Helper()
	n := &streamNode{logs: logs, offsets: map[string]map[int]uint64{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/cluster", n.cluster)
	mux.HandleFunc("GET /v1/events", n.events)
	mux.HandleFunc("GET /v1/shards/{shard}/events", n.events)
	mux.HandleFunc("GET /v1/shards/{shard}/hash", n.hash)
	mux.HandleFunc("GET /v1/consumers/{name}", n.consumer)
	mux.HandleFunc("PUT /v1/consumers/{name}/offsets/{shard}", n.setOffset)
	n.srv = httptest.NewServer(mux)
	t.Cleanup(n.srv.Close)
	return n
}

func (n *streamNode) addr() string { return strings.TrimPrefix(n.srv.URL, "http://") }

func (n *streamNode) cluster(w http.ResponseWriter, _ *http.Request) {
	var st wire.Cluster
	for i, l := range n.logs {
		st.Shards = append(st.Shards, wire.Shard{Shard: i, AppliedSeq: uint64(len(l))})
	}
	json.NewEncoder(w).Encode(st)
}

func (n *streamNode) hash(w http.ResponseWriter, r *http.Request) {
	sh, _ := strconv.Atoi(r.PathValue("shard"))
	seq, _ := strconv.Atoi(r.URL.Query().Get("seq"))
	var h ledger.Hash
	if seq > 0 {
		h = n.logs[sh][seq-1].Hash
	}
	json.NewEncoder(w).Encode(wire.HashAt{Shard: sh, Seq: uint64(seq), Hash: h})
}

func (n *streamNode) consumer(w http.ResponseWriter, r *http.Request) {
	n.mu.Lock()
	defer n.mu.Unlock()
	offs, ok := n.offsets[r.PathValue("name")]
	if !ok {
		w.WriteHeader(404)
		io.WriteString(w, `{"error": {"code": "consumer_not_found", "message": "no such consumer"}}`)
		return
	}
	c := wire.Consumer{Name: r.PathValue("name")}
	for i := range n.logs {
		c.Shards = append(c.Shards, wire.ConsumerShard{Shard: i, Seq: offs[i]})
	}
	json.NewEncoder(w).Encode(c)
}

func (n *streamNode) setOffset(w http.ResponseWriter, r *http.Request) {
	var in wire.OffsetIn
	json.NewDecoder(r.Body).Decode(&in)
	sh, _ := strconv.Atoi(r.PathValue("shard"))
	n.mu.Lock()
	defer n.mu.Unlock()
	name := r.PathValue("name")
	if n.offsets[name] == nil {
		n.offsets[name] = map[int]uint64{}
	}
	n.offsets[name][sh] = *in.Seq
	n.puts = append(n.puts, fmt.Sprintf("%d:%d", sh, *in.Seq))
	io.WriteString(w, `{}`)
}

// events streams one shard's or every shard's log from the positions
// asked for, then a progress line, and, with follow, waits for the
// reader to leave.
func (n *streamNode) events(w http.ResponseWriter, r *http.Request) {
	n.mu.Lock()
	n.streams++
	n.mu.Unlock()
	q := r.URL.Query()
	after := make([]uint64, len(n.logs))
	shards := []int{}
	if s := r.PathValue("shard"); s != "" {
		sh, _ := strconv.Atoi(s)
		shards = append(shards, sh)
		after[sh], _ = strconv.ParseUint(q.Get("after"), 10, 64)
	} else {
		for i := range n.logs {
			shards = append(shards, i)
		}
		for _, p := range strings.Split(q.Get("after"), ",") {
			sh, seq, _ := strings.Cut(p, ":")
			i, _ := strconv.Atoi(sh)
			after[i], _ = strconv.ParseUint(seq, 10, 64)
		}
	}
	sse := strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	line := func(b []byte) {
		if sse {
			io.WriteString(w, "data: ")
		}
		w.Write(b)
		io.WriteString(w, "\n")
		if sse {
			io.WriteString(w, "\n")
		}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	if n.epoch != "" {
		w.Header().Set("Tally-Epoch", n.epoch)
	}
	sent := 0
	for _, sh := range shards {
		from := after[sh] - min(after[sh], uint64(n.rewind))
		for _, e := range n.logs[sh][from:] {
			if n.cutAfter > 0 && sent == n.cutAfter {
				return
			}
			if n.mutate != nil {
				n.mutate(&e)
			}
			b, _ := json.Marshal(e)
			line(b)
			sent++
		}
	}
	if len(shards) == 1 {
		line(fmt.Appendf(nil, `{"progress": {"shard": %d, "seq": %d, "time": "2026-01-01T00:00:00Z"}}`, shards[0], len(n.logs[shards[0]])))
	} else {
		var seqs []string
		for i, l := range n.logs {
			seqs = append(seqs, fmt.Sprintf(`"%d": %d`, i, len(l)))
		}
		line(fmt.Appendf(nil, `{"progress": {"seqs": {%s}, "time": "2026-01-01T00:00:00Z"}}`, strings.Join(seqs, ", ")))
	}
	w.(http.Flusher).Flush()
	if q.Get("follow") == "true" {
		<-r.Context().Done()
	}
}

// collect is a handler that records what it is given.
type collect struct {
	mu   sync.Mutex
	seqs map[int][]uint64
}

func (c *collect) handle(_ context.Context, e ledger.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seqs == nil {
		c.seqs = map[int][]uint64{}
	}
	c.seqs[e.Shard] = append(c.seqs[e.Shard], e.Seq)
	return nil
}

func (c *collect) check(t *testing.T, want map[int]int) {
	t.Helper()
	for sh, n := range want {
		got := c.seqs[sh]
		if len(got) != n {
			t.Errorf("shard %d: %d events, want %d: %v", sh, len(got), n, got)
			continue
		}
		for i, seq := range got {
			if seq != uint64(i+1) {
				t.Errorf("shard %d: event %d has seq %d: %v", sh, i, seq, got)
				break
			}
		}
	}
}

func quickBackOff() SubscribeOptions {
	return SubscribeOptions{Timeout: time.Second}
}

func TestSubscribeFailsOverWithoutGapOrDuplicate(t *testing.T) {
	logs := [][]ledger.Event{chain(0, 30), chain(1, 20)}
	dying := newStreamNode(t, logs)
	dying.cutAfter = 7 // every stream it serves breaks after 7 events
	replaying := newStreamNode(t, logs)
	replaying.rewind = 3 // and the next one sends some again
	var got collect
	o := quickBackOff()
	o.Endpoints = []string{dying.addr(), replaying.addr()}
	if err := Subscribe(context.Background(), o, got.handle); err != nil {
		t.Fatal(err)
	}
	got.check(t, map[int]int{0: 30, 1: 20})
	dying.mu.Lock()
	defer dying.mu.Unlock()
	if dying.streams == 0 || replaying.streams == 0 {
		t.Errorf("streams: %d on the first endpoint, %d on the second", dying.streams, replaying.streams)
	}
}

func TestSubscribeShardsFollowAndStop(t *testing.T) {
	n := newStreamNode(t, [][]ledger.Event{chain(0, 5), chain(1, 4), chain(2, 3)})
	var got collect
	o := quickBackOff()
	o.Endpoints, o.Shards, o.Follow = []string{n.addr()}, []int{0, 2}, true
	o.After = map[int]uint64{2: 1}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Subscribe(ctx, o, func(ctx context.Context, e ledger.Event) error {
			got.handle(ctx, e)
			got.mu.Lock()
			defer got.mu.Unlock()
			if len(got.seqs[0]) == 5 && len(got.seqs[2]) == 2 {
				cancel()
			}
			return nil
		})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want the context's", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Subscribe did not return after cancel")
	}
	if fmt.Sprint(got.seqs[0], got.seqs[1], got.seqs[2]) != "[1 2 3 4 5] [] [2 3]" {
		t.Errorf("delivered %v", got.seqs)
	}
}

func TestSubscribeRefusesGapsAndForks(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(e *ledger.Event)
		hashes map[int]ledger.Hash
		fork   bool
	}{
		{name: "gap", mutate: func(e *ledger.Event) {
			if e.Seq >= 4 {
				e.Seq++
			}
		}},
		{name: "fork", fork: true, mutate: func(e *ledger.Event) {
			if e.Seq == 6 {
				e.PrevHash[0] ^= 1
			}
		}},
		{name: "wrong start hash", fork: true, hashes: map[int]ledger.Hash{0: {1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newStreamNode(t, [][]ledger.Event{chain(0, 10)})
			n.mutate = tt.mutate
			o := quickBackOff()
			o.Endpoints, o.After, o.Hashes = []string{n.addr()}, map[int]uint64{0: 2}, tt.hashes
			var got collect
			err := Subscribe(context.Background(), o, got.handle)
			ce, ok := errors.AsType[*ChainError](err)
			if !ok || !errors.Is(err, ErrChain) || ce.Fork != tt.fork {
				t.Fatalf("err = %v, want a chain error (fork %v)", err, tt.fork)
			}
			if n := len(got.seqs[0]); n > 3 {
				t.Errorf("%d events delivered past the break", n)
			}
		})
	}
}

func TestSubscribeCommitsConsumerOffsets(t *testing.T) {
	n := newStreamNode(t, [][]ledger.Event{chain(0, 8), chain(1, 5)})
	n.offsets["billing"] = map[int]uint64{0: 3}
	o := quickBackOff()
	o.Endpoints, o.Consumer = []string{n.addr()}, "billing"
	o.After = map[int]uint64{1: 4} // a stored consumer's offsets win
	var got collect
	if err := Subscribe(context.Background(), o, got.handle); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got.seqs[0], got.seqs[1]) != "[4 5 6 7 8] [1 2 3 4 5]" {
		t.Errorf("delivered %v", got.seqs)
	}
	if fmt.Sprint(n.offsets["billing"]) != "map[0:8 1:5]" {
		t.Errorf("stored offsets %v (puts %v)", n.offsets["billing"], n.puts)
	}

	// A new consumer that starts at the end stores where it started.
	o.Consumer, o.From, o.After = "audit", FromEnd, nil
	got = collect{}
	if err := Subscribe(context.Background(), o, got.handle); err != nil {
		t.Fatal(err)
	}
	if len(got.seqs) != 0 || fmt.Sprint(n.offsets["audit"]) != "map[0:8 1:5]" {
		t.Errorf("delivered %v, stored %v", got.seqs, n.offsets["audit"])
	}
}

func TestSubscribeHandlerErrorEndsIt(t *testing.T) {
	n := newStreamNode(t, [][]ledger.Event{chain(0, 8)})
	n.offsets["c"] = map[int]uint64{}
	o := quickBackOff()
	o.Endpoints, o.Consumer = []string{n.addr()}, "c"
	boom := errors.New("boom")
	err := Subscribe(context.Background(), o, func(_ context.Context, e ledger.Event) error {
		if e.Seq == 5 {
			return boom
		}
		return nil
	})
	if err != boom {
		t.Fatalf("err = %v, want the handler's", err)
	}
	if n.offsets["c"][0] != 4 {
		t.Errorf("stored offset %d, want 4: the failed event is delivered again", n.offsets["c"][0])
	}
}

func TestSubscribeGivesUpOnRefusal(t *testing.T) {
	_, c := newFake(t, fixed(400, `{"error": {"code": "invalid_request", "message": "types: bad"}}`))
	err := Subscribe(context.Background(), SubscribeOptions{Endpoints: []string{strings.TrimPrefix(c.Addr(), "http://")}},
		func(context.Context, ledger.Event) error { return nil })
	if e, ok := errors.AsType[*Error](err); !ok || e.Status != 400 {
		t.Fatalf("err = %v, want the 400", err)
	}
}

// TestSubscribeSeesRestore: a stream of another restore epoch than the
// positions held ends the subscription with ErrRestored, whether the
// epoch changes between two streams or differs from the one given.
func TestSubscribeSeesRestore(t *testing.T) {
	logs := [][]ledger.Event{chain(0, 30)}
	before := newStreamNode(t, logs)
	before.cutAfter = 7
	after := newStreamNode(t, logs)
	after.epoch = "1"
	o := quickBackOff()
	o.Endpoints = []string{before.addr(), after.addr()}
	var got collect
	if err := Subscribe(context.Background(), o, got.handle); !errors.Is(err, ErrRestored) {
		t.Fatalf("epoch 0 then 1: Subscribe = %v, want ErrRestored", err)
	}
	if len(got.seqs[0]) != 7 {
		t.Fatalf("%d events delivered before the restore was seen, want 7", len(got.seqs[0]))
	}
	for _, tc := range []struct {
		epoch uint64
		want  error
	}{{1, nil}, {2, ErrRestored}} {
		o := quickBackOff()
		o.Endpoints, o.Epoch = []string{after.addr()}, tc.epoch
		var got collect
		if err := Subscribe(context.Background(), o, got.handle); !errors.Is(err, tc.want) {
			t.Fatalf("Epoch %d on an epoch-1 stream: Subscribe = %v, want %v", tc.epoch, err, tc.want)
		}
	}
}
