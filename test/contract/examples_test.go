package contract

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// docExample is one request of docs/api.md with the answer it shows.
type docExample struct {
	line   int // of the request, in docs/api.md
	method string
	path   string
	body   string // "" when the request has none
	status int
	want   string // the answer's JSON as shown, "" when none is shown
}

var (
	// A request line: the method and path, optionally followed by a
	// comment in parentheses. A line that also holds a body is syntax.
	docRequest = regexp.MustCompile(`^(GET|POST|PUT|PATCH|DELETE) (/\S*)(\s+\(.*\))?$`)
	docStatus  = regexp.MustCompile(`^([1-5]\d\d)(?:\s+(.*))?$`)
)

// docUnknowable are the fields whose scalar values a walkthrough cannot
// know in advance: they depend on Raft's own entries, on the clock and on
// everything logged before. Only their presence and JSON type are checked.
var docUnknowable = map[string]bool{
	"seq": true, "created_seq": true, "resolved_seq": true, "applied_seq": true,
	"applied_index": true, "commit_index": true, "raft_index": true, "term": true,
	"events": true, // as a number: a count of events
	"time":   true, "created_at": true, "expires_at": true,
	"hash": true, "prev_hash": true, "head_hash": true, "state_hash": true,
	"next": true,
}

// parseDocExamples returns the examples of a Markdown document, in order.
// A fenced block is an example when its first line is a request line; in
// it, every request is followed by an optional one-line JSON body and a
// status line whose JSON may run over the next lines.
func parseDocExamples(doc string) ([]docExample, error) {
	var out []docExample
	lines := strings.Split(doc, "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "```") {
			continue
		}
		start := i + 1
		end := start
		for end < len(lines) && !strings.HasPrefix(lines[end], "```") {
			end++
		}
		i = end
		if start >= end || !docRequest.MatchString(lines[start]) {
			continue
		}
		exs, err := parseDocBlock(lines[start:end], start+1)
		if err != nil {
			return nil, err
		}
		out = append(out, exs...)
	}
	return out, nil
}

func parseDocBlock(lines []string, first int) ([]docExample, error) {
	var out []docExample
	for k := 0; k < len(lines); {
		if strings.TrimSpace(lines[k]) == "" {
			k++
			continue
		}
		m := docRequest.FindStringSubmatch(lines[k])
		if m == nil {
			return nil, fmt.Errorf("docs/api.md:%d: want a request line, got %q", first+k, lines[k])
		}
		ex := docExample{line: first + k, method: m[1], path: m[2]}
		k++
		if k < len(lines) && strings.HasPrefix(lines[k], "{") {
			ex.body = lines[k]
			k++
		}
		if k >= len(lines) {
			return nil, fmt.Errorf("docs/api.md:%d: request without a status line", ex.line)
		}
		sm := docStatus.FindStringSubmatch(lines[k])
		if sm == nil {
			return nil, fmt.Errorf("docs/api.md:%d: want a status line, got %q", first+k, lines[k])
		}
		ex.status, _ = strconv.Atoi(sm[1])
		want := sm[2]
		k++
		for want != "" && !balanced(want) && k < len(lines) {
			want += "\n" + lines[k]
			k++
		}
		if want != "" && !balanced(want) {
			return nil, fmt.Errorf("docs/api.md:%d: the answer's JSON is not closed", ex.line)
		}
		ex.want = want
		out = append(out, ex)
	}
	return out, nil
}

// balanced reports whether every bracket opened in s outside strings is
// closed.
func balanced(s string) bool {
	depth, inStr, esc := 0, false, false
	for _, c := range s {
		switch {
		case esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case c == '"':
			inStr = !inStr
		case !inStr && (c == '{' || c == '['):
			depth++
		case !inStr && (c == '}' || c == ']'):
			depth--
		}
	}
	return depth == 0 && !inStr
}

// docMore marks the end of an array that the document shows only the
// start of.
const (
	docMore     = "\x00more"
	docMoreJSON = `"\u0000more"`
)

