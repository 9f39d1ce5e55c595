package oplog

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// logChannel is the PostgreSQL notification channel every append that
// writes ops notifies, in its transaction (so the notice goes out when it
// commits, and not if it does not).
const logChannel = "plc_log"

// notifySQL notifies logChannel.
const notifySQL = `NOTIFY ` + logChannel

// pgChanges is a PostgreSQL store's ChangeProbe, once ListenForChanges
// runs: a listening connection counts the notices of commits by every
// process, and this process's own appends count as they return. Unlike
// SQLite's probe it is not exact across processes: another process's
// commit changes the token only when its notice arrives, which is after
// that process has answered its client (typically well under a
// millisecond on one network, but unbounded under load). It is therefore
// off unless asked for (plc serve --read-cache-notify).
type pgChanges struct {
	on        atomic.Bool   // a listener is running (else: unknown)
	listening atomic.Bool   // its connection listens now
	gen       atomic.Uint64 // bumped at each (re)connection
	count     atomic.Uint64 // bumped at each notice and each own append

	mu     sync.Mutex
	signal chan struct{} // closed and replaced at each change
}

func (c *pgChanges) bump() {
	c.count.Add(1)
	c.mu.Lock()
	if c.signal != nil {
		close(c.signal)
		c.signal = nil
	}
	c.mu.Unlock()
}

// changed returns a channel closed at the next change of the token.
func (c *pgChanges) changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.signal == nil {
		c.signal = make(chan struct{})
	}
	return c.signal
}

func (c *pgChanges) token() (tok ChangeToken, ok bool) {
	if !c.on.Load() || !c.listening.Load() {
		return tok, false
	}
	// gen before count: a reconnection between the two reads changes gen
	// on the next call, so no token of a dead connection repeats.
	binary.BigEndian.PutUint64(tok[0:], c.gen.Load())
	binary.BigEndian.PutUint64(tok[8:], c.count.Load())
	if !c.listening.Load() {
		return tok, false
	}
	return tok, true
}

// ChangeToken implements ChangeProbe while ListenForChanges runs (see
// pgChanges for what it does and does not promise); else it answers
// "unknown".
func (s *PostgresStore) ChangeToken() (ChangeToken, bool) { return s.changes.token() }

// TokenChanged returns a channel closed at the next change of the store's
// ChangeToken (a notice, an own append, a lost or new listening
// connection).
func (s *PostgresStore) TokenChanged() <-chan struct{} { return s.changes.changed() }

// ListenForChanges starts the listener that makes the store a working
// ChangeProbe: a connection of its own LISTENs to the log's channel until
// ctx ends, and connects again (after retry, doubling up to a minute)
// when it is lost, the token answering "unknown" meanwhile. It returns
// once the first LISTEN is in place, or its error.
func (s *PostgresStore) ListenForChanges(ctx context.Context) error {
	conn, err := s.listen(ctx)
	if err != nil {
		return err
	}
	s.changes.on.Store(true)
	go func() {
		defer s.changes.on.Store(false)
		wait := s.listenRetry
		for {
			s.receive(ctx, conn)
			conn.Close(context.Background())
			if ctx.Err() != nil {
				return
			}
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				var err error
				if conn, err = s.listen(ctx); err == nil {
					wait = s.listenRetry
					break
				}
				wait = min(2*wait, time.Minute)
			}
		}
	}()
	return nil
}

// listen opens a connection that listens to the log's channel; the token
// becomes known again with a new generation.
func (s *PostgresStore) listen(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("listen for the log's commits: %w", err)
	}
	if _, err := conn.Exec(ctx, `LISTEN `+logChannel); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("listen for the log's commits: %w", err)
	}
	s.changes.gen.Add(1)
	s.changes.listening.Store(true)
	s.changes.bump()
	return conn, nil
}

// receive counts the notices on conn until it fails or ctx ends.
func (s *PostgresStore) receive(ctx context.Context, conn *pgx.Conn) {
	defer func() {
		s.changes.listening.Store(false)
		s.changes.bump()
	}()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return
		}
		s.changes.bump()
	}
}
