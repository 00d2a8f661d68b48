package contract

import (
	"net/url"
	"regexp"
	"slices"
	"sort"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"tally/edge"
)

// openQuery marks an operation whose route takes any query parameter
// (edge.Route.Open): the profiler's.
const openQuery = "x-open-query"

var wildcard = regexp.MustCompile(`\{([a-z]+)\}`)

// TestDocumentMatchesRoutes keeps docs/openapi.yaml and edge.Routes
// equal: every route is an operation with the same path, method, path
// parameters and query parameters, and every operation is a route. So a
// route added without documenting it fails here.
func TestDocumentMatchesRoutes(t *testing.T) {
	s := loadSpec(t)
	names := queryNames(s.doc)
	common := commonParams(names)
	if len(common) == 0 {
		t.Fatal("the edge takes no query parameter on every route; the probe is broken")
	}
	for i := range edge.Routes {
		rt := &edge.Routes[i]
		t.Run(rt.String(), func(t *testing.T) {
			item := s.doc.Paths.Value(rt.Pattern)
			if item == nil {
				t.Fatalf("the document has no path %s", rt.Pattern)
			}
			op := item.GetOperation(rt.Method)
			if op == nil {
				t.Fatalf("the document has no %s on %s", rt.Method, rt.Pattern)
			}
			path, query := params(op)
			if want := pathParams(rt.Pattern); !slices.Equal(path, want) {
				t.Errorf("path parameters %v, want %v", path, want)
			}
			var want []string
			for _, n := range names {
				if accepts(rt, n, common) {
					want = append(want, n)
				}
			}
			if !slices.Equal(query, want) {
				t.Errorf("query parameters %v, the edge takes %v", query, want)
			}
			if open := op.Extensions[openQuery] == true; open != rt.Open {
				t.Errorf("%s is %v, the route's Open is %v", openQuery, open, rt.Open)
			}
		})
	}
	for path, item := range s.doc.Paths.Map() {
		for method := range item.Operations() {
			if !slices.ContainsFunc(edge.Routes, func(rt edge.Route) bool { return rt.Method == method && rt.Pattern == path }) {
				t.Errorf("the document has %s %s, which edge.Routes lacks", method, path)
			}
		}
	}
}

// accepts reports whether the edge takes query parameter name on rt. An
// open route takes anything; the document lists only the parameters
// every route takes for it.
func accepts(rt *edge.Route, name string, common []string) bool {
	if rt.Open {
		return slices.Contains(common, name)
	}
	return rt.CheckQuery(url.Values{name: {"1"}}) == nil
}

// commonParams returns the names, of those given, that the edge takes on
// every route that is not open.
func commonParams(names []string) []string {
	var out []string
	for _, n := range names {
		all := true
		for i := range edge.Routes {
			if rt := &edge.Routes[i]; !rt.Open && rt.CheckQuery(url.Values{n: {"1"}}) != nil {
				all = false
			}
		}
		if all {
			out = append(out, n)
		}
	}
	return out
}

// queryNames returns every query parameter name that the document or
// edge.Routes mentions, sorted.
func queryNames(doc *openapi3.T) []string {
	seen := map[string]bool{}
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			_, q := params(op)
			for _, n := range q {
				seen[n] = true
			}
		}
	}
	for _, rt := range edge.Routes {
		for _, n := range rt.Params {
			seen[n] = true
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// params returns an operation's path and query parameter names, sorted.
func params(op *openapi3.Operation) (path, query []string) {
	for _, p := range op.Parameters {
		switch p.Value.In {
		case openapi3.ParameterInPath:
			path = append(path, p.Value.Name)
		case openapi3.ParameterInQuery:
			query = append(query, p.Value.Name)
		}
	}
	sort.Strings(path)
	sort.Strings(query)
	return path, query
}

// pathParams returns the wildcards of a ServeMux pattern, sorted.
func pathParams(pattern string) []string {
	var out []string
	for _, m := range wildcard.FindAllStringSubmatch(pattern, -1) {
		out = append(out, m[1])
	}
	sort.Strings(out)
	return out
}
