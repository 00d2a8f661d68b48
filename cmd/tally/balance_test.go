package main

import (
	"strings"
	"testing"
)

func TestBalanceAtTime(t *testing.T) {
	f := setup(t)
	for _, tt := range []struct {
		name  string
		args  []string
		query string // the query sent; "" when nothing is sent
		err   string // what the error says; "" for none
	}{
		{"a UTC time", []string{"--at-time", "2026-11-21T10:00:00Z"}, "at_time=2026-11-21T10%3A00%3A00Z", ""},
		{"an offset and nanoseconds", []string{"--at-time", "2026-11-21T11:00:00.5+01:00"}, "at_time=2026-11-21T11%3A00%3A00.5%2B01%3A00", ""},
		{"not a time", []string{"--at-time", "yesterday"}, "", "RFC 3339"},
		{"with --at-seq", []string{"--at-time", "2026-11-21T10:00:00Z", "--at-seq", "2"}, "", "exclude each other"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--timeout", "0", "balance", "alice"}, tt.args...)
			before := f.requests()
			out, _, err := run(t, f.addr(), args...)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one saying %q (output %q)", err, tt.err, out)
				}
				if n := f.requests(); n != before {
					t.Fatalf("%d requests sent, want none", n-before)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if got := f.last(t, "GET", "/v1/accounts/alice").Query; got != tt.query {
				t.Fatalf("query %q, want %q", got, tt.query)
			}
		})
	}
}
