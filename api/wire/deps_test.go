package wire

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLeaf keeps wire a leaf that the client and the proxy can import
// without pulling in the server: besides the standard library it may
// import tally/ledger only.
func TestLeaf(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list -deps listed nothing, not even this package")
	}
	allowed := map[string]bool{"tally/api/wire": true, "tally/ledger": true}
	for _, p := range deps {
		if !allowed[p] {
			t.Errorf("wire depends on %s", p)
		}
	}
}
