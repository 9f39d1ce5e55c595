package oplog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/mod/sumdb/tlog"
)

// sqlTree is the tree's access to SQLite, in a transaction or not.
type sqlTree struct {
	q interface {
		QueryContext(context.Context, string, ...any) (*sql.Rows, error)
		QueryRowContext(context.Context, string, ...any) *sql.Row
		ExecContext(context.Context, string, ...any) (sql.Result, error)
	}
}

func (t sqlTree) treeEnd(ctx context.Context) (int64, error) {
	var end int64
	err := t.q.QueryRowContext(ctx, `SELECT COALESCE(MAX(last_seq), 0) FROM tree_hashes`).Scan(&end)
	return end, err
}

func (t sqlTree) chunkAt(ctx context.Context, seq int64) (treeChunk, bool, error) {
	var (
		first, last int64
		hashes      []byte
	)
	err := t.q.QueryRowContext(ctx, `SELECT first_seq, last_seq, hashes FROM tree_hashes WHERE first_seq <= ? ORDER BY first_seq DESC LIMIT 1`, seq).Scan(&first, &last, &hashes)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && last < seq) {
		return treeChunk{}, false, nil
	}
	if err != nil {
		return treeChunk{}, false, err
	}
	c, err := chunkBytes(first, last, hashes)
	return c, err == nil, err
}

func (t sqlTree) chunksIn(ctx context.Context, from, to int64) ([]treeChunk, error) {
	rows, err := t.q.QueryContext(ctx, `SELECT first_seq, last_seq, hashes FROM tree_hashes
		WHERE first_seq >= COALESCE((SELECT MAX(first_seq) FROM tree_hashes WHERE first_seq <= ?), 0) AND first_seq <= ?
		ORDER BY first_seq`, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanChunks(rows)
}

func scanChunks(rows opRows) ([]treeChunk, error) {
	var out []treeChunk
	for rows.Next() {
		var (
			first, last int64
			hashes      []byte
		)
		if err := rows.Scan(&first, &last, &hashes); err != nil {
			return nil, err
		}
		c, err := chunkBytes(first, last, hashes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func (t sqlTree) insertChunk(ctx context.Context, c treeChunk) error {
	if _, err := t.q.ExecContext(ctx, `INSERT INTO tree_hashes (first_seq, last_seq, hashes) VALUES (?, ?, ?)`, c.first, c.last, c.hashes); err != nil {
		return fmt.Errorf("insert tree hashes of %d…%d: %w", c.first, c.last, err)
	}
	return nil
}

// pgTree is the tree's access to PostgreSQL, in a transaction or not.
type pgTree struct {
	q interface {
		Query(context.Context, string, ...any) (pgx.Rows, error)
		QueryRow(context.Context, string, ...any) pgx.Row
		Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
	}
}

func (t pgTree) treeEnd(ctx context.Context) (int64, error) {
	var end int64
	err := t.q.QueryRow(ctx, `SELECT COALESCE(MAX(last_seq), 0) FROM tree_hashes`).Scan(&end)
	return end, err
}

func (t pgTree) chunkAt(ctx context.Context, seq int64) (treeChunk, bool, error) {
	var (
		first, last int64
		hashes      []byte
	)
	err := t.q.QueryRow(ctx, `SELECT first_seq, last_seq, hashes FROM tree_hashes WHERE first_seq <= $1 ORDER BY first_seq DESC LIMIT 1`, seq).Scan(&first, &last, &hashes)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && last < seq) {
		return treeChunk{}, false, nil
	}
	if err != nil {
		return treeChunk{}, false, err
	}
	c, err := chunkBytes(first, last, hashes)
	return c, err == nil, err
}

func (t pgTree) chunksIn(ctx context.Context, from, to int64) ([]treeChunk, error) {
	rows, err := t.q.Query(ctx, `SELECT first_seq, last_seq, hashes FROM tree_hashes
		WHERE first_seq >= COALESCE((SELECT MAX(first_seq) FROM tree_hashes WHERE first_seq <= $1), 0) AND first_seq <= $2
		ORDER BY first_seq`, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanChunks(rows)
}

func (t pgTree) insertChunk(ctx context.Context, c treeChunk) error {
	if _, err := t.q.Exec(ctx, `INSERT INTO tree_hashes (first_seq, last_seq, hashes) VALUES ($1, $2, $3)`, c.first, c.last, c.hashes); err != nil {
		return fmt.Errorf("insert tree hashes of %d…%d: %w", c.first, c.last, err)
	}
	return nil
}

// SQLite: the tree and the checkpoint.

func (s *SQLiteStore) TreeSize(ctx context.Context) (int64, error) {
	return sqlTree{s.db}.treeEnd(ctx)
}

func (s *SQLiteStore) ReadHashes(ctx context.Context, idx []int64) ([]tlog.Hash, error) {
	return readHashes(ctx, sqlTree{s.db}, idx)
}

func (s *SQLiteStore) ExtendTree(ctx context.Context, limit int) (n int, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	var last int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM operations`).Scan(&last); err != nil {
		return 0, err
	}
	ext, err := extendTree(ctx, sqlTree{tx}, s.tree, last, limit, func(after int64, limit int) ([]Entry, error) {
		rows, err := tx.QueryContext(ctx, `SELECT seq, did, created_at, op FROM operations WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
		if err != nil {
			return nil, err
		}
		return scanSQLEntries(rows, false)
	})
	if err != nil || ext == nil {
		tx.Rollback()
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	return int(ext.chunk.last - ext.chunk.first + 1), nil
}

func (s *SQLiteStore) Checkpoint(ctx context.Context) (Checkpoint, error) {
	var (
		c          Checkpoint
		root, note []byte
		ms         int64
	)
	err := s.db.QueryRowContext(ctx, `SELECT size, root, note, signed_at FROM checkpoint WHERE id = 1`).Scan(&c.Size, &root, &note, &ms)
	if errors.Is(err, sql.ErrNoRows) {
		return c, ErrNotFound
	}
	if err != nil {
		return c, err
	}
	return checkpointRow(c, root, note, ms)
}

func checkpointRow(c Checkpoint, root, note []byte, ms int64) (Checkpoint, error) {
	if len(root) != tlog.HashSize {
		return c, fmt.Errorf("stored checkpoint root is %d bytes", len(root))
	}
	copy(c.Root[:], root)
	c.Note = note
	c.SignedAt = time.UnixMilli(ms).UTC()
	return c, nil
}

func (s *SQLiteStore) SwapCheckpoint(ctx context.Context, old *Checkpoint, next Checkpoint) error {
	var (
		res sql.Result
		err error
	)
	if old == nil {
		res, err = s.db.ExecContext(ctx, `INSERT INTO checkpoint (id, size, root, note, signed_at) SELECT 1, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM checkpoint)`,
			next.Size, next.Root[:], next.Note, next.SignedAt.UnixMilli())
	} else {
		res, err = s.db.ExecContext(ctx, `UPDATE checkpoint SET size = ?, root = ?, note = ?, signed_at = ? WHERE id = 1 AND size = ? AND note = ?`,
			next.Size, next.Root[:], next.Note, next.SignedAt.UnixMilli(), old.Size, old.Note)
	}
	if err != nil {
		return fmt.Errorf("store the checkpoint: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return ErrCheckpointRace
	}
	return nil
}

// PostgreSQL: the tree and the checkpoint.

func (s *PostgresStore) TreeSize(ctx context.Context) (int64, error) {
	return pgTree{s.pool}.treeEnd(ctx)
}

func (s *PostgresStore) ReadHashes(ctx context.Context, idx []int64) ([]tlog.Hash, error) {
	return readHashes(ctx, pgTree{s.pool}, idx)
}

func (s *PostgresStore) ExtendTree(ctx context.Context, limit int) (n int, err error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, appendLockKey); err != nil {
		return 0, fmt.Errorf("take the append lock: %w", err)
	}
	var last int64
	if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(seq), 0) FROM operations`).Scan(&last); err != nil {
		return 0, err
	}
	ext, err := extendTree(ctx, pgTree{tx}, s.tree, last, limit, func(after int64, limit int) ([]Entry, error) {
		rows, err := tx.Query(ctx, `SELECT seq, did, created_at, op FROM operations WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
		if err != nil {
			return nil, err
		}
		return scanPgEntries(rows, false)
	})
	if err != nil || ext == nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	return int(ext.chunk.last - ext.chunk.first + 1), nil
}