// docJSON turns an answer as the document shows it into JSON: a bare
// `...` in an object (fields not shown) is dropped, and in an array
// (items not shown) becomes the docMore marker.
func docJSON(s string) string {
	var b strings.Builder
	var stack []byte
	inStr, esc := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case c == '"':
			inStr = !inStr
		case !inStr && (c == '{' || c == '['):
			stack = append(stack, c)
		case !inStr && (c == '}' || c == ']') && len(stack) > 0:
			stack = stack[:len(stack)-1]
		case !inStr && strings.HasPrefix(s[i:], "..."):
			i += 2
			if len(stack) > 0 && stack[len(stack)-1] == '[' {
				b.WriteString(docMoreJSON)
				continue
			}
			// Drop the comma before the dots, if any.
			out := strings.TrimRight(b.String(), " \n\t")
			out = strings.TrimSuffix(out, ",")
			b.Reset()
			b.WriteString(out)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// docMatch reports where got does not contain want: every key of a
// wanted object must be in got's, wanted arrays must have got's items
// (or its first items, when the document ends one with `...`), and
// scalars must be equal, except "..." and docUnknowable fields.
func docMatch(path string, want, got any) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want an object, got %v", path, got)}
		}
		var bad []string
		for k, wv := range w {
			gv, ok := g[k]
			switch {
			case !ok:
				bad = append(bad, fmt.Sprintf("%s.%s: missing", path, k))
			case docUnknowable[k] && isScalar(wv):
				if reflect.TypeOf(wv) != reflect.TypeOf(gv) {
					bad = append(bad, fmt.Sprintf("%s.%s: want a %T, got %v", path, k, wv, gv))
				}
			default:
				bad = append(bad, docMatch(path+"."+k, wv, gv)...)
			}
		}
		return bad
	case []any:
		g, ok := got.([]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want an array, got %v", path, got)}
		}
		more := len(w) > 0 && w[len(w)-1] == docMore
		if more {
			w = w[:len(w)-1]
		}
		if len(g) < len(w) || (!more && len(g) != len(w)) {
			return []string{fmt.Sprintf("%s: want %d items (more: %v), got %d", path, len(w), more, len(g))}
		}
		var bad []string
		for i := range w {
			bad = append(bad, docMatch(fmt.Sprintf("%s[%d]", path, i), w[i], g[i])...)
		}
		return bad
	case string:
		if w == "..." {
			return nil
		}
	}
	if !reflect.DeepEqual(want, got) {
		return []string{fmt.Sprintf("%s: want %v, got %v", path, want, got)}
	}
	return nil
}

func isScalar(v any) bool {
	switch v.(type) {
	case string, json.Number, bool, nil:
		return true
	}
	return false
}

