package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"tally/api/wire"
)

// The answers of the named consumer endpoints (docs/api.md, "Named
// consumers").
type (
	// Consumer is a named consumer's position on every shard.
	Consumer = wire.Consumer
	// ConsumerShard is a consumer's offset on one shard, the shard's
	// applied seq and the lag between them.
	ConsumerShard = wire.ConsumerShard
	// ConsumerOffset is the answer to a set offset: the consumer's
	// position on that shard.
	ConsumerOffset = wire.ConsumerOffset
)

// Consumers lists every named consumer, sorted by name.
func (c *Client) Consumers(ctx context.Context) ([]Consumer, error) {
	var out wire.Consumers
	if err := c.do(ctx, http.MethodGet, "/v1/consumers", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Consumers, nil
}

// Consumer reads one consumer's position on every shard. An unknown
// consumer is a 404 (IsNotFound).
func (c *Client) Consumer(ctx context.Context, name string) (*Consumer, error) {
	var out Consumer
	if err := c.do(ctx, http.MethodGet, consumerPath(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetOffset records that consumer name has processed shard's events up
// to seq, creating the consumer. An offset never goes backwards: a lower
// seq than the stored one is a 409 offset_backwards (ResetConsumer moves
// it back).
func (c *Client) SetOffset(ctx context.Context, name string, shard int, seq uint64) (*ConsumerOffset, error) {
	var out ConsumerOffset
	path := consumerPath(name) + "/offsets/" + strconv.Itoa(shard)
	if err := c.do(ctx, http.MethodPut, path, nil, wire.OffsetIn{Seq: &seq}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ResetConsumer moves consumer name, backwards too, to "start", "end" or
// a list of shard:seq pairs ("0:42,1:17": the shards not listed stay
// where they are). It returns the shards it moved.
func (c *Client) ResetConsumer(ctx context.Context, name, to string) (*Consumer, error) {
	var out Consumer
	if err := c.do(ctx, http.MethodPost, consumerPath(name)+"/reset", nil, wire.ResetIn{To: to}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteConsumer forgets consumer name on every shard.
func (c *Client) DeleteConsumer(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, consumerPath(name), nil, nil, &wire.OK{})
}

func consumerPath(name string) string { return "/v1/consumers/" + url.PathEscape(name) }
