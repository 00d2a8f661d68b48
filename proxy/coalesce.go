package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"tally/edge"
	"tally/ledger"
)

// Coalescing of single-shard transfer requests; see "Coalescing" in the
// package documentation for the rules.
const (
	// maxInFlight is how many requests for one shard's transfers the
	// proxy has at its leader at once. Requests that come while they are
	// in flight wait and go together in the next one.
	maxInFlight = 1
	// coalesceMax is the largest client request that waits to be merged.
	// A larger one already shares a request's cost among many transfers
	// and goes as the client sent it, as soon as it comes.
	coalesceMax = 256
	// mergeSlack bounds how far apart the deadlines of merged requests
	// are. The merged request runs to the earliest of them, so a client
	// may get its answer (503, 504, a saga still in flight) up to this
	// much before its own deadline: no more than the margin nodeTimeout
	// already keeps.
	mergeSlack = 250 * time.Millisecond
	// minWait is the least time left of a deadline for a request to be
	// sent at all; a request with less is answered 503 without being
	// sent, as send would.
	minWait = 20 * time.Millisecond
)

const transfersPath = "/v1/transfers"

// lane holds the single-shard transfer requests of one shard that wait
// for the requests in flight to it.
type lane struct {
	// cred is the credential every request of the lane came with: only
	// requests made with the same one are merged, so a merged request
	// never lends one client's rights to another's transfers.
	cred     string
	mu       sync.Mutex
	inFlight int
	queue    []*waiter
}

// waiter is one client request in a lane.
type waiter struct {
	dl    time.Time
	n     int    // transfers
	items []byte // the transfers' JSON, without the list's brackets
	// state is guarded by the lane's mu.
	state waitState
	// v gets the waiter's verdict once, when state leaves queued (for
	// toAlone and toLead) or when the group's answer is known.
	v chan verdict
	// g is the group the waiter went in; nil until then.
	g *group
}

type waitState uint8

const (
	queued  waitState = iota
	toAlone           // send your own request, holding the lane's slot
	toLead            // send the group's request, holding the lane's slot
	grouped           // in a group another waiter sends
	expired           // taken off the queue: too little time left to send
)

// group is waiters whose requests go as one.
type group struct {
	cred string // the lane's
	ws   []*waiter
	dl   time.Time // the earliest deadline among them
	// applied says whether the merged request may have been applied; it
	// is settled once dl has passed, since no attempt starts after it.
	applied atomic.Bool
}

// verdict is what a waiter does or answers.
type verdict struct {
	state   waitState         // toAlone, toLead, expired, or grouped with an answer
	results []json.RawMessage // its results, for a 200
	status  int               // the node's final status other than 200
	body    []byte            // the node's answer with status
	o       *outcome          // no final answer: how the merged request ended
	again   bool              // the node refused the merged request: send alone
}

// laneKey names a lane: a shard and the credential of its requests.
type laneKey struct {
	shard int
	cred  string
}

func (p *Proxy) lane(shard int, cred string) *lane {
	k := laneKey{shard, cred}
	if l, ok := p.lanes.Load(k); ok {
		return l.(*lane)
	}
	l, _ := p.lanes.LoadOrStore(k, &lane{cred: cred})
	return l.(*lane)
}

// sendTransfers sends a valid transfers batch that lives on one shard.
// When a request for that shard is in flight it waits and goes with the
// others that came meanwhile; otherwise it goes at once, as the client
// sent it.
func (p *Proxy) sendTransfers(ctx context.Context, w http.ResponseWriter, r *http.Request,
	shard int, body []byte, ts []ledger.Transfer) {
	alone := func() {
		c := p.newCall(shard, http.MethodPost, transfersPath, r.URL.Query(), body)
		p.pass(w, r.WithContext(ctx), &pass{c: c})
	}
	if len(ts) > coalesceMax {
		alone()
		return
	}
	l := p.lane(shard, credential(ctx))
	if l.take() {
		alone()
		p.release(l, shard)
		return
	}
	wt, err := newWaiter(ctx, ts)
	if err != nil {
		// The items were decoded from JSON a moment ago.
		panic(fmt.Sprintf("proxy: encode transfers: %v", err))
	}
	if !l.enqueue(wt) {
		alone()
		p.release(l, shard)
		return
	}
	v, ok := l.wait(ctx, wt)
	if !ok {
		p.gaveUp(ctx, w, shard, wt)
		return
	}
	switch v.state {
	case toAlone:
		alone()
		p.release(l, shard)
	case toLead:
		v := p.sendGroup(shard, wt.g)
		p.release(l, shard)
		p.answer(ctx, w, shard, v, alone)
	case expired:
		p.fail(ctx, w, p.newCall(shard, http.MethodPost, transfersPath, nil, nil),
			outcome{err: context.DeadlineExceeded})
	default:
		p.answer(ctx, w, shard, v, alone)
	}
}

func newWaiter(ctx context.Context, ts []ledger.Transfer) (*waiter, error) {
	b, err := json.Marshal(ts)
	if err != nil {
		return nil, err
	}
	dl, _ := ctx.Deadline() // createBatch always sets one
	return &waiter{dl: dl, n: len(ts), items: b[1 : len(b)-1], v: make(chan verdict, 1)}, nil
}

// take claims a slot in flight if one is free.
func (l *lane) take() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight < maxInFlight {
		l.inFlight++
		return true
	}
	return false
}

// enqueue queues wt, or claims a slot in flight if one came free
// meanwhile (then it returns false).
func (l *lane) enqueue(wt *waiter) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight < maxInFlight {
		l.inFlight++
		return false
	}
	l.queue = append(l.queue, wt)
	return true
}

