package secure

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// tokenPrefix starts every token secret, so that a leaked one is easy to
// recognise (and to search for in logs and repositories).
const tokenPrefix = "tly_"

// TokenFile is the auth file: one entry per token, with the secret's
// SHA-256 and never the secret. Secrets are 256 random bits, so a fast
// hash is enough; a slow one protects guessable passwords, which these
// are not, and would cost every request.
type TokenFile struct {
	Tokens []TokenEntry `json:"tokens"`
}

// TokenEntry is one token of the auth file.
type TokenEntry struct {
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	SHA256  string    `json:"sha256"`
	Created time.Time `json:"created"`
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// ReadTokenFile reads and checks an auth file. Every problem is an error
// naming the file: a server must not start with a file it half understood.
func ReadTokenFile(path string) (*TokenFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth file: %w", err)
	}
	var f TokenFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("auth file %s: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("auth file %s: data after the JSON object", path)
	}
	names := map[string]bool{}
	for i, e := range f.Tokens {
		if !validName.MatchString(e.Name) {
			return nil, fmt.Errorf("auth file %s: token %d: name %q: use 1-64 letters, digits, '.', '_', '@' or '-'", path, i, e.Name)
		}
		if names[e.Name] {
			return nil, fmt.Errorf("auth file %s: token name %q appears twice", path, e.Name)
		}
		names[e.Name] = true
		if _, err := ParseRole(e.Role); err != nil {
			return nil, fmt.Errorf("auth file %s: token %q: %w", path, e.Name, err)
		}
		if h, err := hex.DecodeString(e.SHA256); err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("auth file %s: token %q: sha256 must be 64 hex digits", path, e.Name)
		}
	}
	return &f, nil
}

// CreateToken adds a token named name with role to the auth file at path,
// creating the file (mode 0600) when it does not exist, and returns the
// secret: it is shown once and stored nowhere. A name already in the file
// is refused.
func CreateToken(path, name string, role Role, now time.Time) (string, error) {
	if role < RoleRead || role > RoleOperator {
		return "", fmt.Errorf("role %s cannot be given to a token", role)
	}
	if !validName.MatchString(name) {
		return "", fmt.Errorf("token name %q: use 1-64 letters, digits, '.', '_', '@' or '-'", name)
	}
	f := &TokenFile{Tokens: []TokenEntry{}}
	if _, err := os.Stat(path); err == nil {
		if f, err = ReadTokenFile(path); err != nil {
			return "", err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("auth file: %w", err)
	}
	for _, e := range f.Tokens {
		if e.Name == name {
			return "", fmt.Errorf("auth file %s already has a token named %q (revoke it first)", path, name)
		}
	}
	secret, err := newSecret()
	if err != nil {
		return "", err
	}
	f.Tokens = append(f.Tokens, TokenEntry{Name: name, Role: role.String(), SHA256: hashSecret(secret), Created: now.UTC().Truncate(time.Second)})
	return secret, writeTokenFile(path, f)
}

// RevokeToken removes the token named name from the auth file.
func RevokeToken(path, name string) error {
	f, err := ReadTokenFile(path)
	if err != nil {
		return err
	}
	out := f.Tokens[:0]
	for _, e := range f.Tokens {
		if e.Name != name {
			out = append(out, e)
		}
	}
	if len(out) == len(f.Tokens) {
		return fmt.Errorf("auth file %s has no token named %q", path, name)
	}
	f.Tokens = out
	return writeTokenFile(path, f)
}

// writeTokenFile replaces the file whole (writeFile), so that a server
// reading it never sees half of it.
func writeTokenFile(path string, f *TokenFile) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("auth file: %w", err)
	}
	return nil
}

func newSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// Tokens answers who holds a bearer secret. The zero value knows no
// token. It is safe for concurrent use; Watch replaces its contents when
// the file changes.
type Tokens struct {
	byHash atomic.Pointer[map[[sha256.Size]byte]Principal]
	// changed is closed, and replaced, when the tokens change.
	mu      sync.Mutex
	changed chan struct{}
}

// Changed returns a channel that is closed when the tokens next change:
// what an open stream waits on to end when its token is revoked.
func (t *Tokens) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.changed == nil {
		t.changed = make(chan struct{})
	}
	return t.changed
}

// LoadTokens reads the auth file at path.
func LoadTokens(path string) (*Tokens, error) {
	t := &Tokens{}
	if err := t.load(path); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *Tokens) load(path string) error {
	f, err := ReadTokenFile(path)
	if err != nil {
		return err
	}
	m := make(map[[sha256.Size]byte]Principal, len(f.Tokens))
	for _, e := range f.Tokens {
		var k [sha256.Size]byte
		hex.Decode(k[:], []byte(e.SHA256)) // checked by ReadTokenFile
		role, _ := ParseRole(e.Role)
		m[k] = Principal{Name: e.Name, Role: role}
	}
	t.byHash.Store(&m)
	t.mu.Lock()
	if t.changed != nil {
		close(t.changed)
		t.changed = nil
	}
	t.mu.Unlock()
	return nil
}

// Lookup returns who holds secret. The map is keyed by the secret's hash,
// so a lookup reveals nothing through its timing that an attacker could
// use: finding a key needs a preimage.
func (t *Tokens) Lookup(secret string) (Principal, bool) {
	m := t.byHash.Load()
	if m == nil || !strings.HasPrefix(secret, tokenPrefix) {
		return Anonymous, false
	}
	p, ok := (*m)[sha256.Sum256([]byte(secret))]
	return p, ok
}

// Len is the number of tokens known.
func (t *Tokens) Len() int {
	if m := t.byHash.Load(); m != nil {
		return len(*m)
	}
	return 0
}

// Watch reloads the auth file at path when it changes, until ctx ends, so
// that a created or revoked token takes effect without a restart. A file
// that no longer reads keeps the tokens known before, and is logged.
func (t *Tokens) Watch(ctx context.Context, path string, every time.Duration, log *slog.Logger) {
	onChange(ctx, every, func() {
		if err := t.load(path); err != nil {
			log.Error("auth file changed but does not read; keeping the tokens loaded before", "err", err)
			return
		}
		log.Info("auth file reloaded", "tokens", t.Len())
	}, path)
}

// onChange calls fn each time one of paths changes (its modification
// time or size), looking every interval, until ctx ends.
func onChange(ctx context.Context, every time.Duration, fn func(), paths ...string) {
	stamp := func() string {
		var b strings.Builder
		for _, p := range paths {
			if fi, err := os.Stat(p); err == nil {
				fmt.Fprint(&b, fi.ModTime().UnixNano(), fi.Size(), ";")
			} else {
				b.WriteString("-;")
			}
		}
		return b.String()
	}
	last := stamp()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if s := stamp(); s != last {
			last = s
			fn()
		}
	}
}

// ClusterSecret is the secret by which nodes know each other when TLS is
// off (loopback clusters). It is compared in constant time.
type ClusterSecret string

// ReadClusterSecret reads a cluster secret file: one line, at least 16
// characters.
func ReadClusterSecret(path string) (ClusterSecret, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cluster secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 16 || strings.ContainsAny(s, " \t\r\n") {
		return "", fmt.Errorf("cluster secret %s: one line of at least 16 characters without spaces", path)
	}
	return ClusterSecret(s), nil
}

// Matches reports whether bearer is the secret.
func (s ClusterSecret) Matches(bearer string) bool {
	return s != "" && subtle.ConstantTimeCompare([]byte(s), []byte(bearer)) == 1
}
