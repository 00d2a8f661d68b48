package check

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"tally/test/proc"
)

// Restoring a backup for C10: a new one-node cluster started from the
// file by the real binary, on loopback, read over HTTP like any other
// node (docs/api.md), then stopped and thrown away. Only what it served
// is kept, for Operations to judge.

// Restored is what a cluster restored from one backup served.
type Restored struct {
	N    int    `json:"n"` // the backup's window
	File string `json:"file"`
	// Started: the node came up (answered /readyz) from the file.
	Started bool `json:"started"`
	// Err says what went wrong: the start (Started false) or a read.
	Err string `json:"err,omitempty"`
	// Per shard: the events 1..cut it served, the hash-chain value at
	// the cut, its own verify and the seq it had applied.
	Events  [][]Event    `json:"-"`
	Hash    []string     `json:"hash"`
	Verify  []VerifyView `json:"verify"`
	Applied []uint64     `json:"applied"`
	Log     string       `json:"log"`
}

// Bounds of a restore.
const (
	restoreReady = 3 * time.Minute // the file is read through and replayed before the node serves HTTP
	restoreRead  = 60 * time.Second
)

// RestoreBackup starts `bin server --id r1 --bootstrap --restore FILE`
// with its data in a new directory under work and its output in logPath,
// waits until it is ready, reads every shard's events up to cut, the
// hash at the cut, /verify and /state, and stops it (SIGTERM, then
// SIGKILL, by its pid) and removes its data.
func RestoreBackup(ctx context.Context, bin, work, logPath string, b Backup) Restored {
	out := Restored{N: b.N, File: b.File, Log: logPath}
	ports, err := proc.FreePorts(2)
	if err != nil {
		out.Err = err.Error()
		return out
	}
	data, err := os.MkdirTemp(work, "restore-")
	if err != nil {
		out.Err = err.Error()
		return out
	}
	defer os.RemoveAll(data)
	addr := fmt.Sprintf("127.0.0.1:%d", ports[1])
	hc := &http.Client{Timeout: restoreRead}
	defer hc.CloseIdleConnections()
	n := proc.NewNode(bin, "r1", addr, fmt.Sprintf("127.0.0.1:%d", ports[0]), filepath.Join(data, "r1"), logPath,
		"--bootstrap", "--restore", b.File)
	n.Ready = proc.HTTPReady(hc, addr, "/readyz")
	n.ExpectDeath(true)
	if err := n.Start(); err != nil {
		out.Err = err.Error()
		return out
	}
	defer n.Stop(10 * time.Second)
	if err := n.WaitReady(ctx, restoreReady); err != nil {
		out.Err = err.Error()
		return out
	}
	out.Started = true
	shards := len(b.Cut)
	out.Events = make([][]Event, shards)
	out.Hash = make([]string, shards)
	out.Verify = make([]VerifyView, shards)
	out.Applied = make([]uint64, shards)
	for s, p := range b.Cut {
		if err := readRestored(ctx, hc, addr, s, p.Seq, &out); err != nil {
			out.Err = fmt.Sprintf("shard %d: %v", s, err)
			return out
		}
	}
	return out
}

func readRestored(ctx context.Context, hc *http.Client, addr string, s int, cut uint64, out *Restored) error {
	var st StateView
	if err := getJSON(ctx, hc, addr, fmt.Sprintf("/v1/shards/%d/state", s), nil, &st); err != nil {
		return err
	}
	out.Applied[s] = st.AppliedSeq
	if err := getJSON(ctx, hc, addr, fmt.Sprintf("/v1/shards/%d/verify", s), nil, &out.Verify[s]); err != nil {
		return err
	}
	out.Hash[s] = zeroHash
	if cut > 0 {
		var h struct {
			Seq  uint64 `json:"seq"`
			Hash string `json:"hash"`
		}
		if err := getJSON(ctx, hc, addr, fmt.Sprintf("/v1/shards/%d/hash", s), url.Values{"seq": {fmt.Sprint(cut)}}, &h); err != nil {
			return err
		}
		out.Hash[s] = h.Hash
	}
	for after := uint64(0); after < cut; {
		limit := min(1000, cut-after)
		body, err := get(ctx, hc, addr, fmt.Sprintf("/v1/shards/%d/events", s),
			url.Values{"after": {fmt.Sprint(after)}, "limit": {fmt.Sprint(limit)}})
		if err != nil {
			return err
		}
		evs, _, err := ParseEvents(body)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			return nil // fewer events than the cut: Operations reports it
		}
		out.Events[s] = append(out.Events[s], evs...)
		last := evs[len(evs)-1].Seq
		if last <= after {
			return fmt.Errorf("events after %d: the page ends at %d", after, last)
		}
		after = last
	}
	return nil
}

func get(ctx context.Context, hc *http.Client, addr, path string, q url.Values) ([]byte, error) {
	u := "http://" + addr + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d %.200s", path, resp.StatusCode, b)
	}
	return b, nil
}

func getJSON(ctx context.Context, hc *http.Client, addr, path string, q url.Values, v any) error {
	b, err := get(ctx, hc, addr, path, q)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}
