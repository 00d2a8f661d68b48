package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"tally/client"
	"tally/ledger"
)

// tailSeqs decodes tail's NDJSON into "shard:seq" strings.
func tailSeqs(t *testing.T, out string) []string {
	t.Helper()
	var got []string
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e ledger.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got = append(got, fmt.Sprintf("%d:%d", e.Shard, e.Seq))
	}
	return got
}

func deposit(t *testing.T, addr, id string) {
	t.Helper()
	res, err := client.New(addr).CreateTransfers(context.Background(),
		[]ledger.Transfer{{ID: id, Debit: ledger.World, Credit: "alice", Amount: 100}})
	if err != nil || res[0].Status != ledger.StatusPosted {
		t.Fatalf("deposit %s: %v %v", id, res, err)
	}
}

func TestEventsTail(t *testing.T) {
	addr := consumerNode(t) // alice and carol opened on shard 3: seqs 1 and 2
	deposit(t, addr, "d-1")

	out := mustRun(t, addr, "events", "tail")
	if got := fields(t, out, "3"); got[1] != "1" || got[3] != "AccountOpened" || got[4] != "alice" {
		t.Errorf("first row %v in:\n%s", got, out)
	}
	if n := strings.Count(out, "\n"); n != 4 {
		t.Errorf("%d lines, want a header and 3 events:\n%s", n, out)
	}
	out = mustRun(t, addr, "--json", "events", "tail", "--shard", "3", "--after", "1")
	if got := fmt.Sprint(tailSeqs(t, out)); got != "[3:2 3:3]" {
		t.Errorf("after 1: %s", got)
	}
	out = mustRun(t, addr, "--json", "events", "tail", "--after", "3:2", "--types", "TransferPosted")
	if got := fmt.Sprint(tailSeqs(t, out)); got != "[3:3]" {
		t.Errorf("after 3:2, TransferPosted: %s", got)
	}
	out = mustRun(t, addr, "--json", "events", "tail", "--account", "carol")
	if got := fmt.Sprint(tailSeqs(t, out)); got != "[3:2]" {
		t.Errorf("carol's: %s", got)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", "middle"}, "--from"},
		{[]string{"--after", "5"}, "needs --shard"},
		{[]string{"--after", "0:x"}, "not shard:seq"},
		{[]string{"--types", "Nope"}, "invalid_request"},
		{[]string{"--shard", "9"}, "shard 9"},
	} {
		if _, _, err := run(t, addr, append([]string{"events", "tail"}, tt.args...)...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("tail %v: %v, want an error with %q", tt.args, err, tt.want)
		}
	}
}

// TestEventsTailConsumer: a consumer's tail resumes where its last run
// stopped, and stores its offset as it goes.
func TestEventsTailConsumer(t *testing.T) {
	addr := consumerNode(t)
	out := mustRun(t, addr, "--json", "events", "tail", "--follow", "--consumer", "export", "--limit", "1")
	if got := fmt.Sprint(tailSeqs(t, out)); got != "[3:1]" {
		t.Fatalf("first run: %s", got)
	}
	c, err := client.New(addr).Consumer(context.Background(), "export")
	if err != nil || c.Shards[3].Seq != 1 {
		t.Fatalf("stored offsets %+v %v", c, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	go func() {
		time.Sleep(300 * time.Millisecond) // a transfer while the command follows
		deposit(t, addr, "live")
	}()
	out, _, err = runCtx(t, ctx, addr, "--json", "events", "tail", "--follow", "--consumer", "export", "--limit", "2")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(tailSeqs(t, out)); got != "[3:2 3:3]" {
		t.Errorf("second run: %s", got)
	}
	if c, err := client.New(addr).Consumer(context.Background(), "export"); err != nil || c.Shards[3].Seq != 3 {
		t.Errorf("stored offsets %+v %v", c, err)
	}

	// A new consumer from the end sees only what comes next.
	go func() {
		time.Sleep(500 * time.Millisecond)
		deposit(t, addr, "later")
	}()
	out, _, err = runCtx(t, ctx, addr, "--json", "events", "tail", "--follow", "--from", "end", "--consumer", "late", "--limit", "1")
	if got := fmt.Sprint(tailSeqs(t, out)); err != nil || got != "[3:4]" {
		t.Errorf("from end: %s %v", got, err)
	}
}

func TestEventsFollow(t *testing.T) {
	addr := consumerNode(t)
	deposit(t, addr, "dep-1")
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	go func() {
		time.Sleep(300 * time.Millisecond) // a transfer while the command follows
		deposit(t, addr, "live")
	}()
	out, _, err := runCtx(t, ctx, addr, "events", "--shard", "3", "--follow", "--after", "2")
	if err != nil {
		t.Errorf("an interrupted follow is a normal end: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "dep-1") || !strings.Contains(lines[1], "live @world -> alice 100") {
		t.Errorf("followed:\n%s", out)
	}
}
