package harness

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"tally/test/jepsen/check"
	"tally/test/jepsen/history"
)

// WorkloadConfig shapes the clients' traffic.
type WorkloadConfig struct {
	Workers   int           // concurrent closed-loop clients
	PerShard  int           // accounts per shard
	Initial   int64         // each account's deposit
	MaxAmount int64         // transfers move 1..MaxAmount (often more than the balance)
	Think     time.Duration // mean pause between a client's operations
	Seed      uint64
	// WriteDeadline bounds one transfer with its retries (same id, same
	// body); after it the operation is info if any attempt may have
	// applied.
	WriteDeadline time.Duration
	Currency      string
}

// Workload is the clients. Every operation goes to the history.
type Workload struct {
	cfg   WorkloadConfig
	c     *Cluster
	rec   *history.Recorder
	start time.Time

	accounts [][]string // per shard
	ghosts   []string   // per shard: an id placed there that is never opened
	shardOf  map[string]int

	mu   sync.Mutex
	done []doneTransfer // transfers with a definite answer, for replays

	setupProc int

	badMu  sync.Mutex
	bad    int    // 200 answers that broke the API contract
	badMsg string // the first of them
}

func (w *Workload) malformed(err error) {
	w.badMu.Lock()
	defer w.badMu.Unlock()
	w.bad++
	if w.badMsg == "" {
		w.badMsg = err.Error()
	}
}

// Malformed returns how many answers broke the API contract, and the
// first one.
func (w *Workload) Malformed() (int, string) {
	w.badMu.Lock()
	defer w.badMu.Unlock()
	return w.bad, w.badMsg
}

type doneTransfer struct {
	t     history.Transfer
	index int
	shard int
	f     string
}

// ShardOf is the placement of docs/spec.md 6 and shard/DESIGN.md: a jump
// consistent hash of the FNV-1a hash of the id, or of the part of the id
// inside its first braces. The harness checks it against the shard each
// account's creation reports.
func ShardOf(id string, shards int) int {
	if shards <= 1 {
		return 0
	}
	key := id
	if i := strings.IndexByte(id, '{'); i >= 0 {
		if j := strings.IndexByte(id[i+1:], '}'); j > 0 {
			key = id[i+1 : i+1+j]
		}
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	k := h.Sum64()
	var b, j int64 = -1, 0
	for j < int64(shards) {
		b = j
		k = k*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((k>>33)+1)))
	}
	return int(b)
}

// NewWorkload plans the accounts: PerShard accounts on every shard, each
// id placed with a {tag} that hashes to its shard.
func NewWorkload(c *Cluster, rec *history.Recorder, start time.Time, cfg WorkloadConfig) *Workload {
	w := &Workload{cfg: cfg, c: c, rec: rec, start: start, accounts: make([][]string, c.Shards),
		shardOf: map[string]int{}, setupProc: cfg.Workers}
	for s := 0; s < c.Shards; s++ {
		tag := ""
		for i := 0; ; i++ {
			if t := fmt.Sprintf("g%d", i); ShardOf(t, c.Shards) == s {
				tag = t
				break
			}
		}
		for j := 0; j < cfg.PerShard; j++ {
			id := fmt.Sprintf("acct%d{%s}", j, tag)
			w.accounts[s] = append(w.accounts[s], id)
			w.shardOf[id] = s
		}
		w.ghosts = append(w.ghosts, fmt.Sprintf("ghost{%s}", tag))
	}
	return w
}

// Accounts returns every account id.
func (w *Workload) Accounts() []string {
	var out []string
	for _, a := range w.accounts {
		out = append(out, a...)
	}
	return out
}

func (w *Workload) now() int64 { return time.Since(w.start).Nanoseconds() }

// Setup opens every account and deposits its initial balance, retrying
// each with the same id until it gets a definite answer.
func (w *Workload) Setup(ctx context.Context) error {
	for _, id := range w.Accounts() {
		if err := w.open(ctx, id); err != nil {
			return err
		}
	}
	for _, id := range w.Accounts() {
		t := history.Transfer{ID: "dep-" + strings.NewReplacer("{", "-", "}", "").Replace(id), Debit: "@world", Credit: id, Amount: w.cfg.Initial}
		c := w.write(ctx, w.setupProc, history.FDeposit, t, w.shardOf[id], 0, 0, true)
		if c.Type != history.OK || c.Status != "posted" {
			return fmt.Errorf("deposit to %s: %s %s %s", id, c.Type, c.Result, c.Error)
		}
	}
	return nil
}

