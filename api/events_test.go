package api_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestEventStreamBadInput: every malformed stream request is a 4xx with a
// code, before anything is streamed.
func TestEventStreamBadInput(t *testing.T) {
	n := startCluster1(t)
	tests := []struct {
		path   string
		status int
		code   string
	}{
		{"/v1/shards/9/events?follow=true", 404, "shard_not_found"},
		{"/v1/shards/x/events", 404, "shard_not_found"},
		{"/v1/shards/0/events?after=-1&follow=true", 400, "invalid_request"},
		{"/v1/shards/0/events?follow=maybe", 400, "invalid_request"},
		{"/v1/shards/0/events?types=Nope&follow=true", 400, "invalid_request"},
		{"/v1/shards/0/events?account=bad%20id", 400, "invalid_request"},
		{"/v1/shards/0/events?currency=usd", 400, "invalid_request"},
		{"/v1/shards/0/events?follow=true&from=start", 400, "invalid_request"},
		{"/v1/events?after=0:1,0:2", 400, "invalid_request"},
		{"/v1/events?after=9:1", 400, "invalid_request"},
		{"/v1/events?after=0:-4", 400, "invalid_request"},
		{"/v1/events?after=junk&follow=true", 400, "invalid_request"},
		{"/v1/events?min_seq=3", 400, "invalid_request"},
	}
	for _, tt := range tests {
		a := n.get(t, tt.path)
		if a.status != tt.status {
			t.Errorf("GET %s: %d, want %d: %s", tt.path, a.status, tt.status, a.body)
			continue
		}
		if code, _ := a.errorCode(t); code != tt.code {
			t.Errorf("GET %s: code %s, want %s", tt.path, code, tt.code)
		}
	}
}

// TestEventStreamFollows: a following stream sends what is applied, then
// what commits later, then progress while idle; Last-Event-ID resumes a
// server-sent stream after the event it names.
func TestEventStreamFollows(t *testing.T) {
	n := startCluster1(t)
	n.accounts(t, "alice", "USD", "carol", "USD")
	req, _ := http.NewRequest(http.MethodGet, n.url()+"/v1/shards/3/events?follow=true", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "application/x-ndjson" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, ct)
	}
	lines := make(chan map[string]any, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var v map[string]any
			if json.Unmarshal(sc.Bytes(), &v) == nil {
				lines <- v
			}
		}
		close(lines)
	}()
	next := func() map[string]any {
		t.Helper()
		select {
		case v := <-lines:
			return v
		case <-time.After(5 * time.Second):
			t.Fatal("no line within 5s")
		}
		return nil
	}
	for want := 1.0; want <= 2; want++ {
		if v := next(); v["seq"] != want || v["type"] != "AccountOpened" {
			t.Fatalf("line %v, want AccountOpened seq %v", v, want)
		}
	}
	n.transfer(t, map[string]any{"id": "t-1", "debit": "@world", "credit": "alice", "amount": 10})
	if v := next(); v["seq"] != 3.0 || v["type"] != "TransferPosted" {
		t.Fatalf("live line %v, want TransferPosted seq 3", v)
	}
	p, ok := next()["progress"].(map[string]any)
	if !ok || p["seq"] != 3.0 || p["shard"] != 3.0 {
		t.Fatalf("idle line %v, want progress at shard 3 seq 3", p)
	}

	// A filtered page holds at most limit events, and its cursor is the
	// last one's seq.
	var pg struct {
		Events []map[string]any `json:"events"`
		Next   string           `json:"next"`
	}
	if err := json.Unmarshal(n.get(t, "/v1/shards/3/events?types=AccountOpened&limit=1").body, &pg); err != nil ||
		len(pg.Events) != 1 || pg.Events[0]["seq"] != 1.0 || pg.Next != "1" {
		t.Fatalf("filtered page with limit 1: %+v (%v)", pg, err)
	}

	a := do(t, http.MethodGet, n.url()+"/v1/shards/3/events?timeout=1500ms&follow=true", nil,
		"Accept", "text/event-stream", "Last-Event-ID", "3:2")
	body := string(a.body)
	if a.status != 200 || !strings.HasPrefix(body, "id: 3:3\nevent: TransferPosted\ndata: {") ||
		!strings.Contains(body, "event: progress\n") {
		t.Fatalf("server-sent events after 3:2: %d %q", a.status, body)
	}
}
