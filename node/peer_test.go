package node

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"tally/edge"
	"tally/ledger"
)

// TestPeerFailures: a call that could not have been sent is a definite
// 503; a write whose answer was lost after sending may have been applied
// (504); a read is 503 either way; another node's error answer passes on
// as it is; the deadline and the hop count travel with the call.
func TestPeerFailures(t *testing.T) {
	var gotTimeout, gotHops string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotTimeout, gotHops = r.URL.Query().Get("timeout"), r.Header.Get(edge.HopHeader)
		switch r.URL.Path {
		case InternalPrefix + opCommands, InternalPrefix + opAccount:
			// Drop the connection after the request arrived.
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
		default:
			edge.WriteError(w, edge.NotFound(edge.CodeTransferNotFound, "no such transfer"))
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()

	p := NewPeer(nil)
	ctx, cancel := context.WithTimeout(WithHops(context.Background(), 1), 5*time.Second)
	defer cancel()
	status := func(err error) int {
		var e *edge.Error
		if !errors.As(err, &e) {
			t.Fatalf("%v is not an edge.Error", err)
		}
		return e.Status
	}
	cmd := ledger.Command{Kind: ledger.CmdCloseAccount, AccountID: "a"}
	if _, err := p.Submit(ctx, closed, 0, cmd); status(err) != http.StatusServiceUnavailable {
		t.Errorf("write to a closed port: %v, want 503", err)
	}
	if _, err := p.Submit(ctx, addr, 0, cmd); status(err) != http.StatusGatewayTimeout {
		t.Errorf("write whose answer was lost: %v, want 504", err)
	}
	if gotHops != "2" || gotTimeout == "" {
		t.Errorf("call carried hops %q and timeout %q, want 2 and the remaining deadline", gotHops, gotTimeout)
	}
	var out struct{}
	if err := p.Call(ctx, addr, opAccount, struct{}{}, &out); status(err) != http.StatusServiceUnavailable {
		t.Errorf("read whose answer was lost: %v, want 503", err)
	}
	err := p.Call(ctx, addr, opTransfer, struct{}{}, &out)
	var e *edge.Error
	if !errors.As(err, &e) || e.Status != http.StatusNotFound || e.Code != edge.CodeTransferNotFound {
		t.Errorf("error answer: %v, want the node's 404 transfer_not_found", err)
	}
}
