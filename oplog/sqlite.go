package oplog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// SQLiteStore is the embedded Store: one SQLite file in WAL mode with
// synchronous=FULL, so a commit is durable when Append returns. The append
// lock is SQLite's write lock (BEGIN IMMEDIATE), which also holds across
// processes sharing the file.
//
// Every write of the store goes through one connection of its own (w),
// reads through a pool of others (db). A connection's page cache is
// dropped whenever another connection has written since its last
// transaction: with writes on whichever pooled connection was free (a
// checkpoint signed each second, a webhook lease, the appends), an append
// often began with an empty cache and read its index pages back, and the
// pages its cache had held were freed and allocated again (BENCHMARKS.md,
// "One connection for the writes").
type SQLiteStore struct {
	reads
	db    *sql.DB  // reads
	w     *sql.DB  // writes: one connection
	stmts sync.Map // query → *sql.Stmt, prepared on first use
	tree  *treeCache
	probe *walProbe
}

// stmt returns the statement of q, prepared once per store: SQLite would
// otherwise parse the SQL again on every call (for a query as small as
// the latest seq, most of its cost).
func (s *SQLiteStore) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := s.stmts.Load(q); ok {
		return st.(*sql.Stmt), nil
	}
	p, err := s.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.stmts.LoadOrStore(q, p); loaded {
		p.Close()
		return prev.(*sql.Stmt), nil
	}
	return p, nil
}

// sqliteMmapSize is SQLite's default ceiling on memory-mapped I/O
// (SQLITE_MAX_MMAP_SIZE, 0x7fff0000 bytes).
const sqliteMmapSize = 0x7fff0000

// SQLiteDSN returns the driver DSN for the database file at path.
func SQLiteDSN(path string) string {
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "busy_timeout(30000)")
	q.Add("_pragma", "foreign_keys(1)")
	// A batch of replayed history touches a page of the DID index for
	// nearly every op: with SQLite's default 2 MiB page cache a large log
	// reads those pages back from the OS at every batch, and with its
	// default checkpoint every 4 MiB of WAL each batch's pages are copied
	// into the database (and synced) once per commit. 16 MiB per
	// connection and a checkpoint every 80 MiB of WAL cut the system time
	// of a 1 M-op import by half (BENCHMARKS.md, "Import at 1 M ops").
	q.Add("_pragma", "cache_size(-16384)")
	q.Add("_pragma", "wal_autocheckpoint(20000)")
	// Reads map the database file rather than copy each page out of the
	// OS's cache with a pread: a first resolution of a DID walks three
	// B-trees whose pages a 16 MiB cache rarely holds at scale, and each
	// pread was a system call (BENCHMARKS.md, "Cold resolutions"). SQLite
	// maps at most its compiled-in ceiling (just under 2 GiB) and reads
	// the rest as before; writes still go through write(2).
	q.Add("_pragma", "mmap_size("+strconv.Itoa(sqliteMmapSize)+")")
	q.Set("_txlock", "immediate")
	return "file:" + path + "?" + q.Encode()
}

// OpenSQLite opens (creating if needed, with its directory) the database
// file at path. The schema must be migrated before use (see Migrate).
func OpenSQLite(path string) (*SQLiteStore, error) {
	if err := sqliteDir(path); err != nil {
		return nil, err
	}
	db, err := openSQLitePool(path, 8)
	if err != nil {
		return nil, err
	}
	w, err := openSQLitePool(path, 1)
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &SQLiteStore{db: db, w: w, tree: newTreeCache(), probe: newWALProbe(path)}
	s.reads = reads{sqliteDB{h: db, w: w, prepared: s}}
	return s, nil
}

// sqliteDir creates the directory of the database file at path.
func sqliteDir(path string) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("create data directory: %w", err)
		}
	}
	return nil
}

// openSQLitePool opens a handle of at most conns connections, kept open,
// to the database file at path, and checks that one connects.
func openSQLitePool(path string, conns int) (*sql.DB, error) {
	db, err := sql.Open("sqlite", SQLiteDSN(path))
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	db.SetConnMaxLifetime(0)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return db, nil
}

