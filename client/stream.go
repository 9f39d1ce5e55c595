package client

import (
	"context"
	"net/url"
	"strconv"

	"github.com/coder/websocket"

	"github.com/plcdir/plc"
)

// Stream opens the directory's live export, /export/stream after seq
// cursor, over WebSocket. ctx bounds the handshake only (a caller's
// handshake timeout); the connection then lives until closed, without the
// client's overall timeout, which would cut it. A message longer than an
// export line (plc.MaxLineBytes) ends the connection. A redirect of the
// handshake off the origin is not followed: the dial fails with its
// status.
func (c *Client) Stream(ctx context.Context, cursor int64) (*websocket.Conn, error) {
	u := *c.base
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	u.Path += "/export/stream"
	u.RawPath = ""
	u.RawQuery = url.Values{"cursor": {strconv.FormatInt(cursor, 10)}}.Encode()
	hc := *c.hc
	hc.Timeout = 0
	conn, _, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{HTTPClient: &hc})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(plc.MaxLineBytes)
	return conn, nil
}
