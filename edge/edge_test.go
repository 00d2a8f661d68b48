package edge

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCheckRefusesUnknownParameters(t *testing.T) {
	tests := []struct {
		method, target string
		wantCode       string // "" when the request passes
		wantIn         string
	}{
		{"GET", "/v1/accounts/alice", "", ""},
		{"GET", "/v1/accounts/alice?at_seq=3&consistency=stale&timeout=5s", "", ""},
		{"GET", "/v1/accounts/alice?as_of=2000-01-01T00:00:00Z", CodeInvalid, `"as_of"`},
		{"GET", "/v1/accounts/alice?at_seq=1&at_seq=2", CodeInvalid, "2 times"},
		{"POST", "/v1/transfers?forward=false", "", ""},
		{"POST", "/v1/transfers?dry_run=true", CodeInvalid, `"dry_run"`},
		{"GET", "/v1/shards/1/events?after=4&limit=10", "", ""},
		{"GET", "/v1/shards/1/events?from=start", CodeInvalid, `"from"`},
		{"GET", "/v1/cluster?timeout=90s", CodeInvalid, "up to 1m0s"},
		{"GET", "/v1/cluster?timeout=-1s", CodeInvalid, "timeout"},
		{"GET", "/debug/pprof/profile?seconds=5", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.target, nil)
			rt, _, e := Check(r)
			if rt == nil {
				t.Fatalf("no route for %s %s", tt.method, tt.target)
			}
			switch {
			case tt.wantCode == "" && e != nil:
				t.Fatalf("refused: %v", e)
			case tt.wantCode != "" && e == nil:
				t.Fatalf("passed, want %s", tt.wantCode)
			case e != nil && (e.Code != tt.wantCode || e.Status != http.StatusBadRequest || !strings.Contains(e.Message, tt.wantIn)):
				t.Fatalf("got %d %s %q, want 400 %s naming %s", e.Status, e.Code, e.Message, tt.wantCode, tt.wantIn)
			}
		})
	}
}

func TestNoRoute(t *testing.T) {
	w := httptest.NewRecorder()
	NoRoute(w, httptest.NewRequest("DELETE", "/v1/transfers", nil))
	if w.Code != 405 || w.Header().Get("Allow") != "POST" {
		t.Fatalf("DELETE /v1/transfers: %d Allow %q", w.Code, w.Header().Get("Allow"))
	}
	w = httptest.NewRecorder()
	NoRoute(w, httptest.NewRequest("GET", "/v2/nothing", nil))
	if w.Code != 404 || !strings.Contains(w.Body.String(), CodeNotFound) {
		t.Fatalf("GET /v2/nothing: %d %s", w.Code, w.Body)
	}
}

func TestDecodeBatchNamesTheBadItem(t *testing.T) {
	type item struct {
		Amount int64 `json:"amount"`
	}
	var v struct {
		Transfers []item `json:"transfers"`
	}
	e := DecodeBatch([]byte(`{"transfers":[{"amount":1},{"amount":"x"}]}`), &v, "transfers", func() any { return new(item) })
	if e == nil || e.Index == nil || *e.Index != 1 || e.Result != "amount_invalid" {
		t.Fatalf("got %+v", e)
	}
	e = DecodeBatch([]byte(`{"transfers":[{"amount":1,"x":2}]}`), &v, "transfers", func() any { return new(item) })
	if e == nil || e.Index == nil || *e.Index != 0 || e.Result != "invalid_request" {
		t.Fatalf("unknown field: got %+v", e)
	}
}

func TestReadErrorRoundTrip(t *testing.T) {
	w := httptest.NewRecorder()
	WriteError(w, Unavailable("shard %d has no leader", 2))
	e := ReadError(w.Code, w.Body.Bytes())
	if e.Status != 503 || e.Code != CodeUnavailable || e.Message != "shard 2 has no leader" {
		t.Fatalf("got %+v", e)
	}
	if e := ReadError(502, []byte("<html>")); e.Status != 502 || e.Code != CodeInternal {
		t.Fatalf("not an error answer: got %+v", e)
	}
}