// DB returns the handle of the read pool (for benchmarks and tests);
// migrations open a handle of their own (see Migrate).
func (s *SQLiteStore) DB() *sql.DB { return s.db }

// ChangeToken implements ChangeProbe from the WAL-index header SQLite
// keeps beside the database (see walProbe).
func (s *SQLiteStore) ChangeToken() (ChangeToken, bool) { return s.probe.ChangeToken() }

func (s *SQLiteStore) Close() error {
	s.probe.close()
	s.stmts.Range(func(_, v any) bool { v.(*sql.Stmt).Close(); return true })
	return errors.Join(s.w.Close(), s.db.Close())
}

func (s *SQLiteStore) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

func (s *SQLiteStore) Append(ctx context.Context, source string, dids []string, decide DecideFunc) error {
	tx, err := s.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the append lock
	if err != nil {
		return fmt.Errorf("begin append: %w", err)
	}
	// Each multi-row insert of a batch keeps a statement journal (to undo
	// that statement alone), which SQLite writes to a temporary file above
	// 64 KiB: one write call per page of every batch. Kept in memory it is
	// bounded by a statement's pages. Set here, not in the DSN, because
	// temp_store applies to sorts too, and an index built by a migration
	// on a large log must be able to spill to disk.
	if _, err := tx.ExecContext(ctx, "PRAGMA temp_store = MEMORY"); err != nil {
		tx.Rollback()
		return fmt.Errorf("begin append: %w", err)
	}
	return runAppend(ctx, sqliteAppend{dbTree{sqliteDB{h: tx}}, tx}, s.tree, source, dids, decide)
}

// sqliteAppend is an SQLite append transaction (see runAppend).
type sqliteAppend struct {
	dbTree
	tx *sql.Tx
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
			did, err := DIDKey(e.DID)
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
	WHERE o.did IN (?%s) AND ` + notNullified + `
	ORDER BY o.did, o.seq`

// readRecords reads the records of dids that exist into recs, a few
// hundred per query.
func (t sqliteAppend) readRecords(ctx context.Context, dids []string, recs map[string]*DIDRecord) error {
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
		rows, err := t.query(ctx, fmt.Sprintf(recordsSQL, strings.Repeat(", ?", n-1)), args...)
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

func (s *SQLiteStore) HandlesBehind(ctx context.Context) (int64, error) {
	return s.scalar(ctx, `SELECT COALESCE((SELECT MAX((SELECT COALESCE(MAX(seq), 0) FROM operations) - done, 0) FROM handles_backfill), 0)`)
}

func (s *SQLiteStore) ExtendHandles(ctx context.Context, limit int) (int, error) {
	tx, err := s.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE: one catch-up at a time
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	t := sqliteAppend{dbTree{sqliteDB{h: tx}}, tx}
	return extendHandlesIn(ctx, t, `SELECT done FROM handles_backfill WHERE id = 1`, limit, func(es []*Entry) error {
		return s.insertHandles(ctx, t.tx, es)
	})
}

// The counts (Stats, see stats.go).

func (s *SQLiteStore) RejectionSize(ctx context.Context, source string) (n, b int64, err error) {
	err = s.db.QueryRowContext(ctx, sqliteRejectionSizeSQL, source).Scan(&n, &b)
	return n, b, err
}

// The transparency log's tree and checkpoint (see tree.go).

func (s *SQLiteStore) ExtendTree(ctx context.Context, limit int) (int, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	return extendTreeIn(ctx, sqliteAppend{dbTree{sqliteDB{h: tx}}, tx}, s.tree, limit)
}

func (s *SQLiteStore) SwapCheckpoint(ctx context.Context, old *Checkpoint, next Checkpoint) error {
	return swapCheckpoint(ctx, s.reads.h, `INSERT INTO checkpoint (id, size, root, note, signed_at) SELECT 1, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM checkpoint)`, old, next)
}
