package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"

	"tally/ledger"
	"tally/sink/nats/natstest"
)

func TestSubjectAndMsgID(t *testing.T) {
	tests := []struct {
		prefix  string
		e       ledger.Event
		subject string
		id      string
	}{
		{"tally", ledger.Event{Shard: 0, Seq: 1, Type: ledger.AccountOpened}, "tally.0.AccountOpened", "0-1"},
		{"tally", ledger.Event{Shard: 3, Seq: 120, Type: ledger.PendingVoided}, "tally.3.PendingVoided", "3-120"},
		{"prod.ledger", ledger.Event{Shard: 12, Seq: 18446744073709551615, Type: ledger.SagaCompleted},
			"prod.ledger.12.SagaCompleted", "12-18446744073709551615"},
	}
	for _, tc := range tests {
		if got := Subject(tc.prefix, &tc.e); got != tc.subject {
			t.Errorf("Subject(%q, %d-%d) = %q, want %q", tc.prefix, tc.e.Shard, tc.e.Seq, got, tc.subject)
		}
		if got := MsgID(&tc.e); got != tc.id {
			t.Errorf("MsgID(%d-%d) = %q, want %q", tc.e.Shard, tc.e.Seq, got, tc.id)
		}
		sh, seq, err := ParseMsgID(tc.id)
		if err != nil || sh != tc.e.Shard || seq != tc.e.Seq {
			t.Errorf("ParseMsgID(%q) = %d, %d, %v", tc.id, sh, seq, err)
		}
	}
}

func TestParseMsgIDRefuses(t *testing.T) {
	for _, id := range []string{"", "3", "3-", "-1", "a-1", "3-0", "3-x", "-1-2", "3-1-2"} {
		if _, _, err := ParseMsgID(id); err == nil {
			t.Errorf("ParseMsgID(%q) accepted", id)
		}
	}
}

func TestEveryEventTypeIsASubjectToken(t *testing.T) {
	for _, ty := range ledger.EventTypes {
		e := ledger.Event{Shard: 1, Seq: 2, Type: ty}
		m, err := Message("tally", &e)
		if err != nil {
			t.Fatalf("%s: %v", ty, err)
		}
		if got := strings.Count(m.Subject, "."); got != 2 {
			t.Errorf("%s: subject %q has %d dots, want 2", ty, m.Subject, got)
		}
	}
}

func TestMessageCarriesTheEvent(t *testing.T) {
	e := ledger.Event{Shard: 2, Seq: 7, Type: ledger.TransferPosted, Data: ledger.Data{PendingID: "t-1", Amount: 250}}
	m, err := Message("tally", &e)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(jetstream.MsgIDHeader); got != "2-7" {
		t.Errorf("Nats-Msg-Id = %q, want 2-7", got)
	}
	var back ledger.Event
	if err := json.Unmarshal(m.Data, &back); err != nil {
		t.Fatal(err)
	}
	if back.Shard != 2 || back.Seq != 7 || back.Data.PendingID != "t-1" || back.Data.Amount != 250 {
		t.Errorf("the message's event is %+v", back)
	}
	if _, err := Message("tally", &ledger.Event{Shard: 1, Seq: 1, Type: "Bad.Type"}); err == nil {
		t.Error("a type with a dot made a subject")
	}
}

func TestBadConfig(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{URL: "nats://127.0.0.1:1", Stream: ""}, "--stream is required"},
		{Config{URL: "nats://127.0.0.1:1", Stream: "a.b"}, "a stream name has no dots"},
		{Config{URL: "nats://127.0.0.1:1", Stream: "S", Prefix: "tally.>"}, "--subject-prefix"},
		{Config{URL: "nats://127.0.0.1:1", Stream: "S", Prefix: "a..b"}, "--subject-prefix"},
		{Config{URL: "nats://127.0.0.1:1", Stream: "S", Prefix: "a b"}, "--subject-prefix"},
		{Config{URL: "http://[::1", Stream: "S"}, "nats url"},
	}
	for _, tc := range tests {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
}

// events makes n events per shard on shards shards, seqs 1..n.
func events(shards, n int) []ledger.Event {
	types := []ledger.EventType{ledger.TransferPosted, ledger.TransferPending, ledger.PendingPosted, ledger.PendingVoided}
	var out []ledger.Event
	for seq := 1; seq <= n; seq++ {
		for sh := range shards {
			out = append(out, ledger.Event{Shard: sh, Seq: uint64(seq), Type: types[seq%len(types)],
				Data: ledger.Data{PendingID: fmt.Sprintf("t-%d-%d", sh, seq), Amount: int64(seq)}})
		}
	}
	return out
}

func newTarget(t *testing.T, cfg Config) *Target {
	t.Helper()
	tg, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg
}

