package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"tally/api/wire"
	"tally/edge"
	"tally/ledger"
)

// DefaultBatchTimeout bounds one request of a Batcher when
// BatcherOptions.Timeout is zero. The Client's own timeout, if any, also
// applies.
const DefaultBatchTimeout = 30 * time.Second

// ErrBatcherClosed is the error of a call made after Close.
var ErrBatcherClosed = errors.New("client: the batcher is closed")

// ErrLinked is the error of a linked transfer given to a Batcher: the
// members of a chain must travel in one request, in order, from one
// caller, and the batcher sends each call as one item among other
// callers' items. Send a chain with Client.CreateTransfers.
var ErrLinked = errors.New("client: a linked transfer cannot go through a batcher: a chain must travel whole in one caller's request; use CreateTransfers")

// BatcherOptions configure a Batcher. The zero value is valid.
type BatcherOptions struct {
	// MaxBatch bounds the items of one request, 1 to ledger.MaxBatch
	// (0: ledger.MaxBatch). A request also stays within the API's body
	// limit (edge.MaxBody), whatever MaxBatch says.
	MaxBatch int
	// MaxInFlight bounds the requests in flight at once for each kind of
	// item (transfers, accounts) (0: 1). Calls that arrive while every
	// slot is taken wait and leave together in the next request.
	MaxInFlight int
	// MaxQueued bounds the calls waiting to be sent (0: 4 x MaxBatch); a
	// call that finds the queue full waits for room, within its ctx.
	MaxQueued int
	// Timeout bounds each request (0: DefaultBatchTimeout).
	Timeout time.Duration
}

// BatcherStats count what a Batcher sent: requests and the items they
// carried.
type BatcherStats struct {
	Requests int64 `json:"requests"`
	Items    int64 `json:"items"`
}

// Batcher coalesces concurrent calls from many goroutines into batch
// requests (POST /v1/transfers, POST /v1/accounts), each call getting its
// own item's result. Batching is natural: a call that arrives while
// MaxInFlight requests are in flight waits, and every call waiting when a
// slot frees leaves in the next request (at most MaxBatch items); with a
// slot free a call leaves at once. No timer ever holds a call back.
//
// The contract:
//
//   - Each call is one item. Linked transfers are refused with ErrLinked:
//     a chain must travel whole in one caller's request.
//   - Each item is checked first with the checks the API runs on it
//     (ledger.CheckTransfer, ledger.CheckAccount, as edge.CheckTransfers
//     and edge.CheckAccounts do). A bad item fails only its own call, with
//     the 400 *Error the API would have answered to it alone (index 0),
//     and never reaches the server, so one caller's bad item cannot fail
//     the others' request.
//   - A failure of a whole request is every call's error in it: an
//     *Error with the answer's status and code (503 unavailable: nothing
//     was applied; 504 outcome_unknown: some or all of it may have been),
//     or a transport error that IsUnavailable or IsOutcomeUnknown
//     classify. Retrying a call with the same id is safe: transfer and
//     account ids are idempotency keys, and an item that was applied
//     answers exists. A request can span shards: when one shard's part
//     fails after another's was applied, every call of the request gets
//     the 504, including calls whose own transfer was applied.
//   - Two calls with the same id may share a request. The ledger decides
//     a batch in order, so the later item answers exists (or
//     exists_with_different_fields), as it would if the two had been sent
//     one after the other (ledger/testdata/idempotency.txt).
//   - A request's answer is the slowest of its items: a same-shard
//     transfer waits for the sagas of the cross-shard ones beside it.
//   - ctx bounds only its own call's wait. A call whose ctx ends before
//     its item is sent is removed and returns ctx's error; nothing of it
//     reaches the server. A call whose ctx ends while its request is in
//     flight returns an error that wraps ctx's and that IsOutcomeUnknown
//     reports: the item may still be applied; retry with the same id to
//     learn its result. The request itself runs on, bounded by
//     BatcherOptions.Timeout.
//
// A Batcher is safe for concurrent use by many goroutines; Transfer and
// CreateAccount block until their item's answer, an error, or ctx's end.
// It owns up to MaxInFlight goroutines per kind of item, which run only
// while calls are waiting or in flight. Close sends what is queued, waits
// for the answers, and makes later calls fail with ErrBatcherClosed.
type Batcher struct {
	c         *Client
	o         BatcherOptions
	transfers *lane
	accounts  *lane
	requests  atomic.Int64
	items     atomic.Int64
}

