package api

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"tally/edge"
)

// TestRoutesMatchTheEdge keeps the node's routes and the edge's table
// equal: a route the edge does not know would be refused before its
// handler, and one the node lacks would answer 404 at a node while the
// proxy forwards it.
func TestRoutesMatchTheEdge(t *testing.T) {
	s := &Server{mux: http.NewServeMux(), metrics: &metrics{reg: prometheus.NewRegistry()}}
	s.routes()
	wildcard := regexp.MustCompile(`\{[a-z]+\}`)
	for _, rt := range edge.Routes {
		path := wildcard.ReplaceAllString(rt.Pattern, "0")
		if _, pattern := s.mux.Handler(httptest.NewRequest(rt.Method, path, nil)); pattern != rt.Method+" "+rt.Pattern {
			t.Errorf("edge route %s: the node serves it as %q", rt.String(), pattern)
		}
	}
	for _, p := range s.patterns {
		if !slices.ContainsFunc(edge.Routes, func(rt edge.Route) bool { return rt.Method+" "+rt.Pattern == p }) {
			t.Errorf("the node serves %s, which edge.Routes lacks", p)
		}
	}
	if len(s.patterns) < 15 {
		t.Fatalf("only %d handler routes registered", len(s.patterns))
	}
}
