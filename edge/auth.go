package edge

import (
	"context"
	"log/slog"
	"net/http"
	"strings"

	"tally/secure"
)

// Error codes of authentication and authorisation.
const (
	CodeUnauthenticated = "unauthenticated"
	CodeForbidden       = "forbidden"
)

// Guard decides who made a request and whether the route lets them in.
// A node and the proxy run the same Guard, so a request is judged the
// same wherever it arrives. The zero Guard (no tokens, no secret, no TLS)
// lets every request in: a development cluster on loopback.
type Guard struct {
	// Tokens are the bearer tokens of clients; nil turns client
	// authentication off (every caller may read, write and operate).
	Tokens *secure.Tokens
	// Secret proves a node when TLS is off.
	Secret secure.ClusterSecret
	// TLS is set when the port serves TLS: a node is then proven by its
	// certificate, and only by it.
	TLS bool
	// Log receives one line per operator action, naming who did it.
	Log *slog.Logger
}

// nodeOnly reports whether anything proves a node, so that internal
// routes can be closed to everyone else.
func (g *Guard) nodeOnly() bool { return g.TLS || g.Secret != "" }

// Identify returns who made r: a node by its certificate (TLS) or the
// cluster secret as its bearer token, else the holder of its token. A
// bearer token that is neither is a 401, so a mistyped token is never
// taken for no token at all.
func (g *Guard) Identify(r *http.Request) (secure.Principal, *Error) {
	if name, ok := secure.NodeOf(r.TLS); ok {
		return secure.Principal{Name: name, Role: secure.RoleNode}, nil
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return secure.Anonymous, nil
	}
	// The scheme's name is case-insensitive (RFC 9110).
	scheme, bearer, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || bearer == "" {
		return secure.Anonymous, Errorf(http.StatusUnauthorized, CodeUnauthenticated,
			"the Authorization header must be \"Bearer TOKEN\"")
	}
	if !g.TLS && g.Secret.Matches(bearer) {
		return secure.Principal{Name: "node", Role: secure.RoleNode}, nil
	}
	if g.Tokens != nil {
		if p, ok := g.Tokens.Lookup(bearer); ok {
			return p, nil
		}
		return secure.Anonymous, Errorf(http.StatusUnauthorized, CodeUnauthenticated, "unknown or revoked token")
	}
	// Client authentication is off: a token proves nothing, and costs
	// nothing either.
	return secure.Anonymous, nil
}

// Admit checks r against its route: nil to go on, else the answer (401
// without a credential, 403 with one that does not reach the route's
// role). Operator actions are logged with who did them.
func (g *Guard) Admit(r *http.Request, rt *Route) *Error {
	need := rt.Needs()
	if need == secure.RoleNone {
		return nil
	}
	p, e := g.Identify(r)
	if e != nil {
		return e
	}
	switch {
	case need == secure.RoleNode:
		if !g.nodeOnly() && g.Tokens == nil {
			return nil // development cluster: nothing proves a node
		}
		if p.Role != secure.RoleNode {
			return Errorf(http.StatusForbidden, CodeForbidden, "%s is for nodes of the cluster only", InternalPrefix)
		}
	case g.Tokens == nil && p.Role != secure.RoleNode:
		// Client authentication is off.
	case p == secure.Anonymous:
		return Errorf(http.StatusUnauthorized, CodeUnauthenticated,
			"%s needs a token with role %s (Authorization: Bearer TOKEN)", rt, need)
	case p.Role < need:
		return Errorf(http.StatusForbidden, CodeForbidden, "%s needs role %s; token %q has role %s", rt, need, p.Name, p.Role)
	}
	if need == secure.RoleOperator && g.Log != nil {
		g.Log.Info("operator action", "who", p.String(), "method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery)
	}
	return nil
}

// Revoked returns a context that ends with ctx, or once the token that r
// was admitted with no longer gives the role rt needs (revoked, or given
// a lower role): an answer that runs past its deadline (an event stream,
// a backup) must not outlive the right to it. Without client tokens, or
// for a caller that is a node, it is ctx itself.
func (g *Guard) Revoked(ctx context.Context, r *http.Request, rt *Route) (context.Context, context.CancelFunc) {
	p, e := g.Identify(r)
	if g.Tokens == nil || e != nil || p.Role == secure.RoleNode || rt.Needs() == secure.RoleNone {
		return context.WithCancel(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		for {
			ch := g.Tokens.Changed()
			if q, e := g.Identify(r); e != nil || q.Role < rt.Needs() {
				if g.Log != nil {
					g.Log.Info("answer ended: its token was revoked", "who", p.String(), "path", r.URL.Path)
				}
				cancel()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
		}
	}()
	return ctx, cancel
}
