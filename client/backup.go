package client

import (
	"context"
	"io"
	"net/http"
)

// Backup asks the node (or the proxy, which passes it to a node) for a
// backup of the cluster (GET /v1/backup) and returns the file as it
// streams: the caller reads it to its end, checking it with
// backup.Reader (a file that breaks off has no trailer and is refused),
// and closes it. Only ctx bounds the call: a big backup takes a while.
func (c *Client) Backup(ctx context.Context) (io.ReadCloser, error) {
	resp, err := c.roundTrip(ctx, "GET /v1/backup", http.MethodGet, "/v1/backup", nil, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return nil, decodeError(resp.StatusCode, body)
	}
	return resp.Body, nil
}
