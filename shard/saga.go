package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"tally/internal/failpoint"
	"tally/internal/plant"
	"tally/ledger"
)

// Saga driver limits.
const (
	// sagaIdle bounds the driver's wait when nothing signals it, a guard
	// against a missed signal rather than a polling interval.
	sagaIdle = time.Second
	// sagaBarrierWait is how often a new leader checks its term's barrier.
	sagaBarrierWait = 20 * time.Millisecond
	sagaBatch       = 1024            // saga steps per command
	sagaCallBudget  = 5 * time.Second // one call to a peer shard
	sagaBackoffMin  = 50 * time.Millisecond
	sagaBackoffMax  = 5 * time.Second
	// StuckAfter is how long an open saga may run before operators see it
	// as stuck.
	StuckAfter = 30 * time.Second
)

// SagaInfo is what the driver knows of an open saga beyond the log: how
// often it tried the next step and what went wrong last. It lives on the
// source shard's leader only.
type SagaInfo struct {
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error,omitempty"`
	NextTry   time.Time `json:"next_try"`
	Resolving string    `json:"resolving,omitempty"` // an operator's note while a manual abort runs
	back      *backoff.ExponentialBackOff
	peer      int // the destination shard
}

// newSagaBackoff is the wait between a saga's attempts: exponential from
// 100 ms to 5 s, never giving up (a saga is never aborted because of a
// timeout), with jitter so that the sagas waiting on a shard that comes
// back do not all retry at once.
func newSagaBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 2 * sagaBackoffMin
	b.Multiplier = 2
	b.RandomizationFactor = 0.2
	b.MaxInterval = sagaBackoffMax
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

// driver runs the sagas a shard started while this node leads it: it asks
// each destination to credit (batched per destination), then completes or
// aborts on the source. It retries unknown outcomes with the same saga id
// and never aborts because of a timeout: only a rejection, or a fence that
// the destination accepted, aborts a saga.
type driver struct {
	h   *Host
	r   *Replica
	log *slog.Logger

	mu       sync.Mutex
	info     map[string]*SagaInfo
	inflight map[string]bool   // steps being sent now
	manual   map[string]string // id -> note: fence instead of credit
	wake     chan struct{}     // a step ended or an operator asked: look again
	// calling holds the destination shards with a call in flight: the
	// sagas for one wait for it to end and then go together in the next
	// call, so a busy shard gets fewer, larger batches.
	calling map[int]bool
}

func newDriver(h *Host, r *Replica) *driver {
	return &driver{h: h, r: r, log: r.log.With("part", "saga"), info: map[string]*SagaInfo{},
		inflight: map[string]bool{}, manual: map[string]string{}, wake: make(chan struct{}, 1),
		calling: map[int]bool{}}
}

// run drives open sagas until ctx ends (leadership lost or shutdown). It
// starts only after the term's barrier, so it sees every saga the log
// holds; a new leader thus resumes every unfinished saga. It looks for
// work when the open sagas change, when a step it sent ends, and when a
// retry is due, never on a fixed tick: a saga's first step goes out as
// soon as its hold is applied.
func (d *driver) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for !d.r.Group.BarrierDone() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(sagaBarrierWait):
		}
	}
	for {
		changed := d.r.FSM.SagasChanged()
		skip := d.busy()
		open, err := d.r.FSM.OpenSagas(func(id string) bool { return skip[id] })
		if err != nil {
			d.log.Warn("list open sagas", "err", err)
		}
		for peer, steps := range d.due(open, skip) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.advance(ctx, peer, steps)
			}()
		}
		timer := time.NewTimer(d.nextRetry())
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-changed:
		case <-d.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// poke makes the driver look for work again.
func (d *driver) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// nextRetry is how long until the earliest retry of a saga not being
// sent is due; sagaIdle when none is waiting.
func (d *driver) nextRetry() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	wait := sagaIdle
	now := time.Now()
	for id, in := range d.info {
		// A saga whose destination has a call out waits for the call's end,
		// which pokes the driver.
		if !d.inflight[id] && !d.calling[in.peer] {
			wait = min(wait, max(in.NextTry.Sub(now), 0))
		}
	}
	return wait
}

// busy returns the sagas not to look at now: those being sent and those
// waiting for their next try. It is a copy, so the scan holds no lock.
func (d *driver) busy() map[string]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	skip := make(map[string]bool, len(d.inflight))
	for id := range d.inflight {
		skip[id] = true
	}
	for id, in := range d.info {
		if now.Before(in.NextTry) {
			skip[id] = true
		}
	}
	return skip
}

// work is one saga step to send to a destination shard.
type work struct {
	rec  ledger.Record
	note string // set: a manual abort, sent as a fence
}

// due picks the open sagas whose next try has come and that are not being
// sent already, grouped by destination shard, and forgets what it knew of
// sagas that are no longer open (neither listed nor skipped).
func (d *driver) due(open []ledger.Record, skipped map[string]bool) map[int][]work {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	out := map[int][]work{}
	live := map[string]bool{}
	for _, r := range open {
		id := r.Transfer.ID
		live[id] = true
		if r.Saga == nil || r.Saga.Role != ledger.RoleSource || d.inflight[id] || d.calling[r.Saga.Peer] {
			continue
		}
		in := d.info[id]
		if in == nil {
			in = &SagaInfo{peer: r.Saga.Peer}
			d.info[id] = in
		}
		if now.Before(in.NextTry) || len(out[r.Saga.Peer]) >= sagaBatch {
			continue
		}
		d.inflight[id] = true
		out[r.Saga.Peer] = append(out[r.Saga.Peer], work{rec: r, note: d.manual[id]})
	}
	for id := range d.info {
		if !live[id] && !d.inflight[id] && !skipped[id] {
			delete(d.info, id)
			delete(d.manual, id)
		}
	}
	for peer := range out {
		d.calling[peer] = true
	}
	return out
}

