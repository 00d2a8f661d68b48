package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"tally/backup"
	"tally/internal/table"
)

type backupOpts struct {
	compare  string
	progress time.Duration
}

func newBackupCmd(a *app) *cobra.Command {
	o := &backupOpts{}
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "Write a consistent backup of the live cluster to FILE",
		Long: `Write one consistent cut of every shard to FILE while writes go on: a seq
per shard, chosen so that no cross-shard transfer is half inside (a saga
in flight at the cut is inside as in flight, and the restored cluster
finishes it). The node that answers (through the proxy at --addr, or a
node) writes the cut of its replicas. The file is checked as it arrives,
written to FILE.partial and renamed to FILE only once it is whole; FILE
must not exist.

Start a new cluster from it with: tally server --bootstrap --restore FILE.

With --compare OTHER the new backup is compared with the backup OTHER:
the command fails unless it holds every event of OTHER (it says whether
the two are equal, or by how many events each shard moved on).`,
		Example: `  tally backup ./tally-2026-06-01.bak
  tally backup ./again.bak --compare ./tally-2026-06-01.bak --json
  tally backup inspect ./tally-2026-06-01.bak`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runBackup(cmd, a, o, args[0]) },
	}
	cmd.Flags().StringVar(&o.compare, "compare", "", "a backup file the new backup must hold")
	cmd.Flags().DurationVar(&o.progress, "progress", 2*time.Second, "how often to report progress on stderr (0: never)")
	cmd.AddCommand(newBackupInspectCmd(a))
	return cmd
}

func newBackupInspectCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect FILE",
		Short: "Check a backup file and show its cut",
		Long: `Read a backup file through, checking every event's hash and chain, the
balances, each shard's cut and the checksum, and print its summary. Exits
with status 1 if the file is damaged.`,
		Example: `  tally backup inspect ./tally-2026-06-01.bak --json`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			sum, err := backup.Check(f)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			return printBackup(cmd.OutOrStdout(), a, backupOutput{File: args[0], Summary: sum})
		},
	}
}

// backupOutput is what the backup commands print.
type backupOutput struct {
	File    string         `json:"file"`
	Summary backup.Summary `json:"summary"`
	Seconds float64        `json:"seconds,omitempty"`
	Compare *backup.Diff   `json:"compare,omitempty"`
}

func runBackup(cmd *cobra.Command, a *app, o *backupOpts, path string) error {
	ctx := cmd.Context()
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s exists; remove it or choose another name", path)
	}
	start := time.Now()
	sum, err := fetchBackup(ctx, a, o, path, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	out := backupOutput{File: path, Summary: sum, Seconds: time.Since(start).Seconds()}
	if o.compare != "" {
		d, err := compareFiles(o.compare, path)
		if err != nil {
			return err
		}
		out.Compare = &d
	}
	if err := printBackup(cmd.OutOrStdout(), a, out); err != nil {
		return err
	}
	if out.Compare != nil && !out.Compare.Prefix {
		return fmt.Errorf("%s does not hold the events of %s: %s", path, o.compare, out.Compare.Reason)
	}
	return nil
}

// fetchBackup streams the backup into path.partial, checking it as it
// arrives, and renames it to path once whole and synced.
func fetchBackup(ctx context.Context, a *app, o *backupOpts, path string, progress io.Writer) (backup.Summary, error) {
	tmp := path + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return backup.Summary{}, err
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(tmp)
		}
	}()
	body, err := a.client().Backup(ctx)
	if err != nil {
		return backup.Summary{}, fmt.Errorf("backup: %w", err)
	}
	defer body.Close()
	r, err := backup.NewReader(io.TeeReader(body, f))
	if err != nil {
		return backup.Summary{}, fmt.Errorf("backup: %w", err)
	}
	last := time.Now()
	for {
		_, _, _, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return backup.Summary{}, fmt.Errorf("backup: %w", err)
		}
		if o.progress > 0 && time.Since(last) >= o.progress {
			last = time.Now()
			sh, n := r.Position()
			fmt.Fprintf(progress, "backup: shard %d of %d, %.1f MiB\n", sh+1, r.Header().Shards, float64(n)/(1<<20))
		}
	}
	if err := f.Sync(); err != nil {
		return backup.Summary{}, err
	}
	if err := f.Close(); err != nil {
		return backup.Summary{}, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return backup.Summary{}, err
	}
	done = true
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync() // the rename is durable once the directory is; a failure here loses nothing written
		d.Close()
	}
	return r.Summary(), nil
}

func compareFiles(first, second string) (backup.Diff, error) {
	a, err := os.Open(first)
	if err != nil {
		return backup.Diff{}, err
	}
	defer a.Close()
	b, err := os.Open(second)
	if err != nil {
		return backup.Diff{}, err
	}
	defer b.Close()
	d, err := backup.Compare(a, b)
	if err != nil {
		return d, fmt.Errorf("compare %s with %s: %w", second, first, err)
	}
	return d, nil
}

func printBackup(w io.Writer, a *app, out backupOutput) error {
	if a.json {
		return writeJSON(w, out)
	}
	s := out.Summary
	fmt.Fprintf(w, "%s: %d shards, epoch %d, created %s, %d bytes", out.File, s.Header.Shards, s.Header.Epoch,
		s.Header.Created.Format(time.RFC3339), s.Bytes)
	if out.Seconds > 0 {
		fmt.Fprintf(w, " in %.1fs", out.Seconds)
	}
	fmt.Fprintf(w, "\nchecksum %s\ncontent  %s\n", s.Checksum, s.Content)
	fmt.Fprintf(w, "sagas in flight at the cut: %d", s.Header.InFlight)
	if s.Header.Note != "" {
		fmt.Fprintf(w, " (%s)", s.Header.Note)
	}
	fmt.Fprintln(w)
	t := table.New(w)
	table.Row(t, "SHARD", "SEQ", "HEAD", "EVENTS", "BYTES")
	for i, st := range s.Shards {
		table.Row(t, st.Shard, st.Seq, short(s.Header.Cut[i].Head.String()), st.Events, st.Bytes)
	}
	if err := t.Flush(); err != nil {
		return err
	}
	if d := out.Compare; d != nil {
		switch {
		case d.Equal:
			fmt.Fprintln(w, "compare: equal (same cut, same events)")
		case d.Prefix:
			fmt.Fprintf(w, "compare: holds every event of the other backup; events beyond it per shard: %v\n", d.Extra)
		default:
			fmt.Fprintf(w, "compare: differs: %s\n", d.Reason)
		}
	}
	return nil
}
