package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"tally/ledger"
)

// writeJSON prints v as indented JSON: what --json shows.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseAmount parses a positive integer amount in minor units. A decimal
// point, a sign or an exponent is rejected, so that "12.50" is never
// silently read as 12 or 1250.
func parseAmount(s string) (int64, error) {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("amount %q must be a positive integer in minor units (cents), like 2500", s)
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("amount %q must be an integer in minor units from 1 to %d", s, int64(ledger.MaxAmount))
	}
	return n, nil
}

// parseMeta turns repeated k=v flags into a metadata map.
func parseMeta(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--meta %q must be key=value", kv)
		}
		m[k] = v
	}
	if !ledger.ValidMetadata(m) {
		return nil, fmt.Errorf("metadata must have at most %d keys and %d bytes", ledger.MaxMetaKeys, ledger.MaxMetaBytes)
	}
	return m, nil
}

// newTransferID returns a random 16-hex-digit id for a transfer the user
// did not name. It is printed, so the user can retry with --id.
func newTransferID() string {
	var b [8]byte
	rand.Read(b[:]) // crypto/rand.Read never fails (it panics instead)
	return hex.EncodeToString(b[:])
}

// fmtTime shows log time in UTC with milliseconds.
func fmtTime(t ledger.Time) string {
	if t == 0 {
		return "-"
	}
	return time.Unix(0, int64(t)).UTC().Format("2006-01-02T15:04:05.000Z")
}

// fmtMeta shows metadata as sorted k=v pairs.
func fmtMeta(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// orDash shows an empty string as "-", so table columns stay aligned.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fmtResult shows a result code, with the original code of a repeat.
func fmtResult(r ledger.Result) string {
	if r.Original != "" {
		return fmt.Sprintf("%s (original %s)", r.Result, r.Original)
	}
	return string(r.Result)
}

// writeCompactJSON prints v as one line of JSON (NDJSON).
func writeCompactJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}