func (w *Workload) open(ctx context.Context, id string) error {
	idx := w.rec.NextIndex()
	inv := history.Op{Index: idx, Process: w.setupProc, Type: history.Invoke, F: history.FOpen, Time: w.now(),
		Account: id, Currency: w.cfg.Currency, Shard: w.shardOf[id]}
	w.rec.Add(inv)
	comp := inv
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, res := w.c.cl.openAccount(ctx, w.c.ProxyAddr, id, w.cfg.Currency, 3*time.Second)
		comp.Attempts++
		if res != nil && (res.Result == "ok" || res.Result == "exists") {
			comp.Type, comp.Result, comp.Seq, comp.Time = history.OK, res.Result, res.Seq, w.now()
			w.rec.Add(comp)
			if res.Shard != w.shardOf[id] {
				return fmt.Errorf("account %s landed on shard %d, the suite's placement says %d", id, res.Shard, w.shardOf[id])
			}
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			comp.Type, comp.Error, comp.Time = history.Info, r.String(), w.now()
			if res != nil {
				comp.Result = res.Result
			}
			w.rec.Add(comp)
			return fmt.Errorf("open account %s: %s", id, comp.Error)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Run runs the clients until ctx ends or stop is closed.
func (w *Workload) Run(ctx context.Context, stop <-chan struct{}) {
	var wg sync.WaitGroup
	for p := 0; p < w.cfg.Workers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.worker(ctx, stop, p)
		}()
	}
	wg.Wait()
}

// opBatch sends two or three transfers (on different shards, some
// cross-shard) in one request.
const opBatch = "batch"

// The operation mix, in percent.
var mix = []struct {
	f      string
	weight int
}{
	{history.FTransfer, 30},
	{history.FCross, 14},
	{history.FRead, 20},
	{opBatch, 6},
	{history.FNodeRead, 8},
	{history.FShardRead, 8},
	{history.FReplay, 8},
	{history.FReplayChanged, 6},
}

func (w *Workload) worker(ctx context.Context, stop <-chan struct{}, proc int) {
	rng := rand.New(rand.NewPCG(w.cfg.Seed, uint64(proc)+1))
	cursors := make([]uint64, w.c.Shards)
	n := 0
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		n++
		pick := rng.IntN(100)
		f := mix[len(mix)-1].f
		for _, m := range mix {
			if pick < m.weight {
				f = m.f
				break
			}
			pick -= m.weight
		}
		switch f {
		case history.FTransfer:
			s := rng.IntN(w.c.Shards)
			a, b := w.two(rng, w.accounts[s])
			t := history.Transfer{ID: fmt.Sprintf("t%d-%d", proc, n), Debit: a, Credit: b, Amount: 1 + rng.Int64N(w.cfg.MaxAmount)}
			w.write(ctx, proc, f, t, s, 0, 0, rng.IntN(10) >= 3)
		case history.FCross:
			if w.c.Shards < 2 {
				continue
			}
			s := rng.IntN(w.c.Shards)
			d := (s + 1 + rng.IntN(w.c.Shards-1)) % w.c.Shards
			a := w.accounts[s][rng.IntN(len(w.accounts[s]))]
			b := w.accounts[d][rng.IntN(len(w.accounts[d]))]
			if rng.IntN(8) == 0 {
				// A credit account that does not exist: the destination
				// rejects the credit and the saga must release its hold.
				b = w.ghosts[d]
			}
			t := history.Transfer{ID: fmt.Sprintf("x%d-%d", proc, n), Debit: a, Credit: b, Amount: 1 + rng.Int64N(w.cfg.MaxAmount)}
			w.write(ctx, proc, f, t, s, d, 0, rng.IntN(10) >= 3)
		case opBatch:
			w.writeBatch(ctx, proc, w.batch(rng, proc, n), rng.IntN(10) >= 3)
		case history.FRead:
			acct := w.randomAccount(rng)
			w.read(ctx, proc, f, acct, "", w.c.ProxyAddr)
		case history.FNodeRead:
			node := w.c.Nodes[rng.IntN(len(w.c.Nodes))]
			w.read(ctx, proc, f, w.randomAccount(rng), node.ID, node.HTTP)
		case history.FShardRead:
			s := rng.IntN(w.c.Shards)
			cursors[s] = w.shardRead(ctx, proc, s, cursors[s])
		case history.FReplay, history.FReplayChanged:
			d, ok := w.pickDone(rng)
			if !ok {
				continue
			}
			t := d.t
			if f == history.FReplayChanged {
				t.Amount++
			}
			w.write(ctx, proc, f, t, d.shard, 0, d.index, true)
		}
		if w.cfg.Think > 0 {
			time.Sleep(time.Duration(rng.Int64N(int64(2 * w.cfg.Think))))
		}
	}
}