func decodeNumbers(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// TestDocExamples runs the examples of docs/api.md in document order,
// once against a one-node cluster's node and once against a proxy in
// front of another one-node cluster, and checks each answer against the
// one the document shows and against the OpenAPI document. An example
// whose answers differ between the two, beyond what the walkthrough
// cannot know, fails too: the proxy serves the same API.
func TestDocExamples(t *testing.T) {
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	exs, err := parseDocExamples(string(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(exs) < 10 {
		t.Fatalf("found %d examples in docs/api.md; the parser or the document is broken", len(exs))
	}
	var node, proxy []*exchange
	t.Run("run", func(t *testing.T) {
		for kind, out := range map[string]*[]*exchange{"node": &node, "proxy": &proxy} {
			t.Run(kind, func(t *testing.T) {
				t.Parallel()
				*out = runDocExamples(t, newServer(t, kind, startCluster(t, 1)), exs)
			})
		}
	})
	t.Run("same", func(t *testing.T) {
		if len(node) != len(exs) || len(proxy) != len(exs) {
			t.Skipf("the walkthrough stopped early (node %d, proxy %d of %d examples)", len(node), len(proxy), len(exs))
		}
		for i, ex := range exs {
			if d := sameAnswer(node[i], proxy[i]); d != "" {
				t.Errorf("docs/api.md:%d: %s %s: node and proxy differ: %s", ex.line, ex.method, ex.path, d)
			}
		}
	})
}

// runDocExamples runs exs in order against s and returns the exchanges,
// up to the first example that failed (later ones build on it).
func runDocExamples(t *testing.T, s *server, exs []docExample) []*exchange {
	fix := strings.NewReplacer("127.0.0.1:8001", s.c.HTTPAddr(1), "127.0.0.1:7001", "n1")
	var out []*exchange
	for _, ex := range exs {
		name := fmt.Sprintf("line %d %s %s", ex.line, ex.method, ex.path)
		ok := t.Run(name, func(t *testing.T) {
			var body []byte
			if ex.body != "" {
				body = []byte(ex.body)
			}
			a := s.do(t, ex.method, ex.path, body)
			out = append(out, a)
			if a.status != ex.status {
				t.Fatalf("docs/api.md:%d: status %d, want %d: %s", ex.line, a.status, ex.status, a.answer)
			}
			if ex.want == "" {
				return
			}
			want, err := decodeNumbers(docJSON(fix.Replace(ex.want)))
			if err != nil {
				t.Fatalf("docs/api.md:%d: the answer shown is not JSON once `...` is read: %v\n%s", ex.line, err, docJSON(ex.want))
			}
			got, err := decodeNumbers(string(bytes.TrimSpace(a.answer)))
			if err != nil {
				t.Fatalf("docs/api.md:%d: the answer is not JSON: %v: %s", ex.line, err, a.answer)
			}
			for _, d := range docMatch("answer", want, got) {
				t.Errorf("docs/api.md:%d: %s", ex.line, d)
			}
			if t.Failed() {
				t.Logf("answer: %s", a.answer)
			}
		})
		if !ok {
			break
		}
	}
	return out
}

// sameAnswer describes how two answers to the same example differ, or
// is "": the status, and the JSON with the values of docUnknowable
// fields left out, must be equal.
func sameAnswer(a, b *exchange) string {
	if a.status != b.status {
		return fmt.Sprintf("status %d and %d", a.status, b.status)
	}
	va, erra := decodeNumbers(string(a.answer))
	vb, errb := decodeNumbers(string(b.answer))
	if erra != nil || errb != nil {
		if !bytes.Equal(a.answer, b.answer) {
			return fmt.Sprintf("answers %q and %q", a.answer, b.answer)
		}
		return ""
	}
	if ma, mb := maskUnknowable(va), maskUnknowable(vb); !reflect.DeepEqual(ma, mb) {
		ja, _ := json.Marshal(ma)
		jb, _ := json.Marshal(mb)
		return fmt.Sprintf("answers\n  %s\n  %s", ja, jb)
	}
	return ""
}

// maskUnknowable replaces the values of docUnknowable fields, and of
// addresses that differ between clusters, with their JSON type.
func maskUnknowable(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			if docUnknowable[k] || docAddress[k] {
				out[k] = fmt.Sprintf("%T", x)
				continue
			}
			out[k] = maskUnknowable(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = maskUnknowable(x)
		}
		return out
	}
	return v
}

// docAddress are the fields that hold a node's address, which differs
// between the two clusters of TestDocExamples.
var docAddress = map[string]bool{"http": true, "leader_http": true}

// TestDocParser pins the reading of the document's conventions.
func TestDocParser(t *testing.T) {
	exs, err := parseDocExamples("x\n```\nPOST /v1/a?b=1\n{\"k\": 1}\n200 {\"r\": [1,\n  2]}\nGET /v1/c   (comment)\n404 {\"e\": {\"code\": \"x\", ...}}\n```\n" +
		"```\nPOST /v1/j   {\"id\": 1}\n200 {}\n```\n```\n{\"error\": 1}\n```\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []docExample{
		{line: 3, method: "POST", path: "/v1/a?b=1", body: `{"k": 1}`, status: 200, want: "{\"r\": [1,\n  2]}"},
		{line: 7, method: "GET", path: "/v1/c", status: 404, want: `{"e": {"code": "x", ...}}`},
	}
	if !reflect.DeepEqual(exs, want) {
		t.Errorf("parsed\n%+v\nwant\n%+v", exs, want)
	}
	for in, out := range map[string]string{
		`{"a": 1, ...}`:                   `{"a": 1}`,
		`{"a": {...}}`:                    `{"a": {}}`,
		`{"a": [{"b": 1}, ...]}`:          `{"a": [{"b": 1}, "\u0000more"]}`,
		`{"a": "...", "b": "x...y", ...}`: `{"a": "...", "b": "x...y"}`,
	} {
		if got := docJSON(in); got != out {
			t.Errorf("docJSON(%s) = %q, want %q", in, got, out)
		}
	}
	w, _ := decodeNumbers(docJSON(`{"a": [1, ...], "seq": 5, "b": "...", "c": {"d": true, ...}}`))
	if bad := docMatch("x", w, mustDecode(t, `{"a": [1, 2, 3], "seq": 9, "b": "any", "c": {"d": true, "e": 1}, "f": 0}`)); len(bad) > 0 {
		t.Errorf("want a match: %v", bad)
	}
	for _, got := range []string{
		`{"a": [2], "seq": 5, "b": "", "c": {"d": true}}`,
		`{"a": [1], "seq": "5", "b": "", "c": {"d": true}}`,
		`{"a": [1], "seq": 5, "c": {"d": true}}`,
		`{"a": [1], "seq": 5, "b": "", "c": {"d": false}}`,
		`{"a": [], "seq": 5, "b": "", "c": {"d": true}}`,
	} {
		if bad := docMatch("x", w, mustDecode(t, got)); len(bad) == 0 {
			t.Errorf("want a mismatch for %s", got)
		}
	}
	exact, _ := decodeNumbers(`{"a": [1]}`)
	if bad := docMatch("x", exact, mustDecode(t, `{"a": [1, 2]}`)); len(bad) == 0 {
		t.Errorf("an array without ... must match in length")
	}
}

func mustDecode(t *testing.T, s string) any {
	t.Helper()
	v, err := decodeNumbers(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
