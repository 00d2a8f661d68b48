package proxy

import (
	"context"
	"net/http"
)

// credKey carries a client's Authorization header from its request to the
// requests the proxy sends to nodes for it.
type credKey struct{}

func withCredential(ctx context.Context, h string) context.Context {
	if h == "" {
		return ctx
	}
	return context.WithValue(ctx, credKey{}, h)
}

func credential(ctx context.Context) string {
	h, _ := ctx.Value(credKey{}).(string)
	return h
}

// authorize gives a request to a node the credential of the client it is
// for. The nodes then admit it by the same rules the proxy did, so a
// client gets no more through the proxy than it would get at a node. The
// proxy's own token is never lent to a client's request: it goes only on
// what the proxy asks for itself (authorizeOwn).
func (p *Proxy) authorize(req *http.Request) {
	if h := credential(req.Context()); h != "" {
		req.Header.Set("Authorization", h)
	}
}

// authorizeOwn puts the proxy's own token on a request it makes on its
// own account: the leader map.
func (p *Proxy) authorizeOwn(req *http.Request) {
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
}
