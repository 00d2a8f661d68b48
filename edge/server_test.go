package edge

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestStalledBodyIsCut: a request whose body stops arriving ends when the
// read timeout passes (shortened here): the handler's read fails instead
// of holding the handler.
func TestStalledBodyIsCut(t *testing.T) {
	got := make(chan error, 1)
	srv := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		got <- err
	}), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if srv.ReadTimeout != ReadTimeout || ReadTimeout <= 0 {
		t.Fatalf("read timeout %v", srv.ReadTimeout)
	}
	srv.ReadTimeout = 300 * time.Millisecond
	c := dialServed(t, srv)
	if _, err := io.WriteString(c, "POST /v1/transfers HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"id\":"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err == nil {
			t.Fatal("the handler read a whole body that never came")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler is still waiting for the body")
	}
}

// TestStalledReaderIsCut: an answer to a client that stops reading fails
// once its write deadline passes, instead of holding the handler.
func TestStalledReaderIsCut(t *testing.T) {
	got := make(chan error, 1)
	srv := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		LimitWrite(w, 300*time.Millisecond)
		chunk := make([]byte, 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				got <- err
				return
			}
		}
	}), slog.New(slog.NewTextHandler(io.Discard, nil)))
	c := dialServed(t, srv)
	io.WriteString(c, "GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n") // and never read
	select {
	case err := <-got:
		if err == nil {
			t.Fatal("no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler is still writing to a reader that stopped")
	}
}

// dialServed serves srv on a loopback port and returns a raw connection to
// it; both are closed when the test ends.
func dialServed(t *testing.T, srv *http.Server) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
