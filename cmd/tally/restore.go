package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"tally/backup"
	"tally/shard"
)

// errRestoreBootstrap refuses --restore without --bootstrap.
var errRestoreBootstrap = errors.New("--restore needs --bootstrap: a restored cluster is a new one, which other nodes then --join")

// openHost opens the node's replicas; with a backup file (--restore) it
// starts the new cluster from it. The file is read through and checked
// before anything is created, so a damaged file leaves no data directory
// behind; a restore that fails later removes what it made.
func openHost(ctx context.Context, cfg shard.Config, restore string, log *slog.Logger) (*shard.Host, error) {
	if restore == "" {
		return shard.Open(cfg)
	}
	if !cfg.Bootstrap {
		return nil, errRestoreBootstrap
	}
	existed := true
	entries, err := os.ReadDir(cfg.Dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		existed = false
	case err != nil:
		return nil, err
	case len(entries) > 0:
		return nil, fmt.Errorf("--restore needs an empty data directory; %s holds %s", cfg.Dir, entries[0].Name())
	}
	start := time.Now()
	sum, err := checkBackup(restore)
	if err != nil {
		return nil, err
	}
	log.Info("backup checked", "file", restore, "shards", sum.Header.Shards, "epoch", sum.Header.Epoch, "bytes", sum.Bytes)
	cfg.Shards = sum.Header.Shards
	h, err := shard.Open(cfg)
	if err == nil {
		err = restoreHost(ctx, h, restore)
		if err != nil {
			h.Close()
		}
	}
	if err != nil {
		undoDataDir(cfg.Dir, existed)
		return nil, err
	}
	log.Info("restored", "file", restore, "epoch", sum.Header.Epoch+1, "cut", sum.Header.Cut, "seconds", time.Since(start).Seconds())
	return h, nil
}

func checkBackup(path string) (backup.Summary, error) {
	f, err := os.Open(path)
	if err != nil {
		return backup.Summary{}, fmt.Errorf("--restore: %w", err)
	}
	defer f.Close()
	sum, err := backup.Check(f)
	if err != nil {
		return sum, fmt.Errorf("--restore %s: %w", path, err)
	}
	return sum, nil
}

func restoreHost(ctx context.Context, h *shard.Host, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--restore: %w", err)
	}
	defer f.Close()
	r, err := backup.NewReader(f)
	if err != nil {
		return fmt.Errorf("--restore %s: %w", path, err)
	}
	if err := h.Restore(ctx, r); err != nil {
		return fmt.Errorf("--restore %s: %w", path, err)
	}
	return nil
}

// undoDataDir removes what a failed restore made of the data directory:
// all of it when it did not exist before, else its contents (it was
// empty).
func undoDataDir(dir string, existed bool) {
	if !existed {
		os.RemoveAll(dir)
		return
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.RemoveAll(dir + string(os.PathSeparator) + e.Name())
	}
}
