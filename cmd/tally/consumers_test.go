package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"tally/api"
	"tally/client"
	"tally/ledger"
	"tally/node"
	"tally/shard/shardtest"
)

// consumerNode starts a one-node cluster serving the API, with alice and
// carol on shard 3, and returns its address.
func consumerNode(t *testing.T) string {
	t.Helper()
	c := shardtest.New(t, 1, 4, shardtest.WithTiming(shardtest.SoloTiming),
		shardtest.WithHandler(func(svc *node.Service, log *slog.Logger) http.Handler { return api.New(svc, log) }))
	c.WaitReady(t)
	addr := c.HTTPAddr(1)
	shardtest.WaitFor(t, shardtest.LeaderTimeout, "the node ready", func() bool {
		_, err := client.New(addr).Consumers(context.Background())
		return err == nil
	})
	_, err := client.New(addr).CreateAccounts(context.Background(), []ledger.Account{{ID: "alice", Currency: "USD"}, {ID: "carol", Currency: "USD"}})
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestConsumersCommands runs every consumers command against a node:
// tables, --json, and refusals as errors.
func TestConsumersCommands(t *testing.T) {
	addr := consumerNode(t)
	if _, err := client.New(addr).SetOffset(context.Background(), "orders-sink", 3, 1); err != nil {
		t.Fatal(err)
	}

	out := mustRun(t, addr, "consumers", "list")
	if f := fields(t, out, "orders-sink"); f[1] != "1" || f[2] != "1" {
		t.Fatalf("list: %q\n%s", f, out)
	}
	out = mustRun(t, addr, "consumers", "show", "orders-sink")
	if f := fields(t, out, "3"); strings.Join(f, " ") != "3 1 2 1" {
		t.Fatalf("show, shard 3: %q\n%s", f, out)
	}
	if !strings.Contains(out, "consumer orders-sink: lag 1") {
		t.Fatalf("show: no total lag\n%s", out)
	}

	out = mustRun(t, addr, "consumers", "reset", "orders-sink", "--to", "end")
	if f := fields(t, out, "3"); strings.Join(f, " ") != "3 2 2 0" {
		t.Fatalf("reset to the end: %q\n%s", f, out)
	}
	out = mustRun(t, addr, "--json", "consumers", "reset", "orders-sink", "--to", "3:0")
	var c client.Consumer
	if err := json.Unmarshal([]byte(out), &c); err != nil || len(c.Shards) != 1 || c.Shards[0].Seq != 0 || c.Lag != 2 {
		t.Fatalf("reset --json: %+v, %v\n%s", c, err, out)
	}
	out = mustRun(t, addr, "--json", "consumers", "show", "orders-sink")
	if err := json.Unmarshal([]byte(out), &c); err != nil || len(c.Shards) != 4 || c.Shards[3].Seq != 0 {
		t.Fatalf("show --json: %+v, %v\n%s", c, err, out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"consumers", "reset", "orders-sink"}, "--to is required"},
		{[]string{"consumers", "reset", "orders-sink", "--to", "3:99"}, "invalid_request"},
		{[]string{"consumers", "reset", "orders-sink", "--to", "yesterday"}, "invalid_request"},
		{[]string{"consumers", "show", "bad name"}, "invalid_request"},
		{[]string{"consumers", "show"}, "accepts 1 arg"},
	} {
		if _, _, err := run(t, addr, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("tally %s: %v, want an error with %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}

	if out := mustRun(t, addr, "consumers", "delete", "orders-sink"); !strings.Contains(out, "deleted") {
		t.Fatalf("delete: %s", out)
	}
	if _, _, err := run(t, addr, "consumers", "show", "orders-sink"); err == nil || !strings.Contains(err.Error(), "consumer_not_found") {
		t.Fatalf("show after delete: %v", err)
	}
	if _, stderr, err := run(t, addr, "consumers", "list"); err != nil || !strings.Contains(stderr, "0 consumers") {
		t.Fatalf("list after delete: %v %q", err, stderr)
	}
}
