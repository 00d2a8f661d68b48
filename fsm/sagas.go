package fsm

import (
	"context"

	"tally/ledger"
)

// The open sagas are kept in memory, as the open pending transfers are in
// ledger.State, so that the saga driver finds its work without reading
// storage: listing them from the open-record index walked the tombstones
// of every finished saga, a cost that grew with history. The set is
// updated when a batch is published, so the driver never sees a saga step
// that readers of storage cannot see yet.

// SagasChanged returns a channel that is closed when the open sagas
// change: the saga driver waits on it instead of polling.
func (f *FSM) SagasChanged() <-chan struct{} {
	f.sagaMu.Lock()
	defer f.sagaMu.Unlock()
	return f.sagaCh
}

// OpenSagas returns the open sagas that skip does not exclude, as copies.
// It is safe for concurrent use and reads no storage.
func (f *FSM) OpenSagas(skip func(id string) bool) ([]ledger.Record, error) {
	f.sagaMu.Lock()
	defer f.sagaMu.Unlock()
	out := make([]ledger.Record, 0, len(f.sagas))
	for id, r := range f.sagas {
		if skip == nil || !skip(id) {
			out = append(out, r)
		}
	}
	return out, nil
}

// noteSaga records a saga record that the batch being applied changed.
// FSM goroutine only.
func (f *FSM) noteSaga(r *ledger.Record) { f.sagaDelta = append(f.sagaDelta, copySaga(r)) }

// publishSagas applies the batch's saga changes to the open set.
func (f *FSM) publishSagas() {
	if len(f.sagaDelta) == 0 {
		return
	}
	f.sagaMu.Lock()
	defer f.sagaMu.Unlock()
	for _, r := range f.sagaDelta {
		if r.Open() {
			f.sagas[r.Transfer.ID] = r
		} else {
			delete(f.sagas, r.Transfer.ID)
		}
	}
	f.sagaDelta = f.sagaDelta[:0]
	close(f.sagaCh)
	f.sagaCh = make(chan struct{})
}

// loadSagas rebuilds the open set from a loaded state.
func (f *FSM) loadSagas(st *ledger.State) {
	open := map[string]ledger.Record{}
	for _, r := range st.OpenSagas() {
		open[r.Transfer.ID] = copySaga(&r)
	}
	f.sagaMu.Lock()
	f.sagas, f.sagaDelta = open, nil
	if f.sagaCh != nil {
		close(f.sagaCh)
	}
	f.sagaCh = make(chan struct{})
	f.sagaMu.Unlock()
}

// copySaga copies r deeply enough that the state may change its own.
func copySaga(r *ledger.Record) ledger.Record {
	c := *r
	s := *r.Saga
	c.Saga = &s
	return c
}

// WaitSagaClosed blocks until saga id is no longer open, or ctx ends. It
// reads no storage while it waits: each change of the open sagas is one
// map lookup, however many requests wait.
func (f *FSM) WaitSagaClosed(ctx context.Context, id string) error {
	for {
		f.sagaMu.Lock()
		_, open := f.sagas[id]
		ch := f.sagaCh
		f.sagaMu.Unlock()
		if !open {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