// batch makes two or three transfers from different shards, one in
// three of them cross-shard.
func (w *Workload) batch(rng *rand.Rand, proc, n int) []item {
	k := 2 + rng.IntN(2)
	var out []item
	for i, s := range rng.Perm(w.c.Shards)[:min(k, w.c.Shards)] {
		id := fmt.Sprintf("b%d-%d-%d", proc, n, i)
		amt := 1 + rng.Int64N(w.cfg.MaxAmount)
		if rng.IntN(3) == 0 && w.c.Shards > 1 {
			d := (s + 1 + rng.IntN(w.c.Shards-1)) % w.c.Shards
			a := w.accounts[s][rng.IntN(len(w.accounts[s]))]
			b := w.accounts[d][rng.IntN(len(w.accounts[d]))]
			out = append(out, item{f: history.FCross, t: history.Transfer{ID: id, Debit: a, Credit: b, Amount: amt}, shard: s, dest: d})
			continue
		}
		a, b := w.two(rng, w.accounts[s])
		out = append(out, item{f: history.FTransfer, t: history.Transfer{ID: id, Debit: a, Credit: b, Amount: amt}, shard: s})
	}
	return out
}

func (w *Workload) two(rng *rand.Rand, accts []string) (string, string) {
	i := rng.IntN(len(accts))
	j := rng.IntN(len(accts) - 1)
	if j >= i {
		j++
	}
	return accts[i], accts[j]
}

func (w *Workload) randomAccount(rng *rand.Rand) string {
	s := w.accounts[rng.IntN(len(w.accounts))]
	return s[rng.IntN(len(s))]
}

func (w *Workload) pickDone(rng *rand.Rand) (doneTransfer, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.done) == 0 {
		return doneTransfer{}, false
	}
	return w.done[rng.IntN(len(w.done))], true
}

// item is one transfer of a request.
type item struct {
	f           string
	t           history.Transfer
	shard, dest int
	of          int
}

// write sends one transfer; see writeBatch.
func (w *Workload) write(ctx context.Context, proc int, f string, t history.Transfer, shard, dest, of int, retry bool) history.Op {
	return w.writeBatch(ctx, proc, []item{{f: f, t: t, shard: shard, dest: dest, of: of}}, retry)[0]
}

