// Package table writes the tables that tally's commands and its
// benchmark print for people: tab-separated rows aligned by a
// tabwriter.
package table

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// New returns a writer that aligns tab-separated columns; the caller
// calls Flush.
func New(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

// Row writes cols as one line of a table.
func Row(w io.Writer, cols ...any) {
	for i, c := range cols {
		if i > 0 {
			io.WriteString(w, "\t")
		}
		fmt.Fprint(w, c)
	}
	io.WriteString(w, "\n")
}

// Plural writes a count and a noun: "1 shard", "4 shards".
func Plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
