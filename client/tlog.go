package client

import (
	"context"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc"
)

// MaxCheckpointBytes bounds a checkpoint note (with its cosignatures).
const MaxCheckpointBytes = 1 << 20

// Checkpoint fetches the log's latest signed checkpoint
// (GET /tlog/checkpoint), at most MaxCheckpointBytes.
func (c *Client) Checkpoint(ctx context.Context) ([]byte, error) {
	_, b, err := c.get(ctx, "/tlog/checkpoint", nil, MaxCheckpointBytes)
	return b, err
}

// Tile fetches a tile of the log (GET /tlog/<plc.TilePath(t)>): a hash tile,
// at most its t.W hashes; an entry bundle (t.L == -1), at most what a full
// bundle of length-prefixed entries can be. A longer answer is a
// *StatusError of class ErrTooLong; a shorter one is returned as it is.
func (c *Client) Tile(ctx context.Context, t tlog.Tile) ([]byte, error) {
	limit := int64(t.W * tlog.HashSize)
	if t.L == -1 {
		limit = int64(1<<t.H) * (2 + 0xffff)
	}
	_, b, err := c.get(ctx, "/tlog/"+plc.TilePath(t), nil, limit)
	return b, err
}

// File fetches the file name under the base URL (a static folder, such as
// a bundle folder), at most limit bytes: a longer answer is a
// *StatusError of class ErrTooLong.
func (c *Client) File(ctx context.Context, name string, limit int64) ([]byte, error) {
	_, b, err := c.get(ctx, "/"+name, nil, limit)
	return b, err
}