func (s *PostgresStore) Checkpoint(ctx context.Context) (Checkpoint, error) {
	var (
		c          Checkpoint
		root, note []byte
		ms         int64
	)
	err := s.pool.QueryRow(ctx, `SELECT size, root, note, signed_at FROM checkpoint WHERE id = 1`).Scan(&c.Size, &root, &note, &ms)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, ErrNotFound
	}
	if err != nil {
		return c, err
	}
	return checkpointRow(c, root, note, ms)
}

func (s *PostgresStore) SwapCheckpoint(ctx context.Context, old *Checkpoint, next Checkpoint) error {
	var (
		tag pgconn.CommandTag
		err error
	)
	if old == nil {
		tag, err = s.pool.Exec(ctx, `INSERT INTO checkpoint (id, size, root, note, signed_at) VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO NOTHING`,
			next.Size, next.Root[:], next.Note, next.SignedAt.UnixMilli())
	} else {
		tag, err = s.pool.Exec(ctx, `UPDATE checkpoint SET size = $1, root = $2, note = $3, signed_at = $4 WHERE id = 1 AND size = $5 AND note = $6`,
			next.Size, next.Root[:], next.Note, next.SignedAt.UnixMilli(), old.Size, old.Note)
	}
	if err != nil {
		return fmt.Errorf("store the checkpoint: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return ErrCheckpointRace
	}
	return nil
}
