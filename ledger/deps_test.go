package ledger

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestOnlyStandardLibrary keeps the ledger pure: it may depend on the
// standard library alone, never on another package of this module or a
// third-party module.
func TestOnlyStandardLibrary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	self, err := exec.Command("go", "list", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	me := strings.TrimSpace(string(self))
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, std, _ := strings.Cut(line, " ")
		n++
		if path == me {
			continue
		}
		first, _, _ := strings.Cut(path, "/")
		if std != "true" || strings.Contains(first, ".") || first == "tally" {
			t.Errorf("ledger depends on %s", path)
		}
	}
	if n < 5 {
		t.Fatalf("go list -deps listed only %d packages: %s", n, out)
	}
}

// TestNoEffects checks the ledger's own files for what the package
// comment (types.go) bans in the pure core: imports that reach clocks,
// randomness, I/O, logging or concurrency, calls that read the clock, and
// goroutines.
func TestNoEffects(t *testing.T) {
	banned := map[string]bool{"os": true, "net": true, "net/http": true, "math/rand": true, "math/rand/v2": true,
		"crypto/rand": true, "log": true, "log/slog": true, "sync": true, "sync/atomic": true, "syscall": true,
		"unsafe": true, "io/ioutil": true, "os/exec": true, "runtime": true}
	clock := map[string]bool{"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true, "AfterFunc": true,
		"Tick": true, "NewTimer": true, "NewTicker": true}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if banned[path] {
				t.Errorf("%s imports %s", name, path)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.GoStmt:
				t.Errorf("%s: goroutine", fset.Position(n.Pos()))
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok && x.Name == "time" && clock[n.Sel.Name] {
					t.Errorf("%s: time.%s reads the clock", fset.Position(n.Pos()), n.Sel.Name)
				}
			}
			return true
		})
	}
	if checked < 5 {
		t.Fatalf("checked only %d files", checked)
	}
}
