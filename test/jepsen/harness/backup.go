package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"tally/test/jepsen/check"
)

// The backup fault's view of the cluster: the real binary, run as an
// operator would run it, from where the clients run.

// backupTimeout bounds one `tally backup` (or inspect) command.
const backupTimeout = 3 * time.Minute

// Backup runs `tally --addr PROXY --json backup STORE/name` from the
// harness's namespace (with root: the proxy's address exists only
// there), so the file goes into the run's store.
func (v faultView) Backup(ctx context.Context, name string) (string, []byte, error) {
	path, err := filepath.Abs(filepath.Join(v.c.store, name))
	if err != nil {
		return "", nil, err
	}
	var prefix []string
	if v.c.net != nil {
		prefix = netnsExec(v.c.net.NS("harness"))
	}
	out, err := v.c.tally(ctx, prefix, "--addr", v.c.ProxyAddr, "--json", "backup", path)
	return path, out, err
}

// InspectBackup runs `tally --json backup inspect FILE`; it reads the
// file only, so it runs where the harness does.
func (v faultView) InspectBackup(ctx context.Context, path string) ([]byte, error) {
	return v.c.tally(ctx, nil, "--json", "backup", "inspect", path)
}

// tally runs the binary with args (through prefix) and returns its
// standard output; a failure carries its standard error.
func (c *Cluster) tally(ctx context.Context, prefix []string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, backupTimeout)
	defer cancel()
	argv := append(append(append([]string{}, prefix...), c.bin), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// operationsFile is C10's record in the store: the operations windows
// and what each restored backup served (without its events).
const operationsFile = "operations.json"

// Operations collects the run's operations windows (backup, membership,
// rolling-restart) for C10, with times as the history counts them (since
// start); nil when none ran.
func Operations(ws []*Window, start time.Time) *check.Operations {
	var ops check.Operations
	for _, w := range ws {
		if !check.IsOperation(w.Fault.Class) {
			continue
		}
		ow := check.OpWindow{N: w.N, Class: w.Fault.Class, Start: w.Start.Sub(start).Nanoseconds(),
			End: w.Healed.Sub(start).Nanoseconds(), Verified: w.Verified}
		if b := w.Backup; b != nil && w.Verified && len(b.Cut) > 0 {
			ow.Backup = &check.Backup{N: w.N, File: b.File, InFlight: b.InFlight}
			for _, p := range b.Cut {
				ow.Backup.Cut = append(ow.Backup.Cut, check.CutPoint{Shard: p.Shard, Seq: p.Seq, Head: p.Head})
			}
		}
		ops.Windows = append(ops.Windows, ow)
	}
	if len(ops.Windows) == 0 {
		return nil
	}
	return &ops
}

// RestoreBackups starts a one-node cluster from each backup of ops, one
// at a time, with bin, its data under work and its log in dir
// (restore-N.log), and keeps what each served in ops.Restored. It then
// writes ops to dir/operations.json.
func RestoreBackups(ctx context.Context, bin, work, dir string, ops *check.Operations, logf func(string, ...any)) {
	if ops == nil {
		return
	}
	ops.Restored = nil
	for _, w := range ops.Windows {
		if w.Backup == nil {
			continue
		}
		start := time.Now()
		rs := check.RestoreBackup(ctx, bin, work, filepath.Join(dir, fmt.Sprintf("restore-%d.log", w.N)), *w.Backup)
		n := 0
		for _, evs := range rs.Events {
			n += len(evs)
		}
		if rs.Err != "" {
			logf("restore of backup %d: %s", w.N, rs.Err)
		} else {
			logf("backup %d restored and read in %s: %d events", w.N, time.Since(start).Round(time.Millisecond), n)
		}
		ops.Restored = append(ops.Restored, rs)
	}
	writeJSON(filepath.Join(dir, operationsFile), ops)
}

// LoadOperations reads a stored run's operations record (nil when the
// run had no operations window).
func LoadOperations(dir string) (*check.Operations, error) {
	b, err := os.ReadFile(filepath.Join(dir, operationsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ops check.Operations
	if err := json.Unmarshal(b, &ops); err != nil {
		return nil, fmt.Errorf("%s: %w", operationsFile, err)
	}
	return &ops, nil
}

// Build builds the tally binary of the module at repo with tags into bin.
func Build(repo, tags, bin string) error { return build(repo, tags, bin) }
