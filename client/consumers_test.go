package client

import (
	"context"
	"net/http"
	"testing"
)

// TestConsumerCalls: each consumer call sends its method, path and body,
// and decodes its answer.
func TestConsumerCalls(t *testing.T) {
	const one = `{"name": "sink", "lag": 3, "shards": [{"shard": 0, "seq": 4, "applied_seq": 7, "lag": 3}]}`
	ctx := context.Background()
	for _, tc := range []struct {
		name         string
		call         func(c *Client) error
		answer       string
		method, path string
		body         string // "" : none
	}{
		{"list", func(c *Client) error {
			cs, err := c.Consumers(ctx)
			if err == nil && (len(cs) != 1 || cs[0].Name != "sink" || cs[0].Shards[0].AppliedSeq != 7) {
				t.Errorf("consumers %+v", cs)
			}
			return err
		}, `{"consumers": [` + one + `]}`, "GET", "/v1/consumers", ""},
		{"one", func(c *Client) error {
			v, err := c.Consumer(ctx, "sink")
			if err == nil && (v.Lag != 3 || v.Shards[0].Seq != 4) {
				t.Errorf("consumer %+v", v)
			}
			return err
		}, one, "GET", "/v1/consumers/sink", ""},
		{"set", func(c *Client) error {
			v, err := c.SetOffset(ctx, "sink", 2, 0)
			if err == nil && (v.Name != "sink" || v.Shard != 2 || v.Seq != 0 || v.Lag != 9) {
				t.Errorf("offset %+v", v)
			}
			return err
		}, `{"name": "sink", "shard": 2, "seq": 0, "applied_seq": 9, "lag": 9}`, "PUT", "/v1/consumers/sink/offsets/2", `{"seq": 0}`},
		{"reset", func(c *Client) error {
			_, err := c.ResetConsumer(ctx, "a.b", "0:42,1:17")
			return err
		}, one, "POST", "/v1/consumers/a.b/reset", `{"to": "0:42,1:17"}`},
		{"delete", func(c *Client) error { return c.DeleteConsumer(ctx, "sink") }, `{"ok": true}`, "DELETE", "/v1/consumers/sink", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, c := newFake(t, fixed(200, tc.answer))
			if err := tc.call(c); err != nil {
				t.Fatal(err)
			}
			s := f.last(t)
			if s.Method != tc.method || s.Path != tc.path {
				t.Fatalf("sent %s %s, want %s %s", s.Method, s.Path, tc.method, tc.path)
			}
			if tc.body == "" && s.Body != "" {
				t.Fatalf("sent a body %q", s.Body)
			}
			if tc.body != "" {
				sameJSON(t, s.Body, tc.body)
			}
		})
	}
}

// TestConsumerErrors: the API's refusals reach the caller as *Error with
// their codes.
func TestConsumerErrors(t *testing.T) {
	_, c := newFake(t, fixed(http.StatusConflict, `{"error": {"code": "offset_backwards", "message": "consumer sink is at seq 5 on shard 0"}}`))
	_, err := c.SetOffset(context.Background(), "sink", 0, 1)
	if e, ok := err.(*Error); !ok || e.Status != http.StatusConflict || e.Code != "offset_backwards" {
		t.Fatalf("err %v, want a 409 offset_backwards", err)
	}
	_, c = newFake(t, fixed(http.StatusNotFound, `{"error": {"code": "consumer_not_found", "message": "no"}}`))
	if _, err := c.Consumer(context.Background(), "nobody"); !IsNotFound(err) {
		t.Fatalf("err %v, want not found", err)
	}
}