// writeBatch sends transfers in one request through the proxy (which
// splits a batch per shard and merges the answers), retrying the whole
// request with the same ids and bodies within the write deadline: after a
// 503 or a connection that never carried the request (nothing applied),
// and after a 504, a timeout or a reset after sending (the outcome is
// unknown, and a retry is safe because ids are idempotency keys). A
// cross-shard answer in_flight is followed by polling the transfer until
// it finishes. Each transfer is its own operation in the history.
func (w *Workload) writeBatch(ctx context.Context, proc int, items []item, retry bool) []history.Op {
	now := w.now()
	ts := make([]history.Transfer, len(items))
	comps := make([]history.Op, len(items))
	for i := range items {
		it := &items[i]
		ts[i] = it.t
		t := it.t
		inv := history.Op{Index: w.rec.NextIndex(), Process: proc, Type: history.Invoke, F: it.f, Time: now,
			Transfer: &t, Shard: it.shard, Dest: it.dest, Of: it.of}
		if len(items) > 1 {
			inv.Batch = len(items)
		}
		w.rec.Add(inv)
		comps[i] = inv
	}
	deadline := time.Now().Add(w.cfg.WriteDeadline)
	attempt := 3 * time.Second
	if !retry {
		// One attempt: a timeout or a 504 leaves the operations info.
		attempt = 2 * time.Second
		deadline = time.Now().Add(attempt)
	}
	unknown := false
	attempts := 0
	var last reply
	for time.Now().Before(deadline) && ctx.Err() == nil && (retry || attempts == 0) {
		attempts++
		left := min(attempt, time.Until(deadline))
		r, res := w.c.cl.postTransfers(ctx, w.c.ProxyAddr, ts, max(left, 200*time.Millisecond))
		last = r
		if r.Malformed {
			w.malformed(r.Err)
		}
		if res != nil {
			for i := range items {
				comps[i].Attempts, comps[i].HTTP = attempts, r.Status
				w.answer(ctx, &items[i], &comps[i], &res[i], deadline)
			}
			return comps
		}
		switch {
		case r.Err == nil && r.Status == http.StatusServiceUnavailable:
		case r.Err == nil && r.Status >= 400 && r.Status < 500:
			// Refused at the edge: nothing was proposed.
			return w.finish(comps, attempts, r, unknown)
		case r.Err == nil:
			unknown = true // 504 or another 5xx: it may have applied
		case r.Sent:
			unknown = true
		}
		sleepCtx(ctx, time.Duration(50+rand.IntN(200))*time.Millisecond)
	}
	return w.finish(comps, attempts, last, unknown)
}

// answer completes one operation from its item of a 200 answer.
func (w *Workload) answer(ctx context.Context, it *item, comp *history.Op, res *transferResult, deadline time.Time) {
	if res.Status == "in_flight" {
		v := w.follow(ctx, it.t.ID, deadline)
		if v == nil {
			comp.Type, comp.Result, comp.Status, comp.Time = history.Info, res.Result, res.Status, w.now()
			comp.Error = "still in flight at the deadline"
			w.rec.Add(*comp)
			return
		}
		res = &transferResult{ID: it.t.ID, Result: v.Result, Status: v.Status, Shard: v.Shard, Seq: v.Seq, Original: res.Original}
	}
	comp.Result, comp.Status, comp.Original, comp.Seq, comp.Time = res.Result, res.Status, res.Original, res.Seq, w.now()
	comp.Type = history.Fail
	if w.acked(it.f, res) {
		comp.Type = history.OK
	}
	w.rec.Add(*comp)
	w.remember(it.f, it.t, comp.Index, it.shard, *comp)
}

// finish completes operations that got no answer: info if any attempt
// may have applied them, fail otherwise.
func (w *Workload) finish(comps []history.Op, attempts int, last reply, unknown bool) []history.Op {
	for i := range comps {
		c := &comps[i]
		c.Time, c.Attempts, c.HTTP, c.Error = w.now(), attempts, last.Status, last.String()
		c.Type = history.Fail
		if unknown {
			c.Type = history.Info
		}
		w.rec.Add(*c)
	}
	return comps
}

// acked reports whether an answer means the operation happened: a
// transfer posted (first time or as exists), a replay answered exists.
func (w *Workload) acked(f string, res *transferResult) bool {
	switch f {
	case history.FReplay:
		return res.Result == "exists"
	case history.FReplayChanged:
		return false
	}
	return res.Status == "posted"
}

