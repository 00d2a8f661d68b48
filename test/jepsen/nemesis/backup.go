package nemesis

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// The backup family: an operator's backup of the live cluster under
// load, taken with the real binary (`tally backup FILE --json` through
// the proxy, from where the clients run). The window records the file
// and its cut; after the run, checker C10 starts a new cluster from each
// file and compares it with the source's final logs. Nothing is broken,
// so there is nothing to heal: the fault is the operation itself (its
// hold of new sagas while the cut is taken, the stream of every shard's
// events).
var backupFault Fault = backupClass{"backup"}

type backupClass struct{ name string }

// BackupCut is what a backup window wrote: the file, in the run's
// store, and the summary its header and content give (docs/spec.md
// 8.1), as `tally backup --json` printed it.
type BackupCut struct {
	File     string     `json:"file"`
	Epoch    uint64     `json:"epoch"`
	Cut      []CutPoint `json:"cut"`
	InFlight int        `json:"in_flight"`
	Note     string     `json:"note,omitempty"`
	Bytes    int64      `json:"bytes"`
	Content  string     `json:"content_sha256"`
	Seconds  float64    `json:"seconds"`
}

// CutPoint is one shard's place in a backup's cut: its last seq in the
// file and the hash-chain head at that seq.
type CutPoint struct {
	Shard int    `json:"shard"`
	Seq   uint64 `json:"seq"`
	Head  string `json:"head"`
}

// backupOutput is the part of `tally backup --json` and `tally backup
// inspect --json` a window reads.
type backupOutput struct {
	File    string `json:"file"`
	Seconds float64
	Summary struct {
		Header struct {
			Shards   int        `json:"shards"`
			Epoch    uint64     `json:"epoch"`
			Cut      []CutPoint `json:"cut"`
			InFlight int        `json:"in_flight"`
			Note     string     `json:"note"`
		} `json:"header"`
		Bytes   int64  `json:"bytes"`
		Content string `json:"content_sha256"`
	} `json:"summary"`
}

// backupRun is a backup window's record between its calls.
type backupRun struct {
	out, inspect []byte
	err          error
}

func (b backupClass) Name() string      { return b.name }
func (backupClass) Available(Env) error { return nil }
func (backupClass) Traits() Traits      { return Traits{OptIn: true} }

// Inject takes the backup; it returns once the command has ended. A
// failed command is recorded for Verify, not returned: the window then
// reads NOT VERIFIED with the command's error, which makes the run
// unknown.
func (backupClass) Inject(ctx context.Context, c Cluster, w *Window) error {
	w.Target = proxy
	st := &backupRun{}
	w.state = st
	name := fmt.Sprintf("backup-%d.bak", w.N)
	var path string
	path, st.out, st.err = c.Backup(ctx, name)
	if st.err == nil {
		st.inspect, st.err = c.InspectBackup(ctx, path)
	}
	if path != "" {
		w.Backup = &BackupCut{File: path}
	}
	return nil
}

// Verify: the command succeeded, its summary parses, every shard has a
// point in the cut, and `tally backup inspect` of the file on disk gives
// the same cut and content hash.
func (backupClass) Verify(_ context.Context, c Cluster, w *Window) {
	st := w.state.(*backupRun)
	if st.err != nil {
		w.Verify = "tally backup: " + oneLine(st.err.Error())
		return
	}
	var got, again backupOutput
	if err := json.Unmarshal(st.out, &got); err != nil {
		w.Verify = fmt.Sprintf("tally backup --json printed what does not parse: %v: %.200s", err, st.out)
		return
	}
	if err := json.Unmarshal(st.inspect, &again); err != nil {
		w.Verify = fmt.Sprintf("tally backup inspect --json printed what does not parse: %v: %.200s", err, st.inspect)
		return
	}
	h := got.Summary.Header
	b := w.Backup
	b.Epoch, b.Cut, b.InFlight, b.Note = h.Epoch, h.Cut, h.InFlight, h.Note
	b.Bytes, b.Content, b.Seconds = got.Summary.Bytes, got.Summary.Content, got.Seconds
	var seqs []string
	for _, p := range h.Cut {
		seqs = append(seqs, fmt.Sprint(p.Seq))
	}
	w.Verify = fmt.Sprintf("%s: %d bytes in %.1fs, cut [%s], %d sagas in flight", b.File, b.Bytes, b.Seconds,
		strings.Join(seqs, " "), b.InFlight)
	if h.Note != "" {
		w.note("%s", h.Note)
	}
	switch {
	case h.Shards != c.Shards() || len(h.Cut) != c.Shards():
		w.Verify += fmt.Sprintf("; the header has %d shards and %d cut points, the cluster %d shards", h.Shards, len(h.Cut), c.Shards())
	case !slices.Equal(again.Summary.Header.Cut, h.Cut) || again.Summary.Content != got.Summary.Content || got.Summary.Content == "":
		w.Verify += "; tally backup inspect of the file gives another cut or content hash"
	default:
		w.Verified = true
	}
}

// Heal: a backup leaves nothing to undo.
func (backupClass) Heal(_ context.Context, _ Cluster, w *Window) { w.HealVerified = true }

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.TrimSpace(s[:i]) + " / " + strings.TrimSpace(s[i+1:])
	}
	return s
}