// advance sends one destination its credits (and fences), then resolves
// on the source what the destination decided.
func (d *driver) advance(ctx context.Context, peer int, ws []work) {
	// The destination is free for the next batch as soon as its call ends;
	// this batch's resolution on the source is committed meanwhile.
	var once sync.Once
	release := func() {
		once.Do(func() {
			d.mu.Lock()
			delete(d.calling, peer)
			d.mu.Unlock()
			d.poke()
		})
	}
	defer func() {
		d.mu.Lock()
		for _, w := range ws {
			delete(d.inflight, w.rec.Transfer.ID)
		}
		d.mu.Unlock()
		release()
		d.poke()
	}()
	var credits, fences []work
	for _, w := range ws {
		if w.note != "" {
			fences = append(fences, w)
		} else {
			credits = append(credits, w)
		}
	}
	if len(fences) == 0 {
		d.step(ctx, peer, ledger.CmdSagaCredit, credits, release)
		return
	}
	if len(credits) > 0 {
		d.step(ctx, peer, ledger.CmdSagaCredit, credits, nil)
	}
	d.step(ctx, peer, ledger.CmdSagaFence, fences, release)
}

// step sends one command of saga steps to the destination and resolves on
// the source what it decided; called is run once the destination
// answered (nil: nothing to run).
func (d *driver) step(ctx context.Context, peer int, kind ledger.Kind, ws []work, called func()) {
	cmd := ledger.Command{Kind: kind}
	for _, w := range ws {
		cmd.Saga = append(cmd.Saga, ledger.SagaStep{Source: d.r.ID, Transfer: w.rec.Transfer, Currency: w.rec.Saga.Currency})
	}
	if failpoint.Enabled {
		failpoint.Crash("crash-saga-before-credit")
	}
	c, cancel := context.WithTimeout(ctx, sagaCallBudget)
	res, err := d.h.submitAnywhere(c, peer, cmd)
	cancel()
	if called != nil {
		called()
	}
	if failpoint.Enabled && err == nil {
		failpoint.Crash("crash-saga-before-resolve")
	}
	if err == nil && len(res) != len(ws) {
		err = fmt.Errorf("shard %d answered %d results for %d saga steps", peer, len(res), len(ws))
	}
	if err != nil {
		d.failed(ws, err)
		return
	}
	resolve := ledger.Command{Kind: ledger.CmdSagaResolve}
	var done []work
	for i, x := range res {
		w := ws[i]
		switch {
		case x.Status == ledger.StatusPosted:
			resolve.Saga = append(resolve.Saga, ledger.SagaStep{Transfer: ledger.Transfer{ID: w.rec.Transfer.ID}, Outcome: ledger.OK, Note: w.note})
		case x.Status == ledger.StatusRejected && x.Result != ledger.InvalidRequest && x.Result != ledger.WrongShard:
			if plant.NoSagaCompensation {
				continue // planted bug: the hold is never released
			}
			resolve.Saga = append(resolve.Saga, ledger.SagaStep{Transfer: ledger.Transfer{ID: w.rec.Transfer.ID}, Outcome: x.Result, Note: w.note})
		default:
			// The destination cannot decide this step: a bug somewhere.
			// Keep the saga open and visible rather than guess.
			d.failed([]work{w}, fmt.Errorf("shard %d answered %s", peer, x.Result))
			continue
		}
		done = append(done, w)
	}
	if len(resolve.Saga) == 0 {
		return
	}
	c, cancel = context.WithTimeout(ctx, sagaCallBudget)
	defer cancel()
	if _, err := d.r.b.submit(c, resolve); err != nil {
		d.failed(done, fmt.Errorf("resolve on shard %d: %w", d.r.ID, err))
	}
}

// failed records an attempt that did not get through and schedules the
// next one with exponential backoff.
func (d *driver) failed(ws []work, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range ws {
		in := d.info[w.rec.Transfer.ID]
		if in == nil {
			continue
		}
		in.Attempts++
		in.LastError = err.Error()
		if in.back == nil {
			in.back = newSagaBackoff()
		}
		in.NextTry = time.Now().Add(in.back.NextBackOff())
	}
	if ws != nil {
		d.log.Debug("saga step failed", "n", len(ws), "err", err)
	}
}

// requestAbort asks the driver to give saga id up: it fences the
// destination, and completes instead if the credit already happened.
func (d *driver) requestAbort(id, note string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.manual[id] = note
	if in := d.info[id]; in != nil {
		in.NextTry, in.Resolving = time.Time{}, note
	}
	d.poke()
}

func (d *driver) snapshot(id string) (SagaInfo, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	in, ok := d.info[id]
	if !ok {
		return SagaInfo{}, false
	}
	return *in, true
}

// submitAnywhere runs cmd on shard i's leader: here, or through the
// peer seam on that leader.
func (h *Host) submitAnywhere(ctx context.Context, i int, cmd ledger.Command) ([]ledger.Result, error) {
	res, err := h.Submit(ctx, i, cmd)
	var nl *NotLeaderError
	if !errors.As(err, &nl) {
		return res, err
	}
	if nl.LeaderHTTP == "" || nl.LeaderID == h.cfg.NodeID {
		return nil, err
	}
	return h.cfg.Peers.Submit(ctx, nl.LeaderHTTP, i, cmd)
}
