package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

type closer func() error

func (c closer) Close() error                    { return c() }
func (closer) Handoff(ctx context.Context) error { return nil }

// TestShutdownBound: a host whose close never returns (a failing disk, a
// stuck Raft goroutine) makes shutdown give up at the bound with an
// error, so the process exits non-zero instead of hanging; a close that
// returns passes its error on.
func TestShutdownBound(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hang := make(chan struct{})
	defer close(hang)
	start := time.Now()
	err := shutdown(&http.Server{}, closer(func() error { <-hang; return nil }), log, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not finish within") {
		t.Fatalf("hung close: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("gave up after %v, bound 300ms", d)
	}
	if err := shutdown(&http.Server{}, closer(func() error { return nil }), log, time.Second); err != nil {
		t.Fatalf("clean close: %v", err)
	}
	disk := errors.New("disk failed")
	if err := shutdown(&http.Server{}, closer(func() error { return disk }), log, time.Second); !errors.Is(err, disk) {
		t.Fatalf("failed close: %v", err)
	}
}