// NewBatcher returns a Batcher that sends through c. Options out of range
// are an error.
func NewBatcher(c *Client, o BatcherOptions) (*Batcher, error) {
	if o.MaxBatch == 0 {
		o.MaxBatch = ledger.MaxBatch
	}
	if o.MaxInFlight == 0 {
		o.MaxInFlight = 1
	}
	if o.MaxQueued == 0 {
		o.MaxQueued = 4 * o.MaxBatch
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultBatchTimeout
	}
	switch {
	case o.MaxBatch < 1 || o.MaxBatch > ledger.MaxBatch:
		return nil, fmt.Errorf("client: batcher: MaxBatch %d is not 1 to %d", o.MaxBatch, ledger.MaxBatch)
	case o.MaxInFlight < 1:
		return nil, fmt.Errorf("client: batcher: MaxInFlight %d is below 1", o.MaxInFlight)
	case o.MaxQueued < 1:
		return nil, fmt.Errorf("client: batcher: MaxQueued %d is below 1", o.MaxQueued)
	case o.Timeout < 0:
		return nil, fmt.Errorf("client: batcher: Timeout %v is negative", o.Timeout)
	}
	b := &Batcher{c: c, o: o}
	b.transfers = newLane(b, "transfers", "/v1/transfers")
	b.accounts = newLane(b, "accounts", "/v1/accounts")
	return b, nil
}

// Transfer submits t in the next request and returns its result. Business
// rejections are results, not errors; see Batcher for the errors.
func (b *Batcher) Transfer(ctx context.Context, t ledger.Transfer) (ledger.Result, error) {
	if t.Linked {
		return ledger.Result{}, fmt.Errorf("transfer %s: %w", t.ID, ErrLinked)
	}
	if p := ledger.CheckTransfer(&t); p != nil {
		return ledger.Result{}, itemError(edge.ItemError("transfers", 0, p))
	}
	raw, err := json.Marshal(t)
	if err != nil {
		return ledger.Result{}, fmt.Errorf("transfer %s: encode: %w", t.ID, err)
	}
	return b.transfers.submit(ctx, t.ID, raw)
}

// CreateAccount creates a in the next request and returns its result.
// Only ID, Currency, AllowNegative and Metadata are sent, as with
// CreateAccounts.
func (b *Batcher) CreateAccount(ctx context.Context, a ledger.Account) (ledger.Result, error) {
	in := wire.AccountIn{ID: a.ID, Currency: a.Currency, AllowNegative: a.AllowNegative, Metadata: a.Metadata}
	if e := edge.CheckAccounts([]wire.AccountIn{in}); e != nil {
		return ledger.Result{}, itemError(e)
	}
	raw, err := json.Marshal(in)
	if err != nil {
		return ledger.Result{}, fmt.Errorf("account %s: encode: %w", a.ID, err)
	}
	return b.accounts.submit(ctx, a.ID, raw)
}

// Stats returns what the batcher has sent so far. Safe to call at any
// time.
func (b *Batcher) Stats() BatcherStats {
	return BatcherStats{Requests: b.requests.Load(), Items: b.items.Load()}
}

// Close stops taking calls, sends the calls already queued and waits for
// every request's answer. It is idempotent and safe to call concurrently;
// it blocks for at most about the time the queued requests take.
func (b *Batcher) Close() error {
	b.transfers.close()
	b.accounts.close()
	return nil
}

// itemError is the answer the API gives to a bad item, as this client
// reports it.
func itemError(e *edge.Error) *Error { return fromEdge(e.Status, e) }

// A call's place, guarded by lane.mu.
const (
	callQueued = iota
	callSent
	callRemoved
)

// call is one waiting item.
type call struct {
	id    string
	raw   json.RawMessage
	state int
	done  chan struct{} // closed once res or err is set
	res   ledger.Result
	err   error
}

// lane batches the items of one endpoint.
type lane struct {
	b    *Batcher
	list string // the body's list: "transfers" or "accounts"
	path string
	// room holds a token for each queued call, so at most MaxQueued wait.
	room chan struct{}

	mu       sync.Mutex
	queue    []*call
	inFlight int  // senders running, at most MaxInFlight
	closed   bool // no more calls
	senders  sync.WaitGroup
}

