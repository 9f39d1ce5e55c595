package oplog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/tlog"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/plcdir/plc/validate"
)

// SQLiteStore is the embedded Store: one SQLite file in WAL mode with
// synchronous=FULL, so a commit is durable when Append returns. The append
// lock is SQLite's write lock (BEGIN IMMEDIATE), which also holds across
// processes sharing the file.
type SQLiteStore struct {
	db    *sql.DB
	stmts sync.Map // query → *sql.Stmt, prepared on first use
	tree  *treeCache
}

// query runs a read through a statement prepared once per store: SQLite
// would otherwise parse the SQL again on every call.
func (s *SQLiteStore) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, ok := s.stmts.Load(q)
	if !ok {
		p, err := s.db.PrepareContext(ctx, q)
		if err != nil {
			return nil, err
		}
		if prev, loaded := s.stmts.LoadOrStore(q, p); loaded {
			p.Close()
			st = prev
		} else {
			st = p
		}
	}
	return st.(*sql.Stmt).QueryContext(ctx, args...)
}

// QueryContext lets the store's reads share readRecords with transactions.
func (s *SQLiteStore) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return s.query(ctx, q, args...)
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
	return &SQLiteStore{db: db, tree: newTreeCache()}, nil
}

// DB returns the underlying handle (for migrations and tests).
func (s *SQLiteStore) DB() *sql.DB { return s.db }

func (s *SQLiteStore) Close() error {
	s.stmts.Range(func(_, v any) bool { v.(*sql.Stmt).Close(); return true })
	return s.db.Close()
}

func (s *SQLiteStore) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