// wait waits for wt's verdict, or for its client's deadline or departure;
// then ok is false unless the waiter already holds a slot, which it must
// use and release.
func (l *lane) wait(ctx context.Context, wt *waiter) (verdict, bool) {
	select {
	case v := <-wt.v:
		return v, true
	case <-ctx.Done():
	}
	l.mu.Lock()
	st := wt.state
	if st == queued {
		l.queue = slices.DeleteFunc(l.queue, func(o *waiter) bool { return o == wt })
	}
	l.mu.Unlock()
	if st == toAlone || st == toLead {
		return <-wt.v, true
	}
	select {
	case v := <-wt.v:
		// The answer came with the deadline: it is still the answer.
		return v, v.state == grouped
	default:
		return verdict{}, false
	}
}

// gaveUp answers a waiter whose client's deadline passed (or who left)
// before its answer came: 503 if its request was never written to a node,
// 504 if it may have been applied.
func (p *Proxy) gaveUp(ctx context.Context, w http.ResponseWriter, shard int, wt *waiter) {
	o := outcome{err: fmt.Errorf("waited for the shard's writes in flight: %w", ctx.Err())}
	if g := wt.g; g != nil && g.applied.Load() {
		o.unknown = true
		o.err = fmt.Errorf("sent together with other requests: %w", ctx.Err())
	}
	p.fail(ctx, w, p.newCall(shard, http.MethodPost, transfersPath, nil, nil), o)
}

// release gives back a slot in flight and hands it to the next group.
func (p *Proxy) release(l *lane, shard int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight--
	g := l.next(time.Now())
	if g == nil {
		return
	}
	l.inFlight++
	lead := g.ws[0]
	if len(g.ws) == 1 {
		lead.state = toAlone
		lead.g = nil
	} else {
		lead.state = toLead
	}
	lead.v <- verdict{state: lead.state}
}

// next takes the next group off the queue: waiters in queue order as long
// as they fit in one node request (ledger.MaxBatch transfers, edge.MaxBody
// bytes) and their deadlines are at most mergeSlack apart. Waiters with
// less than minWait left are taken off as expired. The caller holds l.mu.
func (l *lane) next(now time.Time) *group {
	var g *group
	var hi time.Time // the latest deadline in g; g.dl is the earliest
	n, size, k := 0, 0, 0
	for ; k < len(l.queue); k++ {
		wt := l.queue[k]
		if wt.dl.Sub(now) < minWait {
			wt.state = expired
			wt.v <- verdict{state: expired}
			continue
		}
		if g == nil {
			g, hi = &group{cred: l.cred, dl: wt.dl}, wt.dl
		} else if n+wt.n > ledger.MaxBatch || size+len(wt.items)+1 > maxMergedBody ||
			maxTime(hi, wt.dl).Sub(minTime(g.dl, wt.dl)) > mergeSlack {
			break
		}
		g.ws = append(g.ws, wt)
		g.dl, hi = minTime(g.dl, wt.dl), maxTime(hi, wt.dl)
		wt.state, wt.g = grouped, g
		n, size = n+wt.n, size+len(wt.items)+1
	}
	l.queue = slices.Delete(l.queue, 0, k)
	return g
}

// maxMergedBody bounds a merged body: the node's own limit, less room for
// the envelope.
const maxMergedBody = edge.MaxBody - 64

// sendGroup sends the merged request of g, gives every waiter but the
// first its verdict and returns the first's. The request runs to the
// group's earliest deadline and is not ended by any client leaving: the
// others still wait for it.
func (p *Proxy) sendGroup(shard int, g *group) verdict {
	n := 0
	var buf bytes.Buffer
	buf.WriteString(`{"transfers":[`)
	for i, wt := range g.ws {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(wt.items)
		n += wt.n
	}
	buf.WriteString("]}")
	ctx, cancel := context.WithDeadline(withCredential(p.ctx, g.cred), g.dl)
	defer cancel()
	c := p.newCall(shard, http.MethodPost, transfersPath, url.Values{}, buf.Bytes())
	c.applied = &g.applied
	pr := p.sendPart(ctx, c, n)
	refused := pr.status >= 400 && pr.status < 500
	if refused {
		// Each part passed the checks the node makes, so this should not
		// happen; the node applied none of it.
		p.log.Warn("merged request refused; sending its parts alone", "shard", shard,
			"requests", len(g.ws), "status", pr.status, "answer", string(pr.body))
	}
	at := 0
	var first verdict
	for i, wt := range g.ws {
		v := verdict{state: grouped, status: pr.status, body: pr.body, again: refused}
		switch pr.status {
		case http.StatusOK:
			v.results = pr.results[at : at+wt.n]
		case 0:
			v.o = &pr.o
		}
		at += wt.n
		if i == 0 {
			first = v
		} else {
			wt.v <- v
		}
	}
	return first
}

// answer answers a waiter of a group with its share of the merged
// request's answer. again sends its own request instead: each client then
// gets what its own request gets.
func (p *Proxy) answer(ctx context.Context, w http.ResponseWriter, shard int, v verdict, alone func()) {
	switch {
	case v.again:
		alone()
	case v.status == http.StatusOK:
		writeResults(w, v.results)
	case v.status != 0:
		edge.Relay(w, v.status, v.body)
	default:
		p.fail(ctx, w, p.newCall(shard, http.MethodPost, transfersPath, nil, nil), *v.o)
	}
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
