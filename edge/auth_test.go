package edge

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"tally/secure"
)

// The roles each route needs are the contract of docs/api.md; a change
// here is a change of who may do what.
func TestRouteRoles(t *testing.T) {
	want := map[string]secure.Role{
		"POST /v1/sagas/{id}/resolve":              secure.RoleOperator,
		"DELETE /v1/consumers/{name}":              secure.RoleOperator,
		"POST /v1/consumers/{name}/reset":          secure.RoleOperator,
		"POST /v1/cluster/join":                    secure.RoleOperator,
		"POST /v1/cluster/leave":                   secure.RoleOperator,
		"POST /v1/cluster/transfer-leader":         secure.RoleOperator,
		"GET /debug/pprof/":                        secure.RoleOperator,
		"GET /debug/pprof/profile":                 secure.RoleOperator,
		"GET /debug/pprof/trace":                   secure.RoleOperator,
		"GET /v1/backup":                           secure.RoleOperator,
		"POST " + InternalPrefix + "{op}":          secure.RoleNode,
		"GET /healthz":                             secure.RoleNone,
		"GET /readyz":                              secure.RoleNone,
		"POST /v1/transfers":                       secure.RoleWrite,
		"PUT /v1/consumers/{name}/offsets/{shard}": secure.RoleWrite,
		"GET /v1/accounts/{id}":                    secure.RoleRead,
		"GET /metrics":                             secure.RoleRead,
	}
	for _, rt := range Routes {
		w, ok := want[(&rt).String()]
		if !ok {
			w = secure.RoleRead
			if rt.Method != http.MethodGet {
				w = secure.RoleWrite
			}
		}
		if got := rt.Needs(); got != w {
			t.Errorf("%s needs %s, want %s", &rt, got, w)
		}
	}
}

func TestGuard(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.json")
	toks := map[secure.Role]string{}
	for name, r := range map[string]secure.Role{"ro": secure.RoleRead, "app": secure.RoleWrite, "admin": secure.RoleOperator} {
		s, err := secure.CreateToken(path, name, r, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		toks[r] = s
	}
	tokens, err := secure.LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	const secret = "a-cluster-secret-of-some-length"
	type cse struct {
		method, path, bearer string
		want                 int // 0: admitted
	}
	check := func(t *testing.T, g *Guard, cases []cse) {
		t.Helper()
		for _, c := range cases {
			r := httptest.NewRequest(c.method, c.path, nil)
			if c.bearer != "" {
				r.Header.Set("Authorization", "Bearer "+c.bearer)
			}
			rt := Lookup(r)
			if rt == nil {
				t.Fatalf("no route for %s %s", c.method, c.path)
			}
			got := 0
			if e := g.Admit(r, rt); e != nil {
				got = e.Status
				if (got == 401) != (e.Code == CodeUnauthenticated) || (got == 403) != (e.Code == CodeForbidden) {
					t.Errorf("%s %s: status %d with code %s", c.method, c.path, got, e.Code)
				}
			}
			if got != c.want {
				t.Errorf("%s %s with %q: %d, want %d", c.method, c.path, c.bearer, got, c.want)
			}
		}
	}
	internal := InternalPrefix + "commands"
	t.Run("tokens and secret", func(t *testing.T) {
		check(t, &Guard{Tokens: tokens, Secret: secret}, []cse{
			{"GET", "/healthz", "", 0},
			{"GET", "/healthz", "tly_unknown", 0},
			{"GET", "/v1/cluster", "", 401},
			{"GET", "/v1/cluster", "tly_unknown", 401},
			{"GET", "/v1/cluster", toks[secure.RoleRead], 0},
			{"POST", "/v1/transfers", toks[secure.RoleRead], 403},
			{"POST", "/v1/transfers", toks[secure.RoleWrite], 0},
			{"POST", "/v1/sagas/x/resolve", toks[secure.RoleWrite], 403},
			{"POST", "/v1/sagas/x/resolve", toks[secure.RoleOperator], 0},
			{"GET", "/debug/pprof/", toks[secure.RoleWrite], 403},
			{"POST", internal, "", 403}, // no token could help: nodes only
			{"POST", internal, toks[secure.RoleOperator], 403},
			{"POST", internal, secret, 0},
			{"POST", internal, secret + "x", 401},
			{"POST", "/v1/cluster/join", secret, 0},
		})
	})
	t.Run("secret only", func(t *testing.T) {
		check(t, &Guard{Secret: secret}, []cse{
			{"POST", "/v1/transfers", "", 0},
			{"POST", "/v1/transfers", "tly_whatever", 0},
			{"POST", internal, "", 403},
			{"POST", internal, "tly_whatever", 403},
			{"POST", internal, secret, 0},
		})
	})
	t.Run("TLS: the secret proves nothing", func(t *testing.T) {
		check(t, &Guard{Tokens: tokens, Secret: secret, TLS: true}, []cse{
			{"POST", internal, secret, 401},
			{"POST", internal, toks[secure.RoleOperator], 403},
		})
	})
	t.Run("open", func(t *testing.T) {
		check(t, &Guard{}, []cse{
			{"POST", internal, "", 0},
			{"POST", "/v1/cluster/join", "", 0},
		})
	})
	r := httptest.NewRequest("GET", "/v1/cluster", nil)
	r.Header.Set("Authorization", "bearer "+toks[secure.RoleRead])
	if p, e := (&Guard{Tokens: tokens}).Identify(r); e != nil || p.Role != secure.RoleRead {
		t.Errorf("lower-case bearer: %v %v", p, e)
	}
	r.Header.Set("Authorization", "Basic abc")
	if _, e := (&Guard{Tokens: tokens}).Identify(r); e == nil || e.Status != 401 {
		t.Errorf("Basic credentials: %v", e)
	}
}

// TestRevokedEndsLongAnswers: a stream admitted with a token ends once the
// token is revoked; one admitted with another token goes on.
func TestRevokedEndsLongAnswers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.json")
	gone, err := secure.CreateToken(path, "gone", secure.RoleRead, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kept, err := secure.CreateToken(path, "kept", secure.RoleRead, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := secure.LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	watch, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	go tokens.Watch(watch, path, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	g := &Guard{Tokens: tokens}
	stream := func(tok string) context.Context {
		r := httptest.NewRequest("GET", "/v1/events?follow=true", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		ctx, cancel := g.Revoked(context.Background(), r, Lookup(r))
		t.Cleanup(cancel)
		return ctx
	}
	a, b := stream(gone), stream(kept)
	time.Sleep(50 * time.Millisecond)
	if a.Err() != nil || b.Err() != nil {
		t.Fatal("a stream ended before any revocation")
	}
	if err := secure.RevokeToken(path, "gone"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the revoked token's stream goes on")
	}
	time.Sleep(50 * time.Millisecond)
	if b.Err() != nil {
		t.Fatal("the other token's stream ended too")
	}
}
