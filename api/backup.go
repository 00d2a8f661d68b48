package api

import (
	"context"
	"io"
	"net/http"
	"strconv"

	"tally/backup"
	"tally/edge"
)

// backupPath is the backup's route. Its answer runs for as long as the
// file takes to send: the request's deadline bounds choosing the cut.
const backupPath = "/v1/backup"

// backupService is what the backup handler needs of the node.
type backupService interface {
	Backup(ctx context.Context) (backup.Header, func(ctx context.Context, w io.Writer) (backup.Summary, error), error)
}

func (s *Server) backupRoutes() map[string]handler {
	return map[string]handler{"GET " + backupPath: s.backup}
}

// backup answers a backup file of this node's replicas (backup package),
// streamed: a failure after the first byte breaks the file off, and its
// reader refuses it (no trailer).
func (s *Server) backup(r *http.Request) (any, error) {
	ctx, cancel := context.WithTimeout(r.Context(), waitTimeout(r))
	hd, write, err := s.backups.Backup(ctx)
	cancel()
	if err != nil {
		return nil, err
	}
	return streamFunc(func(w http.ResponseWriter) error {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set(edge.EpochHeader, strconv.FormatUint(hd.Epoch, 10))
		w.WriteHeader(http.StatusOK)
		_, err := write(r.Context(), deadlineWriter{w})
		return err
	}), nil
}
