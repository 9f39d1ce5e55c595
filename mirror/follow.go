package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/coder/websocket"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/oplog"
)

// errStreamStalled: the stream sent nothing for StreamIdle while the
// upstream's export has ops after the mirror's cursor.
var errStreamStalled = errors.New("the upstream's stream is stalled")

// follow applies the upstream's live /export/stream from the committed
// cursor until the stream ends. It returns nil when the stream ended in a
// way that calls for paging again (OutdatedCursor, ConsumerTooSlow, a
// normal close), else the error.
//
// A silent upstream cannot hold the mirror: the handshake must complete
// within StreamTimeout; and when the stream has sent nothing for
// StreamIdle, the mirror pings the upstream (no pong within StreamTimeout
// ends the stream) and asks its export for the op after the cursor: if
// there is one, the stream is stalled (errStreamStalled; the op's seq
// shows in /_health's lagOps) and Run backs off, then pages.
func (m *Mirror) follow(ctx context.Context) error {
	c, err := m.store.Cursor(ctx, m.source)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m.setState("connect")
	conn, err := m.dial(sctx, c.Seq)
	if err != nil {
		return err
	}
	defer conn.CloseNow()
	m.setState("stream")
	m.logger.Info("mirror: following the upstream's stream", "cursor", c.Seq)

	msgs := make(chan []byte, 1024)
	errc := make(chan error, 1)
	go func() {
		defer close(msgs) // after errc is sent
		for {
			_, b, err := conn.Read(sctx)
			if err == nil {
				select {
				case msgs <- b:
					continue
				case <-sctx.Done():
					err = sctx.Err()
				}
			}
			errc <- err
			return
		}
	}()

	src := &streamEvents{m: m, conn: conn, msgs: msgs}
	_, err = oplog.Replay(ctx, m.log, src, oplog.ImportOptions{
		Source: m.source, Stream: true, BatchSize: 1000,
		Ingest: func(ctx context.Context, source string, items []oplog.IngestItem) (oplog.IngestResult, error) {
			res, err := m.ingest(ctx, source, items)
			m.sawUpstreamSeq(res.Cursor.Seq)
			return res, err
		},
	})
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return err
	}
	err = <-errc
	switch websocket.CloseStatus(err) {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway:
		return nil
	}
	return fmt.Errorf("stream: %w", err)
}

// streamEvents is the live stream's events as an oplog.LineSource, one
// line each: ready when an event is waiting. While none comes for
// StreamIdle, it checks the upstream after the committed cursor
// (checkIdleStream).
type streamEvents struct {
	m    *Mirror
	conn *websocket.Conn
	msgs <-chan []byte // closed when the stream ends
}

func (s *streamEvents) Ready() bool { return len(s.msgs) > 0 }

func (s *streamEvents) Next(ctx context.Context) (oplog.Line, error) {
	for {
		var idle <-chan time.Time // no timer while an event is waiting
		if len(s.msgs) == 0 {
			idle = s.m.cfg.After(s.m.cfg.StreamIdle)
		}
		select {
		case b, ok := <-s.msgs:
			if !ok {
				return oplog.Line{}, io.EOF
			}
			return oplog.Line{Raw: b}, nil
		case <-idle:
			c, err := s.m.store.Cursor(ctx, s.m.source)
			if err == nil {
				err = s.m.checkIdleStream(ctx, s.conn, c.Seq)
			}
			if err != nil {
				return oplog.Line{}, err
			}
		case <-ctx.Done():
			return oplog.Line{}, ctx.Err()
		}
	}
}

// dial opens the stream after seq cursor: the handshake is cut after
// StreamTimeout.
func (m *Mirror) dial(ctx context.Context, cursor int64) (*websocket.Conn, error) {
	dctx, cancel, timedOut := m.withStreamTimeout(ctx)
	defer cancel()
	conn, err := m.up.Stream(dctx, cursor)
	if err != nil {
		if timedOut() {
			return nil, fmt.Errorf("connect to the stream: no handshake within %v", m.cfg.StreamTimeout)
		}
		return nil, fmt.Errorf("connect to the stream: %w", err)
	}
	return conn, nil
}

// withStreamTimeout returns a context that ends with ctx or after
// StreamTimeout by the mirror's clock (Config.After), and a function that
// tells whether the timeout ended it.
func (m *Mirror) withStreamTimeout(ctx context.Context) (context.Context, context.CancelFunc, func() bool) {
	tctx, cancel := context.WithCancel(ctx)
	fired := make(chan struct{})
	go func() {
		select {
		case <-m.cfg.After(m.cfg.StreamTimeout):
			close(fired)
			cancel()
		case <-tctx.Done():
		}
	}()
	return tctx, cancel, func() bool {
		select {
		case <-fired:
			return true
		default:
			return false
		}
	}
}

