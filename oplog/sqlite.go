package oplog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// SQLiteStore is the embedded Store: one SQLite file in WAL mode with
// synchronous=FULL, so a commit is durable when Append returns. The append
// lock is SQLite's write lock (BEGIN IMMEDIATE), which also holds across
// processes sharing the file.
type SQLiteStore struct {
	db *sql.DB
}

// SQLiteDSN returns the driver DSN for the database file at path.
func SQLiteDSN(path string) string {
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "busy_timeout(30000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	return "file:" + path + "?" + q.Encode()
}

// OpenSQLite opens (creating if needed, with its directory) the database
// file at path. The schema must be migrated before use (see Migrate).
func OpenSQLite(path string) (*SQLiteStore, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("create data directory: %w", err)
		}
	}
	db, err := sql.Open("sqlite", SQLiteDSN(path))
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	db.SetConnMaxLifetime(0)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return &SQLiteStore{db: db}, nil
}

// DB returns the underlying handle (for migrations and tests).
func (s *SQLiteStore) DB() *sql.DB { return s.db }

func (s *SQLiteStore) Close() error { return s.db.Close() }

func (s *SQLiteStore) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

func (s *SQLiteStore) LatestSeq(ctx context.Context) (int64, error) {
	var seq int64
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM operations`).Scan(&seq)
	return seq, err
}

func (s *SQLiteStore) Append(ctx context.Context, dids []string, decide DecideFunc) (err error) {
	tx, err := s.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the append lock
	if err != nil {
		return fmt.Errorf("begin append: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	view := AppendView{Records: make(map[string]*DIDRecord, len(dids))}
	var lastMs int64
	switch err := tx.QueryRowContext(ctx, `SELECT seq, created_at FROM operations ORDER BY seq DESC LIMIT 1`).Scan(&view.LastSeq, &lastMs); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return fmt.Errorf("read last seq: %w", err)
	default:
		view.LastCreatedAt = time.UnixMilli(lastMs).UTC()
	}
	for _, did := range dids {
		if _, ok := view.Records[did]; ok {
			continue
		}
		rec, err := scanRecord(did, tx.QueryRowContext(ctx, `SELECT head_seq, state, doc, data FROM dids WHERE did = ?`, did))
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		view.Records[did] = rec
	}
	writes, err := decide(view)
	if err != nil {
		return err
	}
	if len(writes) == 0 {
		return tx.Rollback()
	}
	if err := checkWrites(view.LastSeq, writes); err != nil {
		return err
	}
	insOp, err := tx.PrepareContext(ctx, `INSERT INTO operations (seq, did, cid, created_at, op, type, signer) VALUES (?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return err
	}
	insNull, err := tx.PrepareContext(ctx, `INSERT INTO nullified (seq, by_seq) VALUES (?, ?)`)
	if err != nil {
		return err
	}
	upsert, err := tx.PrepareContext(ctx, `INSERT INTO dids (did, head_seq, state, doc, data) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (did) DO UPDATE SET head_seq = excluded.head_seq, state = excluded.state, doc = excluded.doc, data = excluded.data`)
	if err != nil {
		return err
	}
	for _, w := range lastRecordOnly(writes) {
		e := &w.Entry
		if w.op {
			if _, err := insOp.ExecContext(ctx, e.Seq, e.DID, e.CID, e.CreatedAt.UnixMilli(), e.Op, int(w.Type), w.Signer); err != nil {
				return fmt.Errorf("insert op %d: %w", e.Seq, err)
			}
			for _, n := range w.Nullifies {
				if _, err := insNull.ExecContext(ctx, n, e.Seq); err != nil {
					return fmt.Errorf("insert nullification of %d: %w", n, err)
				}
			}
		}
		if w.record {
			r := &w.Record
			if _, err := upsert.ExecContext(ctx, r.DID, r.HeadSeq, encodeState(r.State, r.Seqs), r.Doc, r.Data); err != nil {
				return fmt.Errorf("write state of %s: %w", r.DID, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

type rowScanner interface{ Scan(dest ...any) error }

func scanRecord(did string, row rowScanner) (*DIDRecord, error) {
	rec := &DIDRecord{DID: did}
	var state []byte
	if err := row.Scan(&rec.HeadSeq, &state, &rec.Doc, &rec.Data); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("read state of %s: %w", did, err)
	}
	st, seqs, err := decodeState(did, state)
	if err != nil {
		return nil, fmt.Errorf("state of %s: %w", did, err)
	}
	rec.State, rec.Seqs = st, seqs
	return rec, nil
}

func (s *SQLiteStore) Record(ctx context.Context, did string) (*DIDRecord, error) {
	return scanRecord(did, s.db.QueryRowContext(ctx, `SELECT head_seq, state, doc, data FROM dids WHERE did = ?`, did))
}

func (s *SQLiteStore) Ops(ctx context.Context, did string) ([]Entry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT o.seq, o.did, o.cid, o.created_at, o.op, n.seq IS NOT NULL
		FROM operations o LEFT JOIN nullified n ON n.seq = o.seq WHERE o.did = ? ORDER BY o.seq`, did)
	if err != nil {
		return nil, err
	}
	return scanSQLEntries(rows, true)
}

func (s *SQLiteStore) Op(ctx context.Context, seq int64) (Entry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, did, cid, created_at, op FROM operations WHERE seq = ?`, seq)
	if err != nil {
		return Entry{}, err
	}
	es, err := scanSQLEntries(rows, false)
	if err != nil {
		return Entry{}, err
	}
	if len(es) == 0 {
		return Entry{}, ErrNotFound
	}
	return es[0], nil
}

func (s *SQLiteStore) Export(ctx context.Context, after int64, limit int) ([]Entry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, did, cid, created_at, op FROM operations WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
	if err != nil {
		return nil, err
	}
	return scanSQLEntries(rows, false)
}

func (s *SQLiteStore) ExportByTime(ctx context.Context, after time.Time, limit int) ([]Entry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT o.seq, o.did, o.cid, o.created_at, o.op, n.seq IS NOT NULL
		FROM operations o LEFT JOIN nullified n ON n.seq = o.seq
		WHERE o.created_at > ? ORDER BY o.created_at, o.cid LIMIT ?`, after.UnixMilli(), limit)
	if err != nil {
		return nil, err
	}
	return scanSQLEntries(rows, true)
}

// entryRows is what scanning needs of *sql.Rows and pgx.Rows.
type entryRows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// scanEntries reads rows of (seq, did, cid, created_at, op[, nullified]).
// The caller closes rows.
func scanEntries(rows entryRows, withNullified bool) ([]Entry, error) {
	var out []Entry
	for rows.Next() {
		var e Entry
		var ms int64
		dest := []any{&e.Seq, &e.DID, &e.CID, &ms, &e.Op}
		if withNullified {
			dest = append(dest, &e.Nullified)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		e.CreatedAt = time.UnixMilli(ms).UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}

func scanSQLEntries(rows *sql.Rows, withNullified bool) ([]Entry, error) {
	defer rows.Close()
	return scanEntries(rows, withNullified)
}