// remember keeps a transfer with a definite answer for later replays.
func (w *Workload) remember(f string, t history.Transfer, index, shard int, c history.Op) {
	if f != history.FTransfer && f != history.FCross && f != history.FDeposit {
		return
	}
	if c.Type == history.Info || (c.Type == history.Fail && c.Result == "") {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = append(w.done, doneTransfer{t: t, index: index, shard: shard, f: f})
}

// follow polls a transfer until it is posted or rejected, or the deadline
// passes.
func (w *Workload) follow(ctx context.Context, id string, deadline time.Time) *transferView {
	for time.Now().Before(deadline) && ctx.Err() == nil {
		_, v := w.c.cl.getTransfer(ctx, w.c.ProxyAddr, id, 2*time.Second)
		if v != nil && (v.Status == "posted" || v.Status == "rejected") {
			return v
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	return nil
}

// read reads one account, through the proxy or straight from a node. A
// read changes nothing, so one that gets no answer is a fail.
func (w *Workload) read(ctx context.Context, proc int, f, acct, node, base string) {
	inv := history.Op{Index: w.rec.NextIndex(), Process: proc, Type: history.Invoke, F: f, Time: w.now(),
		Account: acct, Shard: w.shardOf[acct], Node: node}
	w.rec.Add(inv)
	r, v := w.c.cl.getAccount(ctx, base, acct, 2*time.Second)
	comp := inv
	comp.Time, comp.HTTP, comp.Attempts = w.now(), r.Status, 1
	switch {
	case v != nil:
		b := v.Balance
		comp.Type, comp.Seq, comp.Read = history.OK, v.Seq, &b
		if v.Shard != inv.Shard {
			comp.Error = fmt.Sprintf("answered from shard %d", v.Shard)
		}
	case r.Err == nil && r.Status == http.StatusNotFound:
		comp.Type, comp.Result = history.OK, r.errCode()
	default:
		comp.Type, comp.Error = history.Fail, r.String()
	}
	w.rec.Add(comp)
}

// shardRead reads the next page of a shard's log through the proxy (any
// replica serves it) and returns the new cursor.
func (w *Workload) shardRead(ctx context.Context, proc, shard int, after uint64) uint64 {
	inv := history.Op{Index: w.rec.NextIndex(), Process: proc, Type: history.Invoke, F: history.FShardRead,
		Time: w.now(), Shard: shard, After: after}
	w.rec.Add(inv)
	q := url.Values{"after": {fmt.Sprint(after)}, "limit": {"50"}}
	r := w.c.cl.do(ctx, http.MethodGet, w.c.ProxyAddr, fmt.Sprintf("/v1/shards/%d/events", shard), q, nil, 2*time.Second)
	comp := inv
	comp.Time, comp.HTTP, comp.Attempts = w.now(), r.Status, 1
	if r.Err != nil || r.Status != http.StatusOK {
		comp.Type, comp.Error = history.Fail, r.String()
		w.rec.Add(comp)
		return after
	}
	evs, _, err := check.ParseEvents(r.Body)
	if err != nil {
		comp.Type, comp.Error = history.Fail, err.Error()
		w.rec.Add(comp)
		return after
	}
	comp.Type = history.OK
	for _, e := range evs {
		comp.Events = append(comp.Events, history.EventRef{Seq: e.Seq, Type: e.Type, PrevHash: e.PrevHash, Hash: e.Hash, Balances: e.Balances})
	}
	w.rec.Add(comp)
	if n := len(evs); n > 0 && evs[n-1].Seq > after {
		return evs[n-1].Seq
	}
	return after
}

// FinalReads reads every account once through the proxy after the run
// (process -1), retrying until each read is answered.
func (w *Workload) FinalReads(ctx context.Context) {
	for _, acct := range w.Accounts() {
		for i := 0; i < 20 && ctx.Err() == nil; i++ {
			inv := history.Op{Index: w.rec.NextIndex(), Process: check.FinalProcess, Type: history.Invoke, F: history.FRead,
				Time: w.now(), Account: acct, Shard: w.shardOf[acct]}
			w.rec.Add(inv)
			r, v := w.c.cl.getAccount(ctx, w.c.ProxyAddr, acct, 5*time.Second)
			comp := inv
			comp.Time, comp.HTTP, comp.Attempts = w.now(), r.Status, 1
			if v != nil {
				b := v.Balance
				comp.Type, comp.Seq, comp.Read = history.OK, v.Seq, &b
				w.rec.Add(comp)
				break
			}
			comp.Type, comp.Error = history.Fail, r.String()
			w.rec.Add(comp)
			sleepCtx(ctx, 500*time.Millisecond)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