func (s *SQLiteStore) LatestSeq(ctx context.Context) (int64, error) {
	var seq int64
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM operations`).Scan(&seq)
	return seq, err
}

func (s *SQLiteStore) Append(ctx context.Context, source string, dids []string, decide DecideFunc) error {
	tx, err := s.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the append lock
	if err != nil {
		return fmt.Errorf("begin append: %w", err)
	}
	return runAppend(ctx, sqliteAppend{sqlTree{tx}, tx}, s.tree, source, dids, decide)
}

// sqliteAppend is an SQLite append transaction (see runAppend).
type sqliteAppend struct {
	sqlTree
	tx *sql.Tx
}

func (t sqliteAppend) readRecords(ctx context.Context, dids []string, recs map[string]*DIDRecord) error {
	return readRecords(ctx, t.tx, dids, recs)
}

func (t sqliteAppend) cursor(ctx context.Context, source string) (Cursor, error) {
	return readCursor(ctx, t.tx, source)
}

func (t sqliteAppend) write(ctx context.Context, b *Batch, ingest bool, ext *treeExtension) error {
	if ext != nil {
		if err := sqliteInsertWrites(ctx, t.tx, b.Writes); err != nil {
			return err
		}
		if err := t.insertChunk(ctx, ext.chunk); err != nil {
			return err
		}
	}
	if ingest {
		return sqliteInsertIngest(ctx, t.tx, b)
	}
	return nil
}

func (t sqliteAppend) commit(context.Context) error   { return t.tx.Commit() }
func (t sqliteAppend) rollback(context.Context) error { return t.tx.Rollback() }

func sqliteInsertWrites(ctx context.Context, tx *sql.Tx, writes []Write) error {
	// Ops go in statements of opsPerInsert rows (one prepared statement
	// for full ones, one for the rest): a statement costs more than a row.
	prepared := map[int]*sql.Stmt{}
	stmt := func(n int) (*sql.Stmt, error) {
		if st := prepared[n]; st != nil {
			return st, nil
		}
		q := `INSERT INTO operations (seq, did, created_at, op, signer) VALUES (?, ?, ?, ?, ?)` + strings.Repeat(", (?, ?, ?, ?, ?)", n-1)
		st, err := tx.PrepareContext(ctx, q)
		prepared[n] = st
		return st, err
	}
	args := make([]any, 0, 5*opsPerInsert)
	var nulls []any
	for start := 0; start < len(writes); start += opsPerInsert {
		part := writes[start:min(len(writes), start+opsPerInsert)]
		args = args[:0]
		for i := range part {
			w := &part[i]
			e := &w.Entry
			did, err := didKey(e.DID)
			if err != nil {
				return err
			}
			op, err := storedOp(e)
			if err != nil {
				return err
			}
			args = append(args, e.Seq, did, e.CreatedAt.UnixMilli(), op, w.Signer)
			for _, n := range w.Nullifies {
				nulls = append(nulls, n, e.Seq)
			}
		}
		n := len(part)
		if n < opsPerInsert {
			n = 1 // the rest, row by row: one more prepared statement, not one per size
		}
		st, err := stmt(n)
		if err != nil {
			return err
		}
		for off := 0; off < len(args); off += 5 * n {
			if _, err := st.ExecContext(ctx, args[off:off+5*n]...); err != nil {
				return fmt.Errorf("insert ops %d…%d: %w", part[0].Entry.Seq, part[len(part)-1].Entry.Seq, err)
			}
		}
	}
	if len(nulls) > 0 {
		insNull, err := tx.PrepareContext(ctx, `INSERT INTO nullified (seq, by_seq) VALUES (?, ?)`)
		if err != nil {
			return err
		}
		for i := 0; i < len(nulls); i += 2 {
			if _, err := insNull.ExecContext(ctx, nulls[i], nulls[i+1]); err != nil {
				return fmt.Errorf("insert nullification of %d: %w", nulls[i], err)
			}
		}
	}
	return nil
}

// opsPerInsert is the number of ops an INSERT statement writes.
const opsPerInsert = 64

// sqliteInsertIngest writes an ingest's rejections and its new cursor.
func sqliteInsertIngest(ctx context.Context, tx *sql.Tx, b *Batch) error {
	if len(b.Rejections) > 0 {
		ins, err := tx.PrepareContext(ctx, `INSERT INTO rejected (source, line, did, cid, raw, kind, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		for _, r := range b.Rejections {
			if _, err := ins.ExecContext(ctx, r.Source, r.Line, r.DID, r.CID, nonNil(r.Raw), string(r.Kind), r.Reason, r.CreatedAt.UnixMilli()); err != nil {
				return fmt.Errorf("insert rejection of line %d: %w", r.Line, err)
			}
		}
	}
	c := &b.Cursor
	// An UPDATE, then an INSERT if there was no row: an upsert would fire
	// the trigger that refuses REPLACE.
	res, err := tx.ExecContext(ctx, `UPDATE cursors SET line = ?, seq = ?, updated_at = ? WHERE source = ?`, c.Line, c.Seq, c.UpdatedAt.UnixMilli(), c.Source)
	if err != nil {
		return fmt.Errorf("move the cursor of %s: %w", c.Source, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		if _, err := tx.ExecContext(ctx, `INSERT INTO cursors (source, line, seq, updated_at) VALUES (?, ?, ?, ?)`, c.Source, c.Line, c.Seq, c.UpdatedAt.UnixMilli()); err != nil {
			return fmt.Errorf("create the cursor of %s: %w", c.Source, err)
		}
	}
	return nil
}

// nonNil keeps an empty line from becoming NULL, when it is stored and
// when it is looked up.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// readCursor reads the cursor of source through q.
func readCursor(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, source string) (Cursor, error) {
	return scanCursor(q.QueryRowContext(ctx, `SELECT line, seq, updated_at FROM cursors WHERE source = ?`, source), source)
}

func (s *SQLiteStore) Cursor(ctx context.Context, source string) (Cursor, error) {
	return readCursor(ctx, s.db, source)
}

func (s *SQLiteStore) Rejections(ctx context.Context, source string, after int64, limit int) ([]Rejection, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, source, line, did, cid, raw, kind, reason, created_at FROM rejected
		WHERE id > ? AND (? = '' OR source = ?) ORDER BY id LIMIT ?`, after, source, source, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanRejections(rows)
}

// scanRejections reads rows of (id, source, line, did, cid, raw, kind,
// reason, created_at). The caller closes rows.
func scanRejections(rows opRows) ([]Rejection, error) {
	var out []Rejection
	for rows.Next() {
		var r Rejection
		var ms int64
		if err := rows.Scan(&r.ID, &r.Source, &r.Line, &r.DID, &r.CID, &r.Raw, &r.Kind, &r.Reason, &ms); err != nil {
			return nil, err
		}
		r.CreatedAt = time.UnixMilli(ms).UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

// recordsPerQuery bounds the DIDs whose records one query reads (SQLite
// allows 32766 parameters).
const recordsPerQuery = 500

// recordsSQL selects the non-nullified ops of the DIDs in a list, in (did,
// seq) order: the rows a DID's record is rebuilt from.
const recordsSQL = `SELECT o.did, o.seq, o.created_at, o.op, o.signer FROM operations o
	WHERE o.did IN (?%s) AND NOT EXISTS (SELECT 1 FROM nullified n WHERE n.seq = o.seq)
	ORDER BY o.did, o.seq`

type sqlQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// readRecords reads the records of dids that exist into recs, a few
// hundred per query.
func readRecords(ctx context.Context, q sqlQuerier, dids []string, recs map[string]*DIDRecord) error {
	keys, err := didKeys(dids)
	if err != nil {
		return err
	}
	for len(keys) > 0 {
		n := min(len(keys), recordsPerQuery)
		args := make([]any, n)
		for i := range args {
			args[i] = keys[i]
		}
		rows, err := q.QueryContext(ctx, fmt.Sprintf(recordsSQL, strings.Repeat(", ?", n-1)), args...)
		if err != nil {
			return fmt.Errorf("read DID states: %w", err)
		}
		err = scanRecords(rows, recs)
		rows.Close()
		if err != nil {
			return fmt.Errorf("read DID states: %w", err)
		}
		keys = keys[n:]
	}
	return nil
}

func (s *SQLiteStore) Record(ctx context.Context, did string) (*DIDRecord, error) {
	if !validate.ValidDID(did) {
		return nil, ErrNotFound
	}
	recs := map[string]*DIDRecord{}
	if err := readRecords(ctx, s, []string{did}, recs); err != nil {
		return nil, err
	}
	rec := recs[did]
	if rec == nil {
		return nil, ErrNotFound
	}
	return rec, nil
}

// headSQL selects a DID's latest non-nullified op.
const headSQL = `SELECT o.seq, o.did, o.created_at, o.op FROM operations o
	WHERE o.did = %s AND NOT EXISTS (SELECT 1 FROM nullified n WHERE n.seq = o.seq)
	ORDER BY o.seq DESC LIMIT 1`

func (s *SQLiteStore) Head(ctx context.Context, did string) (Entry, error) {
	key, err := didKey(did)
	if err != nil {
		return Entry{}, ErrNotFound
	}
	return firstEntry(s.entries(ctx, false, fmt.Sprintf(headSQL, "?"), key))
}

// firstEntry returns the only entry of a one-row read, or ErrNotFound.
func firstEntry(es []Entry, err error) (Entry, error) {
	if err != nil {
		return Entry{}, err
	}
	if len(es) == 0 {
		return Entry{}, ErrNotFound
	}
	return es[0], nil
}

func (s *SQLiteStore) Ops(ctx context.Context, did string) ([]Entry, error) {
	key, err := didKey(did)
	if err != nil {
		return nil, nil
	}
	return s.entries(ctx, true, `SELECT o.seq, o.did, o.created_at, o.op, n.seq IS NOT NULL
		FROM operations o LEFT JOIN nullified n ON n.seq = o.seq WHERE o.did = ? ORDER BY o.seq`, key)
}

func (s *SQLiteStore) Op(ctx context.Context, seq int64) (Entry, error) {
	return firstEntry(s.entries(ctx, false, `SELECT seq, did, created_at, op FROM operations WHERE seq = ?`, seq))
}

func (s *SQLiteStore) Export(ctx context.Context, after int64, limit int) ([]Entry, error) {
	return s.entries(ctx, false, `SELECT seq, did, created_at, op FROM operations WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
}

func (s *SQLiteStore) ExportByTime(ctx context.Context, after time.Time, limit int) ([]Entry, error) {
	const cols = `SELECT o.seq, o.did, o.created_at, o.op, n.seq IS NOT NULL FROM operations o LEFT JOIN nullified n ON n.seq = o.seq`
	return exportByTime(limit, func() ([]Entry, error) {
		return s.entries(ctx, true, cols+` WHERE o.created_at > ? ORDER BY o.created_at, o.seq LIMIT ?`, after.UnixMilli(), limit)
	}, func(ms int64) ([]Entry, error) {
		return s.entries(ctx, true, cols+` WHERE o.created_at = ? ORDER BY o.seq`, ms)
	})
}

// entries runs the read q and scans its rows of (seq, did, created_at,
// op[, nullified]).
func (s *SQLiteStore) entries(ctx context.Context, withNullified bool, q string, args ...any) ([]Entry, error) {
	rows, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return scanSQLEntries(rows, withNullified)
}

func scanSQLEntries(rows *sql.Rows, withNullified bool) ([]Entry, error) {
	defer rows.Close()
	return scanEntries(rows, withNullified)
}

// The rejection lookups (see rejected.go).

func (s *SQLiteStore) HasRejection(ctx context.Context, r Rejection) (bool, error) {
	var found bool
	err := s.db.QueryRowContext(ctx, sqliteHasRejection, r.Source, r.Line, r.DID, r.CID, r.Reason, nonNil(r.Raw)).Scan(&found)
	if err != nil {
		return false, fmt.Errorf("look up a rejection of %s: %w", r.Source, err)
	}
	return found, nil
}

func (s *SQLiteStore) RejectionsAt(ctx context.Context, source string, line int64) ([]Rejection, error) {
	rows, err := s.db.QueryContext(ctx, sqliteRejectionsAt, source, line)
	if err != nil {
		return nil, fmt.Errorf("read the rejections of %s at line %d: %w", source, line, err)
	}
	defer rows.Close()
	return scanRejections(rows)
}

// The derived-state check's reads (DerivedReader, see derived.go).

func (s *SQLiteStore) OpsByDID(ctx context.Context, afterDID string, afterSeq int64, limit int) ([]DerivedOp, error) {
	key, err := derivedAfter(afterDID)
	if err != nil {
		return nil, err
	}
	rows, err := s.query(ctx, derivedCols+` WHERE (o.did, o.seq) > (?, ?) ORDER BY o.did, o.seq LIMIT ?`, key, afterSeq, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanDerived(rows)
}

func (s *SQLiteStore) StrayNullified(ctx context.Context, limit int) ([]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT n.seq FROM nullified n WHERE NOT EXISTS (SELECT 1 FROM operations o WHERE o.seq = n.seq) ORDER BY n.seq LIMIT ?`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanSeqs(rows)
}

// The handle index (HandleIndex, see handles.go).

// handlesPerInsert bounds the rows of one SQLite INSERT into handles (two
// parameters each; SQLite allows 32766).
const handlesPerInsert = 500

// insertHandles writes the handles of entries, one statement per
// handlesPerInsert pairs.
func (s *SQLiteStore) insertHandles(ctx context.Context, tx *sql.Tx, entries []*Entry) error {
	pairs, err := handlePairs(entries)
	if err != nil {
		return err
	}
	for len(pairs) > 0 {
		part := pairs[:min(len(pairs), handlesPerInsert)]
		pairs = pairs[len(part):]
		args := make([]any, 0, 2*len(part))
		for _, p := range part {
			args = append(args, p.handle, p.did)
		}
		q := `INSERT OR IGNORE INTO handles (handle, did) VALUES (?, ?)` + strings.Repeat(", (?, ?)", len(part)-1)
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("index handles: %w", err)
		}
	}
	return nil
}

func (s *SQLiteStore) DIDsForHandle(ctx context.Context, handle string) ([]string, error) {
	h, err := NormalizeHandle(handle)
	if err != nil {
		return nil, err
	}
	rows, err := s.query(ctx, `SELECT did FROM handles WHERE handle = ? ORDER BY did LIMIT ?`, h, MaxHandleDIDs)
	if err != nil {
		return nil, fmt.Errorf("look up handle: %w", err)
	}
	defer rows.Close()
	return scanHandleDIDs(rows)
}

func (s *SQLiteStore) HandlesBehind(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE((SELECT MAX((SELECT COALESCE(MAX(seq), 0) FROM operations) - done, 0) FROM handles_backfill), 0)`).Scan(&n)
	return n, err
}

func (s *SQLiteStore) ExtendHandles(ctx context.Context, limit int) (n int, err error) {
	tx, err := s.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: one catch-up at a time
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	var done int64
	switch err := tx.QueryRowContext(ctx, `SELECT done FROM handles_backfill WHERE id = 1`).Scan(&done); {
	case errors.Is(err, sql.ErrNoRows):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("read the handle index's backfill: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT seq, did, created_at, op FROM operations WHERE seq > ? ORDER BY seq LIMIT ?`, done, limit)
	if err != nil {
		return 0, err
	}
	es, err := scanSQLEntries(rows, false)
	if err != nil || len(es) == 0 {
		return 0, err
	}
	last, err := backfillEnd(es, done)
	if err != nil {
		return 0, err
	}
	if err := s.insertHandles(ctx, tx, entryPtrs(es)); err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE handles_backfill SET done = ? WHERE id = 1`, last); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return len(es), nil
}

// The counts (Stats, see stats.go).

func (s *SQLiteStore) RejectionSize(ctx context.Context, source string) (int64, int64, error) {
	rows, err := s.query(ctx, sqliteRejectionSizeSQL, source)
	if err != nil {
		return 0, 0, err
	}
	defer rows.Close()
	var n, b int64
	if rows.Next() {
		if err := rows.Scan(&n, &b); err != nil {
			return 0, 0, err
		}
	}
	return n, b, rows.Err()
}

func (s *SQLiteStore) CountOpsAfter(ctx context.Context, t time.Time) (int64, error) {
	return s.count(ctx, countOpsAfterSQL, t.UnixMilli())
}

func (s *SQLiteStore) CountRejections(ctx context.Context, source string) (int64, error) {
	return s.count(ctx, countRejectionsSQL, source)
}

func (s *SQLiteStore) count(ctx context.Context, q string, arg any) (int64, error) {
	rows, err := s.query(ctx, fmt.Sprintf(q, "?"), arg)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var n int64
	if rows.Next() {
		if err := rows.Scan(&n); err != nil {
			return 0, err
		}
	}
	return n, rows.Err()
}

// The transparency log's tree and checkpoint (see tree.go).

// sqlTree is the tree's access to SQLite, in a transaction or not.
type sqlTree struct {
	q interface {
		QueryContext(context.Context, string, ...any) (*sql.Rows, error)
		QueryRowContext(context.Context, string, ...any) *sql.Row
		ExecContext(context.Context, string, ...any) (sql.Result, error)
	}
}

func (t sqlTree) queryRow(ctx context.Context, q string, args ...any) rowScanner {
	return t.q.QueryRowContext(ctx, q, args...)
}

func (t sqlTree) treeEnd(ctx context.Context) (int64, error) {
	var end int64
	err := t.q.QueryRowContext(ctx, `SELECT COALESCE(MAX(last_seq), 0) FROM tree_hashes`).Scan(&end)
	return end, err
}

func (t sqlTree) chunkAt(ctx context.Context, seq int64) (treeChunk, bool, error) {
	return scanChunkAt(t.q.QueryRowContext(ctx, `SELECT first_seq, last_seq, hashes FROM tree_hashes WHERE first_seq <= ? ORDER BY first_seq DESC LIMIT 1`, seq), seq)
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

func (t sqlTree) insertChunk(ctx context.Context, c treeChunk) error {
	if _, err := t.q.ExecContext(ctx, `INSERT INTO tree_hashes (first_seq, last_seq, hashes) VALUES (?, ?, ?)`, c.first, c.last, c.hashes); err != nil {
		return fmt.Errorf("insert tree hashes of %d…%d: %w", c.first, c.last, err)
	}
	return nil
}

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
	return scanCheckpoint(s.db.QueryRowContext(ctx, `SELECT size, root, note, signed_at FROM checkpoint WHERE id = 1`))
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