// checkIdleStream is what follow does when the stream has been silent for
// StreamIdle, last being the last seq it took: a ping that must be
// answered within StreamTimeout, then a look at the upstream's export
// after last. nil: the upstream is alive and has nothing new.
func (m *Mirror) checkIdleStream(ctx context.Context, conn *websocket.Conn, last int64) error {
	pctx, cancel, timedOut := m.withStreamTimeout(ctx)
	defer cancel()
	if err := conn.Ping(pctx); err != nil {
		if timedOut() {
			return fmt.Errorf("stream: silent for %v, and no pong within %v", m.cfg.StreamIdle, m.cfg.StreamTimeout)
		}
		if ctx.Err() != nil {
			return nil // the stream ended meanwhile: follow sees why
		}
		return fmt.Errorf("stream: silent for %v, then the ping failed: %w", m.cfg.StreamIdle, err)
	}
	p, err := m.up.SeqPage(ctx, last, 1)
	if err != nil {
		return err
	}
	if len(p.Lines) > 0 && p.Last > last {
		m.sawUpstreamSeq(p.Last)
		return fmt.Errorf("%w: silent for %v while the export has seq %d after seq %d", errStreamStalled, m.cfg.StreamIdle, p.Last, last)
	}
	return nil
}

// CheckDID compares the log's ops of did with the upstream's audit log of
// it, and records what disagrees: an op held here that the upstream no
// longer has, or has at another createdAt (history_rewrite), ops in
// another order (reordered), another nullified flag (nullification
// mismatch). Ops the upstream has and the mirror does not yet are not
// divergences (the mirror may be behind), nor are ops nullified upstream
// but not here while the upstream has ops of the DID the mirror does not.
func (m *Mirror) CheckDID(ctx context.Context, did string) error {
	ours, err := m.store.Ops(ctx, did)
	if err != nil || len(ours) == 0 {
		if errors.Is(err, oplog.ErrNotFound) {
			return nil
		}
		return err
	}
	theirs, body, err := m.up.AuditLog(ctx, did)
	switch {
	case errors.Is(err, client.ErrNotRegistered):
		m.record(ctx, Divergence{Kind: oplog.KindHistoryRewrite, DID: did, Evidence: body,
			Detail: fmt.Sprintf("the upstream no longer knows %s, of which this mirror holds %d ops", did, len(ours))})
		return nil
	case errors.Is(err, client.ErrMalformed):
		m.record(ctx, Divergence{Kind: oplog.KindBadResponse, DID: did, Evidence: body, Detail: "the audit log of " + did + " is not a JSON array of entries"})
		return nil
	case err != nil:
		m.noteResponse(ctx, err)
		return err
	}
	pos := make(map[string]int, len(theirs))
	for i, e := range theirs {
		pos[e.CID] = i
	}
	// An op nullified upstream but not here may be nullified by an op the
	// upstream has and the mirror does not yet: that is lag, not a
	// divergence, while the mirror is behind on this DID.
	held := make(map[string]bool, len(ours))
	for _, o := range ours {
		held[o.CID] = true
	}
	behind := slices.ContainsFunc(theirs, func(e plc.AuditEntry) bool { return !held[e.CID] })
	var order []int
	for _, o := range ours {
		i, ok := pos[o.CID]
		if !ok {
			m.record(ctx, Divergence{Kind: oplog.KindHistoryRewrite, DID: did, CID: o.CID, Evidence: body,
				Detail: "op " + o.CID + " of " + did + ", served before, is gone from the upstream's audit log"})
			continue
		}
		e := theirs[i]
		at, err := time.Parse(time.RFC3339Nano, e.CreatedAt)
		if err != nil || !at.Equal(o.CreatedAt) {
			m.record(ctx, Divergence{Kind: oplog.KindHistoryRewrite, DID: did, CID: o.CID, Evidence: body,
				Detail: fmt.Sprintf("op %s of %s was served with createdAt %s, its audit log now says %q", o.CID, did, o.CreatedAt.Format(time.RFC3339Nano), e.CreatedAt)})
		}
		if e.Nullified != o.Nullified && !(e.Nullified && behind) {
			m.record(ctx, Divergence{Kind: oplog.KindNullification, DID: did, CID: o.CID, Evidence: body,
				Detail: fmt.Sprintf("op %s of %s: nullified is %v here, %v upstream", o.CID, did, o.Nullified, e.Nullified)})
		}
		order = append(order, i)
	}
	if !slices.IsSorted(order) {
		m.record(ctx, Divergence{Kind: oplog.KindReordered, DID: did, Evidence: body,
			Detail: "the upstream's audit log of " + did + " has its ops in another order"})
	}
	return nil
}