// checkOnce checks that the stream holds exactly the events given, each
// once, on its subject.
func checkOnce(t *testing.T, js jetstream.JetStream, stream string, evs []ledger.Event) {
	t.Helper()
	msgs := natstest.ReadStream(t, js, stream, 10*time.Second)
	want := map[string]string{}
	for i := range evs {
		want[MsgID(&evs[i])] = Subject("tally", &evs[i])
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		if seen[m.ID] {
			t.Errorf("message id %s twice", m.ID)
		}
		seen[m.ID] = true
		if want[m.ID] != m.Subject {
			t.Errorf("message %s on %q, want %q", m.ID, m.Subject, want[m.ID])
		}
	}
	if len(msgs) != len(evs) {
		t.Errorf("the stream holds %d messages, want %d", len(msgs), len(evs))
	}
}

func TestApplyPublishesEachEventOnce(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	ctx := context.Background()
	tg := newTarget(t, Config{URL: srv.URL, Stream: "LEDGER", DuplicateWindow: time.Minute})
	if _, ok, err := tg.Positions(ctx); err != nil || ok {
		t.Fatalf("Positions = %v, %v; want no positions and no error", ok, err)
	}
	s, err := js.Stream(ctx, "LEDGER")
	if err != nil {
		t.Fatalf("the stream was not created: %v", err)
	}
	c := s.CachedInfo().Config
	if c.Storage != jetstream.FileStorage || c.Duplicates != time.Minute || len(c.Subjects) != 1 || c.Subjects[0] != "tally.>" {
		t.Errorf("created stream: storage %v, duplicates %v, subjects %v", c.Storage, c.Duplicates, c.Subjects)
	}
	evs := events(4, 300)
	if err := tg.Apply(ctx, evs[:700]); err != nil {
		t.Fatal(err)
	}
	// The batch a crash interrupted comes again, overlapping what is
	// stored, then the rest.
	if err := tg.Apply(ctx, evs[500:]); err != nil {
		t.Fatal(err)
	}
	if got := tg.Duplicates(); got != 200 {
		t.Errorf("%d duplicates dropped, want 200", got)
	}
	// A new process re-sends with the same ids.
	tg2 := newTarget(t, Config{URL: srv.URL, Stream: "LEDGER", DuplicateWindow: time.Minute})
	if err := tg2.Apply(ctx, evs[1000:]); err != nil {
		t.Fatal(err)
	}
	checkOnce(t, js, "LEDGER", evs)
}

func TestExistingStreamWithOtherSubjects(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}
	tg := newTarget(t, Config{URL: srv.URL, Stream: "ORDERS"})
	_, _, err := tg.Positions(ctx)
	var perm *backoff.PermanentError
	if !errors.As(err, &perm) || !strings.Contains(err.Error(), "stream ORDERS takes subjects orders.>, not tally.>") {
		t.Fatalf("Positions on a stream with other subjects = %v, want a permanent error naming them", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("the error is more than one line: %q", err)
	}
	// A new stream whose subjects another one already takes.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"tally.>"}}); err != nil {
		t.Fatal(err)
	}
	_, _, err = newTarget(t, Config{URL: srv.URL, Stream: "LEDGER"}).Positions(ctx)
	if !errors.As(err, &perm) || !strings.Contains(err.Error(), "create stream LEDGER") {
		t.Fatalf("Positions with subjects another stream takes = %v, want a permanent error", err)
	}
}

func TestServerDownThenBack(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	ctx := context.Background()
	tg := newTarget(t, Config{URL: srv.URL, Stream: "LEDGER", AckWait: 2 * time.Second})
	evs := events(2, 500)
	if err := tg.Apply(ctx, evs[:400]); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	// Down: every attempt fails quickly, saying why, and is not permanent.
	err := tg.Apply(ctx, evs[400:])
	var perm *backoff.PermanentError
	if err == nil || errors.As(err, &perm) || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("Apply with the server down = %v, want a retryable 'unreachable' error", err)
	}
	srv.Restart()
	waitFor(t, 10*time.Second, "the target to publish again", func() bool { return tg.Apply(ctx, evs[300:]) == nil })
	checkOnce(t, js, "LEDGER", evs)
}

func TestWrongURLRetries(t *testing.T) {
	// A port nobody listens on: the target is made, and each attempt
	// says the server is unreachable until one answers there.
	tg := newTarget(t, Config{URL: "nats://127.0.0.1:1", Stream: "LEDGER"})
	_, _, err := tg.Positions(context.Background())
	var perm *backoff.PermanentError
	if err == nil || errors.As(err, &perm) || !strings.Contains(err.Error(), "nats server nats://127.0.0.1:1 unreachable") {
		t.Fatalf("Positions with no server = %v, want a retryable 'unreachable' error", err)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestStreamDeletedWhileRunning(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	ctx := context.Background()
	tg := newTarget(t, Config{URL: srv.URL, Stream: "LEDGER", AckWait: 2 * time.Second})
	evs := events(2, 100)
	if err := tg.Apply(ctx, evs[:100]); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, "LEDGER"); err != nil {
		t.Fatal(err)
	}
	// The first attempt may fail; the target then makes the stream again.
	waitFor(t, 10*time.Second, "the target to publish again", func() bool { return tg.Apply(ctx, evs[100:]) == nil })
	checkOnce(t, js, "LEDGER", evs[100:])
}