func newLane(b *Batcher, list, path string) *lane {
	return &lane{b: b, list: list, path: path, room: make(chan struct{}, b.o.MaxQueued)}
}

// submit queues one encoded item and waits for its result.
func (l *lane) submit(ctx context.Context, id string, raw json.RawMessage) (ledger.Result, error) {
	select {
	case l.room <- struct{}{}:
	case <-ctx.Done():
		return ledger.Result{}, ctx.Err()
	}
	c := &call{id: id, raw: raw, done: make(chan struct{})}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.room
		return ledger.Result{}, ErrBatcherClosed
	}
	l.queue = append(l.queue, c)
	if l.inFlight < l.b.o.MaxInFlight {
		l.inFlight++
		l.senders.Add(1)
		go l.send()
	}
	l.mu.Unlock()
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		return l.abandon(ctx, c)
	}
}

// abandon ends a call whose ctx ended: removed if it was still queued,
// outcome unknown if its request was sent.
func (l *lane) abandon(ctx context.Context, c *call) (ledger.Result, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-c.done:
		return c.res, c.err // the answer came first
	default:
	}
	if c.state == callQueued {
		c.state = callRemoved
		if i := slices.Index(l.queue, c); i >= 0 {
			l.queue = slices.Delete(l.queue, i, i+1)
		}
		<-l.room
		return ledger.Result{}, ctx.Err()
	}
	return ledger.Result{}, &transportError{op: "POST " + l.path + " (batched)", err: ctx.Err(), sent: true}
}

// send is one sender: it sends what is queued, a request at a time, until
// the queue is empty.
func (l *lane) send() {
	defer l.senders.Done()
	for {
		batch, body := l.take()
		if batch == nil {
			return
		}
		l.deliver(batch, l.post(body, len(batch)))
	}
}

// envelope is the body's bytes around the items: {"transfers":[...]}.
func (l *lane) envelope() int { return len(`{"":[]}`) + len(l.list) }

// take removes the next request's calls from the queue and builds its
// body; nil when the queue is empty, and then the sender is done.
func (l *lane) take() ([]*call, json.RawMessage) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, size := 0, l.envelope()
	for n < len(l.queue) && n < l.b.o.MaxBatch {
		add := len(l.queue[n].raw)
		if n > 0 {
			add++ // the comma
		}
		if n > 0 && size+add > edge.MaxBody {
			break
		}
		size += add
		n++
	}
	if n == 0 {
		l.inFlight--
		return nil, nil
	}
	batch := slices.Clone(l.queue[:n])
	l.queue = slices.Delete(l.queue, 0, n)
	body := make([]byte, 0, size)
	body = append(body, `{"`...)
	body = append(body, l.list...)
	body = append(body, `":[`...)
	for i, c := range batch {
		c.state = callSent
		<-l.room
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, c.raw...)
	}
	body = append(body, "]}"...)
	return batch, body
}

// answer is how one request ended.
type answer struct {
	results []ledger.Result
	err     error
}

// post sends one request of n items.
func (l *lane) post(body json.RawMessage, n int) answer {
	l.b.requests.Add(1)
	l.b.items.Add(int64(n))
	ctx, cancel := context.WithTimeout(context.Background(), l.b.o.Timeout)
	defer cancel()
	var out wire.Results
	if err := l.b.c.do(ctx, http.MethodPost, l.path, nil, body, &out); err != nil {
		return answer{err: err}
	}
	if len(out.Results) != n {
		return answer{err: fmt.Errorf("create %s: %d results for %d items", l.list, len(out.Results), n)}
	}
	return answer{results: out.Results}
}

// deliver gives each call of a request its result, or the request's
// error.
func (l *lane) deliver(batch []*call, a answer) {
	for i, c := range batch {
		switch {
		case a.err != nil:
			c.err = callError(a.err)
		case a.results[i].ID != c.id:
			c.err = fmt.Errorf("create %s: result %d is for %q, not %q", l.list, i, a.results[i].ID, c.id)
		default:
			c.res = a.results[i]
		}
		close(c.done)
	}
}

// callError is a request's error as one of its calls gets it: an *Error
// is copied, so that no two callers share one they might change.
func callError(err error) error {
	if e, ok := err.(*Error); ok {
		cp := *e
		return &cp
	}
	return err
}

// close refuses new calls and waits until the queued ones are answered.
func (l *lane) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.senders.Wait()
}
