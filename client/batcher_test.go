package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"tally/api/wire"
	"tally/edge"
	"tally/ledger"
)

// batchFake is a server of POST /v1/transfers and /v1/accounts that
// records the items of every request and answers each item with a result
// that names it (Seq: the transfer's amount), unless fail says otherwise.
// While hold is set, a request waits for release before it is answered.
type batchFake struct {
	t       *testing.T
	mu      sync.Mutex
	reqs    [][]string // the item ids of each request, in arrival order
	bodies  []int64    // the body size of each request
	hold    bool
	release chan struct{}
	fail    func(n int) (int, string) // the answer to the n-th request (from 0); 0: results
}

func newBatchFake(t *testing.T) (*batchFake, *Client) {
	t.Helper()
	f := &batchFake{t: t, release: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	return f, New(srv.URL)
}

func (f *batchFake) serve(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Transfers []ledger.Transfer `json:"transfers"`
		Accounts  []wire.AccountIn  `json:"accounts"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		f.t.Errorf("request body: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// The batcher must never send an item the API would refuse.
	if e := edge.CheckTransfers(in.Transfers); e != nil {
		f.t.Errorf("the server received a bad transfer: %v", e)
	}
	if e := edge.CheckAccounts(in.Accounts); e != nil {
		f.t.Errorf("the server received a bad account: %v", e)
	}
	var ids []string
	var res []ledger.Result
	for _, tr := range in.Transfers {
		ids = append(ids, tr.ID)
		res = append(res, ledger.Result{ID: tr.ID, Result: ledger.OK, Status: ledger.StatusPosted, Seq: uint64(tr.Amount)})
	}
	for _, a := range in.Accounts {
		ids = append(ids, a.ID)
		res = append(res, ledger.Result{ID: a.ID, Result: ledger.OK})
	}
	f.mu.Lock()
	n := len(f.reqs)
	f.reqs = append(f.reqs, ids)
	f.bodies = append(f.bodies, r.ContentLength)
	hold, fail := f.hold, f.fail
	f.mu.Unlock()
	if hold {
		<-f.release
	}
	status, body := 0, ""
	if fail != nil {
		status, body = fail(n)
	}
	if status == 0 {
		b, _ := json.Marshal(wire.Results{Results: res})
		status, body = http.StatusOK, string(b)
	}
	if status < 0 {
		// Break the connection after the request arrived.
		hj, _ := w.(http.Hijacker)
		conn, _, _ := hj.Hijack()
		conn.Close()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprint(w, body)
}

// sizes returns the number of items of every request so far.
func (f *batchFake) sizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for _, r := range f.reqs {
		out = append(out, len(r))
	}
	return out
}

// sent reports whether any request carried id.
func (f *batchFake) sent(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.reqs {
		for _, x := range r {
			if x == id {
				return true
			}
		}
	}
	return false
}

// waitFor waits until cond holds, or fails the test after 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// queued is the number of calls waiting in the transfers lane.
func queued(b *Batcher) int {
	b.transfers.mu.Lock()
	defer b.transfers.mu.Unlock()
	return len(b.transfers.queue)
}

func xfer(id string, amount int64) ledger.Transfer {
	return ledger.Transfer{ID: id, Debit: "alice", Credit: "bob", Amount: amount}
}

func newTestBatcher(t *testing.T, c *Client, o BatcherOptions) *Batcher {
	t.Helper()
	b, err := NewBatcher(c, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

type outcome struct {
	res ledger.Result
	err error
}

// goTransfers starts one call per transfer and returns their outcomes'
// channels, in the same order.
func goTransfers(ctx context.Context, b *Batcher, ts []ledger.Transfer) []chan outcome {
	out := make([]chan outcome, len(ts))
	for i, tr := range ts {
		out[i] = make(chan outcome, 1)
		go func() {
			r, err := b.Transfer(ctx, tr)
			out[i] <- outcome{r, err}
		}()
	}
	return out
}

// TestBatcherCoalesces holds the first request at the server while the
// other calls queue, then checks how they were sent and that each call got
// its own result.
func TestBatcherCoalesces(t *testing.T) {
	for _, tc := range []struct {
		name     string
		o        BatcherOptions
		calls    int
		requests int // expected requests; 0: at least ceil((calls-1)/MaxBatch)+1
		maxSize  int
	}{
		{"one in flight, the rest in one request", BatcherOptions{}, 50, 2, 49},
		{"MaxBatch cuts the queue", BatcherOptions{MaxBatch: 10}, 41, 5, 10},
		{"two in flight", BatcherOptions{MaxInFlight: 2, MaxBatch: 20}, 42, 0, 20},
		{"a lone call", BatcherOptions{}, 1, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, c := newBatchFake(t)
			f.hold = true
			b := newTestBatcher(t, c, tc.o)
			// The first call occupies the only slot(s); the others queue.
			inFlight := max(tc.o.MaxInFlight, 1)
			first := make([]ledger.Transfer, 0, tc.calls)
			for i := range tc.calls {
				first = append(first, xfer(fmt.Sprintf("t%d", i), int64(100+i)))
			}
			var head []chan outcome
			for i := range min(inFlight, tc.calls) {
				head = append(head, goTransfers(context.Background(), b, first[i:i+1])...)
				waitFor(t, "a first request", func() bool { return len(f.sizes()) == i+1 })
			}
			rest := goTransfers(context.Background(), b, first[len(head):])
			waitFor(t, "the calls to queue", func() bool { return queued(b) == len(rest) })
			close(f.release)
			for i, ch := range append(head, rest...) {
				o := <-ch
				if o.err != nil {
					t.Fatalf("call %d: %v", i, o.err)
				}
				if o.res.ID != first[i].ID || o.res.Seq != uint64(first[i].Amount) {
					t.Errorf("call %d (%s, amount %d) got the result of %s (seq %d)", i, first[i].ID, first[i].Amount, o.res.ID, o.res.Seq)
				}
			}
			sizes := f.sizes()
			total := 0
			for _, s := range sizes {
				total += s
				if s > tc.maxSize {
					t.Errorf("a request of %d items, above %d: %v", s, tc.maxSize, sizes)
				}
			}
			if total != tc.calls {
				t.Errorf("requests carried %d items for %d calls: %v", total, tc.calls, sizes)
			}
			want := tc.requests
			if want == 0 {
				want = inFlight + (tc.calls-inFlight+tc.o.MaxBatch-1)/tc.o.MaxBatch
			}
			if len(sizes) != want {
				t.Errorf("%d requests %v, want %d", len(sizes), sizes, want)
			}
			if st := b.Stats(); st.Requests != int64(len(sizes)) || st.Items != int64(tc.calls) {
				t.Errorf("stats %+v, want %d requests, %d items", st, len(sizes), tc.calls)
			}
		})
	}
}

// TestBatcherConcurrentCallers runs many goroutines without any hold: every
// call gets its own result, in fewer requests than calls.
func TestBatcherConcurrentCallers(t *testing.T) {
	f, c := newBatchFake(t)
	b := newTestBatcher(t, c, BatcherOptions{})
	const workers, each = 32, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for k := range each {
				tr := xfer(fmt.Sprintf("w%d-%d", w, k), int64(1+w*each+k))
				r, err := b.Transfer(context.Background(), tr)
				if err != nil || r.ID != tr.ID || r.Seq != uint64(tr.Amount) {
					t.Errorf("%s: %+v, %v", tr.ID, r, err)
				}
			}
		})
	}
	wg.Wait()
	if n := len(f.sizes()); n >= workers*each {
		t.Errorf("%d requests for %d calls: nothing was coalesced", n, workers*each)
	}
}

// TestBatcherRequestErrors checks that a request's failure is every
// call's error in it, classified as the caller alone would see it.
func TestBatcherRequestErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int // -1: the connection breaks
		body   string
		check  func(err error) bool
		code   string
	}{
		{"503 unavailable", 503, `{"error":{"code":"unavailable","message":"no leader"}}`, IsUnavailable, edge.CodeUnavailable},
		{"504 outcome unknown", 504, `{"error":{"code":"outcome_unknown","message":"timed out"}}`, IsOutcomeUnknown, edge.CodeOutcomeUnknown},
		{"broken connection", -1, "", IsOutcomeUnknown, ""},
		{"500 internal", 500, `{"error":{"code":"internal","message":"boom"}}`, func(err error) bool {
			return !IsUnavailable(err) && !IsOutcomeUnknown(err)
		}, "internal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, c := newBatchFake(t)
			f.hold = true
			f.fail = func(int) (int, string) { return tc.status, tc.body }
			b := newTestBatcher(t, c, BatcherOptions{})
			ts := []ledger.Transfer{xfer("a", 1), xfer("b", 2), xfer("c", 3), xfer("d", 4)}
			head := goTransfers(context.Background(), b, ts[:1])
			waitFor(t, "the first request", func() bool { return len(f.sizes()) == 1 })
			rest := goTransfers(context.Background(), b, ts[1:])
			waitFor(t, "the calls to queue", func() bool { return queued(b) == 3 })
			close(f.release)
			var errs []*Error
			for i, ch := range append(head, rest...) {
				o := <-ch
				if o.err == nil || !tc.check(o.err) {
					t.Fatalf("call %d: error %v is not classified as %s", i, o.err, tc.name)
				}
				if tc.code == "" {
					continue
				}
				e, ok := errors.AsType[*Error](o.err)
				if !ok || e.Code != tc.code || e.Status != tc.status {
					t.Fatalf("call %d: %v, want an *Error %d %s", i, o.err, tc.status, tc.code)
				}
				errs = append(errs, e)
			}
			if len(errs) == 4 && errs[1] == errs[2] {
				t.Error("two calls share one *Error")
			}
			if got := f.sizes(); len(got) != 2 || got[1] != 3 {
				t.Errorf("requests %v, want [1 3]", got)
			}
		})
	}
}

// TestBatcherBadItem checks that an item the API would refuse fails only
// its own call, before anything is sent.
func TestBatcherBadItem(t *testing.T) {
	for _, tc := range []struct {
		name   string
		bad    ledger.Transfer
		result ledger.Code // the 400's result code; "" for ErrLinked
	}{
		{"zero amount", xfer("bad", 0), ledger.AmountInvalid},
		{"same accounts", ledger.Transfer{ID: "bad", Debit: "alice", Credit: "alice", Amount: 1}, ledger.AccountsMustBeDifferent},
		{"invalid id", xfer("bad id", 1), ledger.InvalidID},
		{"reserved id", xfer("@bad", 1), ledger.InvalidID},
		{"timeout without pending", ledger.Transfer{ID: "bad", Debit: "alice", Credit: "bob", Amount: 1, TimeoutSeconds: 5}, ledger.InvalidRequest},
		{"linked", ledger.Transfer{ID: "bad", Debit: "alice", Credit: "bob", Amount: 1, Linked: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, c := newBatchFake(t)
			b := newTestBatcher(t, c, BatcherOptions{})
			ts := []ledger.Transfer{xfer("a", 1), tc.bad, xfer("c", 3)}
			for i, ch := range goTransfers(context.Background(), b, ts) {
				o := <-ch
				if i != 1 {
					if o.err != nil || o.res.ID != ts[i].ID {
						t.Errorf("good call %d: %+v, %v", i, o.res, o.err)
					}
					continue
				}
				if tc.result == "" {
					if !errors.Is(o.err, ErrLinked) {
						t.Errorf("linked transfer: %v, want ErrLinked", o.err)
					}
					continue
				}
				e, ok := errors.AsType[*Error](o.err)
				if !ok || e.Status != http.StatusBadRequest || e.Code != edge.CodeInvalid ||
					e.Result != string(tc.result) || e.Index != 0 {
					t.Errorf("bad call: %v (%+v), want a 400 with result %s at index 0", o.err, e, tc.result)
				}
			}
			if f.sent(tc.bad.ID) {
				t.Error("the bad item reached the server")
			}
		})
	}
}

// TestBatcherAccounts checks CreateAccount: batched on its own endpoint,
// a bad account failing only its call.
func TestBatcherAccounts(t *testing.T) {
	f, c := newBatchFake(t)
	b := newTestBatcher(t, c, BatcherOptions{})
	accs := []ledger.Account{{ID: "alice", Currency: "USD"}, {ID: "bob", Currency: "usd"}, {ID: "carol", Currency: "EUR"}}
	var wg sync.WaitGroup
	errs := make([]error, len(accs))
	for i, a := range accs {
		wg.Go(func() {
			r, err := b.CreateAccount(context.Background(), a)
			if err == nil && r.ID != a.ID {
				err = fmt.Errorf("result for %s", r.ID)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if errs[0] != nil || errs[2] != nil {
		t.Errorf("good accounts: %v", errs)
	}
	if e, ok := errors.AsType[*Error](errs[1]); !ok || e.Result != string(ledger.CurrencyInvalid) {
		t.Errorf("bad currency: %v", errs[1])
	}
	if f.sent("bob") {
		t.Error("the bad account reached the server")
	}
}

// TestBatcherCancel checks that a call's ctx bounds only its own wait:
// removed while queued, outcome unknown once sent.
func TestBatcherCancel(t *testing.T) {
	f, c := newBatchFake(t)
	f.hold = true
	b := newTestBatcher(t, c, BatcherOptions{})
	sentCtx, cancelSent := context.WithCancel(context.Background())
	head := goTransfers(sentCtx, b, []ledger.Transfer{xfer("in-flight", 1)})
	waitFor(t, "the first request", func() bool { return len(f.sizes()) == 1 })
	queuedCtx, cancelQueued := context.WithCancel(context.Background())
	gone := goTransfers(queuedCtx, b, []ledger.Transfer{xfer("gone", 2)})
	stay := goTransfers(context.Background(), b, []ledger.Transfer{xfer("stay", 3)})
	waitFor(t, "the calls to queue", func() bool { return queued(b) == 2 })

	cancelQueued()
	if o := <-gone[0]; !errors.Is(o.err, context.Canceled) || IsOutcomeUnknown(o.err) {
		t.Errorf("a call cancelled while queued: %v, want context.Canceled, not sent", o.err)
	}
	cancelSent()
	o := <-head[0]
	if !errors.Is(o.err, context.Canceled) || !IsOutcomeUnknown(o.err) {
		t.Errorf("a call cancelled in flight: %v, want context.Canceled and outcome unknown", o.err)
	}
	close(f.release)
	if o := <-stay[0]; o.err != nil || o.res.ID != "stay" {
		t.Errorf("the call beside the cancelled one: %+v, %v", o.res, o.err)
	}
	if f.sent("gone") {
		t.Error("a call cancelled while queued was sent")
	}
	if got := f.sizes(); len(got) != 2 || got[1] != 1 {
		t.Errorf("requests %v, want [1 1]", got)
	}
}

// TestBatcherQueueFull checks that a call waits for room in a full
// queue, within its ctx.
func TestBatcherQueueFull(t *testing.T) {
	f, c := newBatchFake(t)
	f.hold = true
	b := newTestBatcher(t, c, BatcherOptions{MaxBatch: 2, MaxQueued: 2})
	head := goTransfers(context.Background(), b, []ledger.Transfer{xfer("a", 1)})
	waitFor(t, "the first request", func() bool { return len(f.sizes()) == 1 })
	// a is sent; b and c fill the queue.
	more := goTransfers(context.Background(), b, []ledger.Transfer{xfer("b", 2), xfer("c", 3)})
	waitFor(t, "the queue to fill", func() bool { return queued(b) == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := b.Transfer(ctx, xfer("d", 4)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a call into a full queue: %v, want its deadline", err)
	}
	close(f.release)
	for _, ch := range append(head, more...) {
		if o := <-ch; o.err != nil {
			t.Error(o.err)
		}
	}
}

// TestBatcherClose checks that Close sends what is queued, waits for the
// answers, and that later calls fail.
func TestBatcherClose(t *testing.T) {
	f, c := newBatchFake(t)
	f.hold = true
	b := newTestBatcher(t, c, BatcherOptions{})
	head := goTransfers(context.Background(), b, []ledger.Transfer{xfer("a", 1)})
	waitFor(t, "the first request", func() bool { return len(f.sizes()) == 1 })
	rest := goTransfers(context.Background(), b, []ledger.Transfer{xfer("b", 2), xfer("c", 3)})
	waitFor(t, "the calls to queue", func() bool { return queued(b) == 2 })
	closed := make(chan struct{})
	go func() {
		b.Close()
		close(closed)
	}()
	waitFor(t, "Close to refuse calls", func() bool {
		b.transfers.mu.Lock()
		defer b.transfers.mu.Unlock()
		return b.transfers.closed
	})
	select {
	case <-closed:
		t.Fatal("Close returned before the queued calls were answered")
	default:
	}
	close(f.release)
	<-closed
	if got := f.sizes(); len(got) != 2 || got[1] != 2 {
		t.Errorf("requests %v when Close returned, want [1 2]", got)
	}
	for i, ch := range append(head, rest...) {
		if o := <-ch; o.err != nil {
			t.Errorf("call %d: %v", i, o.err)
		}
	}
	if _, err := b.Transfer(context.Background(), xfer("late", 1)); !errors.Is(err, ErrBatcherClosed) {
		t.Errorf("a call after Close: %v, want ErrBatcherClosed", err)
	}
	if _, err := b.CreateAccount(context.Background(), ledger.Account{ID: "x", Currency: "USD"}); !errors.Is(err, ErrBatcherClosed) {
		t.Errorf("an account after Close: %v, want ErrBatcherClosed", err)
	}
	b.Close() // idempotent
}

// TestBatcherBodyLimit checks that a request stays within the API's body
// limit whatever MaxBatch allows.
func TestBatcherBodyLimit(t *testing.T) {
	f, c := newBatchFake(t)
	f.hold = true
	b := newTestBatcher(t, c, BatcherOptions{})
	big := func(id string) ledger.Transfer {
		tr := xfer(id, 1)
		tr.Metadata = map[string]string{"k": strings.Repeat("<", 1000)} // escaped to 6 bytes each
		return tr
	}
	head := goTransfers(context.Background(), b, []ledger.Transfer{big("first")})
	waitFor(t, "the first request", func() bool { return len(f.sizes()) == 1 })
	const n = 1000 // about 6 MB encoded
	ts := make([]ledger.Transfer, n)
	for i := range ts {
		ts[i] = big(fmt.Sprintf("t%d", i))
	}
	rest := goTransfers(context.Background(), b, ts)
	waitFor(t, "the calls to queue", func() bool { return queued(b) == n })
	close(f.release)
	for _, ch := range append(head, rest...) {
		if o := <-ch; o.err != nil {
			t.Fatal(o.err)
		}
	}
	if got := f.sizes(); len(got) < 3 {
		t.Errorf("requests %v: %d large items went in fewer than 2 requests", got, n)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, size := range f.bodies {
		if size <= 0 || size > edge.MaxBody {
			t.Errorf("request %d: body of %d bytes, limit %d", i, size, edge.MaxBody)
		}
	}
}

func TestNewBatcherOptions(t *testing.T) {
	c := New("127.0.0.1:1")
	for _, o := range []BatcherOptions{
		{MaxBatch: -1}, {MaxBatch: ledger.MaxBatch + 1}, {MaxInFlight: -1}, {MaxQueued: -1}, {Timeout: -time.Second},
	} {
		if _, err := NewBatcher(c, o); err == nil {
			t.Errorf("NewBatcher(%+v) accepted", o)
		}
	}
}
