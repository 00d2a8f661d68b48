package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"tally/test/jepsen/nemesis"
)

// Every profile names only registered fault classes: the selftest's
// planted bugs here, and the fixed fault lists of the make targets and
// the suite's README (the ci, random and soak profiles take the whole
// registry, or -faults, which nemesis.Parse checks at start).
func TestProfilesNameRegisteredFaults(t *testing.T) {
	for _, p := range plants {
		if _, err := nemesis.Parse(p.faults); err != nil || p.faults == "" {
			t.Errorf("selftest %s: faults %q: %v", p.tag, p.faults, err)
		}
	}
	lists := regexp.MustCompile(`(?:-faults |FAULTS=)([a-z][a-z,-]*[a-z])`)
	for _, path := range []string{"../../../../Makefile", "../../../README.md"} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		found := lists.FindAllStringSubmatch(string(b), -1)
		if len(found) == 0 {
			t.Errorf("%s names no fault list; the pattern is stale", path)
		}
		for _, m := range found {
			if _, err := nemesis.Parse(m[1]); err != nil {
				t.Errorf("%s: %q: %v", path, m[0], err)
			}
		}
	}
	for _, name := range nemesis.Names() {
		if strings.Contains(name, ",") {
			t.Errorf("fault class %q cannot be written in a -faults list", name)
		}
	}
}
