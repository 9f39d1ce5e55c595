package oplog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/mod/sumdb/tlog"
)

// db is a backend's handle (a pool, a database, a transaction) as the
// queries written once for both backends use it. Their SQL has ?
// placeholders, which the PostgreSQL side numbers ($1, $2, …).
type db interface {
	query(ctx context.Context, q string, args ...any) (dbRows, error)
	queryRow(ctx context.Context, q string, args ...any) rowScanner
	// exec runs a write and returns the number of rows it affected.
	exec(ctx context.Context, q string, args ...any) (int64, error)
}

// dbRows are the rows of a read on either backend.
type dbRows interface {
	opRows
	Close()
}

// sqliteDB is the db of an SQLite database or transaction; with prepared
// set, its queries run through that store's statements prepared once;
// with w set, its writes run on w (the store's write connection).
type sqliteDB struct {
	h        sqliteHandle
	w        sqliteHandle
	prepared *SQLiteStore
}

// sqliteHandle is an *sql.DB or an *sql.Tx.
type sqliteHandle interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
	QueryRowContext(context.Context, string, ...any) *sql.Row
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}

// sqlRows gives *sql.Rows the Close of dbRows.
type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { r.Rows.Close() }

func (d sqliteDB) query(ctx context.Context, q string, args ...any) (dbRows, error) {
	var (
		rows *sql.Rows
		err  error
	)
	if d.prepared != nil {
		var st *sql.Stmt
		if st, err = d.prepared.stmt(ctx, q); err == nil {
			rows, err = st.QueryContext(ctx, args...)
		}
	} else {
		rows, err = d.h.QueryContext(ctx, q, args...)
	}
	if err != nil {
		return nil, err
	}
	return sqlRows{rows}, nil
}

func (d sqliteDB) queryRow(ctx context.Context, q string, args ...any) rowScanner {
	if d.prepared != nil {
		st, err := d.prepared.stmt(ctx, q)
		if err != nil {
			return errRow{err}
		}
		return st.QueryRowContext(ctx, args...)
	}
	return d.h.QueryRowContext(ctx, q, args...)
}

// errRow is a row whose query could not be prepared: Scan returns why.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

func (d sqliteDB) exec(ctx context.Context, q string, args ...any) (int64, error) {
	h := d.h
	if d.w != nil {
		h = d.w
	}
	res, err := h.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// pgDB is the db of a PostgreSQL pool or transaction.
type pgDB struct {
	h interface {
		Query(context.Context, string, ...any) (pgx.Rows, error)
		QueryRow(context.Context, string, ...any) pgx.Row
		Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
	}
}

func (d pgDB) query(ctx context.Context, q string, args ...any) (dbRows, error) {
	rows, err := d.h.Query(ctx, numbered(q), args...)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (d pgDB) queryRow(ctx context.Context, q string, args ...any) rowScanner {
	return d.h.QueryRow(ctx, numbered(q), args...)
}

func (d pgDB) exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := d.h.Exec(ctx, numbered(q), args...)
	return tag.RowsAffected(), err
}

// numbered returns q with its ? placeholders numbered as PostgreSQL's
// ($1, $2, …). The queries given to it have no ? of any other meaning.
func numbered(q string) string {
	var b strings.Builder
	b.Grow(len(q) + 8)
	n := 0
	for {
		i := strings.IndexByte(q, '?')
		if i < 0 {
			b.WriteString(q)
			return b.String()
		}
		n++
		b.WriteString(q[:i])
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(n))
		q = q[i+1:]
	}
}

// entries runs the read q on d and scans its rows of (seq, did,
// created_at, op[, nullified]).
func entries(ctx context.Context, d db, withNullified bool, q string, args ...any) ([]Entry, error) {
	rows, err := d.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanEntries(rows, withNullified)
}

// scanAll runs the read q on d and scans its rows with scan.
func scanAll[T any](ctx context.Context, d db, scan func(opRows) (T, error), q string, args ...any) (T, error) {
	rows, err := d.query(ctx, q, args...)
	if err != nil {
		var zero T
		return zero, err
	}
	defer rows.Close()
	return scan(rows)
}

// reads are the Store's reads that are the same on both backends, over
// the store's db.
type reads struct {
	h db
}

func (r reads) LatestSeq(ctx context.Context) (int64, error) {
	return r.scalar(ctx, `SELECT COALESCE(MAX(seq), 0) FROM operations`)
}

func (r reads) Cursor(ctx context.Context, source string) (Cursor, error) {
	return readCursor(ctx, r.h, source)
}

func (r reads) Rejections(ctx context.Context, source string, after int64, limit int) ([]Rejection, error) {
	return scanAll(ctx, r.h, scanRejections, `SELECT id, source, line, did, cid, raw, kind, reason, created_at FROM rejected
		WHERE id > ? AND (? = '' OR source = ?) ORDER BY id LIMIT ?`, after, source, source, limit)
}

// recordSQL selects the non-nullified ops of one DID, in seq order: the
// rows its record is rebuilt from. It is a query of its own, not that of
// a batch's DIDs, so that PostgreSQL's prepared plan is the one for a
// single DID: the plan for an array of any size expects thousands of rows,
// and at scale takes parallel workers for a lookup of a few.
const recordSQL = `SELECT o.did, o.seq, o.created_at, o.op, o.signer FROM operations o
	WHERE o.did = ? AND ` + notNullified + `
	ORDER BY o.seq`

func (r reads) Record(ctx context.Context, did string) (*DIDRecord, error) {
	key, err := DIDKey(did)
	if err != nil {
		return nil, ErrNotFound
	}
	rows, err := r.h.query(ctx, recordSQL, key)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	recs := map[string]*DIDRecord{}
	if err := scanRecords(rows, recs); err != nil {
		return nil, fmt.Errorf("read state of %s: %w", did, err)
	}
	if rec := recs[did]; rec != nil {
		return rec, nil
	}
	return nil, ErrNotFound
}

// headSQL selects a DID's latest non-nullified op.
const headSQL = `SELECT o.seq, o.did, o.created_at, o.op FROM operations o
	WHERE o.did = ? AND ` + notNullified + `
	ORDER BY o.seq DESC LIMIT 1`

func (r reads) Head(ctx context.Context, did string) (Entry, error) {
	key, err := DIDKey(did)
	if err != nil {
		return Entry{}, ErrNotFound
	}
	return firstEntry(entries(ctx, r.h, false, headSQL, key))
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

func (r reads) Ops(ctx context.Context, did string) ([]Entry, error) {
	key, err := DIDKey(did)
	if err != nil {
		return nil, nil
	}
	return entries(ctx, r.h, true, opsSQL, key)
}

// opsSQL selects every op of one DID with its nullified flag, in seq
// order.
const opsSQL = `SELECT o.seq, o.did, o.created_at, o.op, ` + isNullified + `
	FROM operations o WHERE o.did = ? ORDER BY o.seq`

// isNullified is whether the op o is nullified, and notNullified whether it
// is not: probes of nullified's index by the row's seq, which PostgreSQL
// runs once per row it returns. Scalar subqueries, because PostgreSQL may
// run a NOT EXISTS as a join and an EXISTS as a hashed subplan, and either
// may read and hash the whole of nullified for a read of a few ops: with
// statistics stale after a bulk load it does, and each read of one DID
// then costs time in proportion to every op ever nullified.
const (
	isNullified  = `(SELECT n.seq FROM nullified n WHERE n.seq = o.seq) IS NOT NULL`
	notNullified = `(SELECT n.seq FROM nullified n WHERE n.seq = o.seq) IS NULL`
)

func (r reads) Op(ctx context.Context, seq int64) (Entry, error) {
	return firstEntry(entries(ctx, r.h, false, `SELECT seq, did, created_at, op FROM operations WHERE seq = ?`, seq))
}

// exportByTimeSQL selects up to a number of ops, with their nullified
// flags, created after a time (in ms), in (created_at, seq) order;
// exportAtTimeSQL those created at a time.
const (
	exportByTimeSQL = `SELECT o.seq, o.did, o.created_at, o.op, ` + isNullified + ` FROM operations o
		WHERE o.created_at > ? ORDER BY o.created_at, o.seq LIMIT ?`
	exportAtTimeSQL = `SELECT o.seq, o.did, o.created_at, o.op, ` + isNullified + ` FROM operations o
		WHERE o.created_at = ? ORDER BY o.seq`
)

// exportSQL selects up to a number of ops after a seq, in seq order.
const exportSQL = `SELECT seq, did, created_at, op FROM operations WHERE seq > ? ORDER BY seq LIMIT ?`

func (r reads) Export(ctx context.Context, after int64, limit int) ([]Entry, error) {
	return entries(ctx, r.h, false, exportSQL, after, limit)
}

func (r reads) ExportByTime(ctx context.Context, after time.Time, limit int) ([]Entry, error) {
	return exportByTime(limit, func() ([]Entry, error) {
		return entries(ctx, r.h, true, exportByTimeSQL, after.UnixMilli(), limit)
	}, func(ms int64) ([]Entry, error) {
		return entries(ctx, r.h, true, exportAtTimeSQL, ms)
	})
}

// Lookups of stored rejections by their source line and content, for the
// mirror: whether a divergence is recorded already (so that it is recorded
// once, across restarts), and what the line the cursor ends at was when it
// was not applied. Both use the (source, line) index.

const (
	hasRejectionSQL = `SELECT EXISTS (SELECT 1 FROM rejected
		WHERE source = ? AND line = ? AND did = ? AND cid = ? AND reason = ? AND raw = ?)`
	rejectionsAtSQL = `SELECT id, source, line, did, cid, raw, kind, reason, created_at FROM rejected
		WHERE source = ? AND line = ? ORDER BY id`
)

func (r reads) HasRejection(ctx context.Context, rej Rejection) (bool, error) {
	var found bool
	err := r.h.queryRow(ctx, hasRejectionSQL, rej.Source, rej.Line, rej.DID, rej.CID, rej.Reason, nonNil(rej.Raw)).Scan(&found)
	if err != nil {
		return false, fmt.Errorf("look up a rejection of %s: %w", rej.Source, err)
	}
	return found, nil
}

func (r reads) RejectionsAt(ctx context.Context, source string, line int64) ([]Rejection, error) {
	rows, err := r.h.query(ctx, rejectionsAtSQL, source, line)
	if err != nil {
		return nil, fmt.Errorf("read the rejections of %s at line %d: %w", source, line, err)
	}
	defer rows.Close()
	return scanRejections(rows)
}

// The derived-state check's reads (DerivedReader, see derived.go).

func (r reads) OpsByDID(ctx context.Context, afterDID string, afterSeq int64, limit int) ([]DerivedOp, error) {
	key, err := derivedAfter(afterDID)
	if err != nil {
		return nil, err
	}
	return scanAll(ctx, r.h, scanDerived, derivedCols+` WHERE (o.did, o.seq) > (?, ?) ORDER BY o.did, o.seq LIMIT ?`, key, afterSeq, limit)
}

func (r reads) StrayNullified(ctx context.Context, limit int) ([]int64, error) {
	return scanAll(ctx, r.h, scanSeqs, `SELECT n.seq FROM nullified n WHERE NOT EXISTS (SELECT 1 FROM operations o WHERE o.seq = n.seq) ORDER BY n.seq LIMIT ?`, limit)
}

// The handle index (HandleIndex, see handles.go).

func (r reads) DIDsForHandle(ctx context.Context, handle string) ([]string, error) {
	h, err := NormalizeHandle(handle)
	if err != nil {
		return nil, err
	}
	rows, err := r.h.query(ctx, `SELECT did FROM handles WHERE handle = ? ORDER BY did LIMIT ?`, h, MaxHandleDIDs)
	if err != nil {
		return nil, fmt.Errorf("look up handle: %w", err)
	}
	defer rows.Close()
	return scanHandleDIDs(rows)
}

// The counts (Stats, see stats.go).

func (r reads) CountOpsAfter(ctx context.Context, t time.Time) (int64, error) {
	return r.scalar(ctx, fmt.Sprintf(countOpsAfterSQL, "?"), t.UnixMilli())
}

func (r reads) CountRejections(ctx context.Context, source string) (int64, error) {
	return r.scalar(ctx, fmt.Sprintf(countRejectionsSQL, "?"), source)
}

// scalar runs a read of one number.
func (r reads) scalar(ctx context.Context, q string, args ...any) (int64, error) {
	var n int64
	err := r.h.queryRow(ctx, q, args...).Scan(&n)
	return n, err
}

// The transparency log's tree and checkpoint (see tree.go).

func (r reads) TreeSize(ctx context.Context) (int64, error) {
	return dbTree{r.h}.treeEnd(ctx)
}

func (r reads) ReadHashes(ctx context.Context, idx []int64) ([]tlog.Hash, error) {
	return readHashes(ctx, dbTree{r.h}, idx)
}

func (r reads) Checkpoint(ctx context.Context) (Checkpoint, error) {
	return scanCheckpoint(r.h.queryRow(ctx, `SELECT size, root, note, signed_at FROM checkpoint WHERE id = 1`))
}

// swapCheckpoint is Store.SwapCheckpoint on d, whose insertSQL stores the
// first checkpoint, (size, root, note, signed_at), unless there is one.
func swapCheckpoint(ctx context.Context, d db, insertSQL string, old *Checkpoint, next Checkpoint) error {
	var (
		n   int64
		err error
	)
	if old == nil {
		n, err = d.exec(ctx, insertSQL, next.Size, next.Root[:], next.Note, next.SignedAt.UnixMilli())
	} else {
		n, err = d.exec(ctx, `UPDATE checkpoint SET size = ?, root = ?, note = ?, signed_at = ? WHERE id = 1 AND size = ? AND note = ?`,
			next.Size, next.Root[:], next.Note, next.SignedAt.UnixMilli(), old.Size, old.Note)
	}
	if err != nil {
		return fmt.Errorf("store the checkpoint: %w", err)
	}
	if n != 1 {
		return ErrCheckpointRace
	}
	return nil
}

// dbTree is the tree's access to a backend, in a transaction or not.
type dbTree struct {
	db
}

func (t dbTree) treeEnd(ctx context.Context) (int64, error) {
	return reads{t.db}.scalar(ctx, `SELECT COALESCE(MAX(last_seq), 0) FROM tree_hashes`)
}

func (t dbTree) chunkAt(ctx context.Context, seq int64) (treeChunk, bool, error) {
	return scanChunkAt(t.queryRow(ctx, `SELECT first_seq, last_seq, hashes FROM tree_hashes WHERE first_seq <= ? ORDER BY first_seq DESC LIMIT 1`, seq), seq)
}

func (t dbTree) chunksIn(ctx context.Context, from, to int64) ([]treeChunk, error) {
	return scanAll(ctx, t.db, scanChunks, `SELECT first_seq, last_seq, hashes FROM tree_hashes
		WHERE first_seq >= COALESCE((SELECT MAX(first_seq) FROM tree_hashes WHERE first_seq <= ?), 0) AND first_seq <= ?
		ORDER BY first_seq`, from, to)
}

func (t dbTree) insertChunk(ctx context.Context, c treeChunk) error {
	if _, err := t.exec(ctx, `INSERT INTO tree_hashes (first_seq, last_seq, hashes) VALUES (?, ?, ?)`, c.first, c.last, c.hashes); err != nil {
		return fmt.Errorf("insert tree hashes of %d…%d: %w", c.first, c.last, err)
	}
	return nil
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

// scanChunkAt reads the chunk holding seq from a row of (first_seq,
// last_seq, hashes) of the last chunk that starts at or before seq: found
// false when there is none or it ends before seq.
func scanChunkAt(row rowScanner, seq int64) (treeChunk, bool, error) {
	var (
		first, last int64
		hashes      []byte
	)
	err := row.Scan(&first, &last, &hashes)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && last < seq) {
		return treeChunk{}, false, nil
	}
	if err != nil {
		return treeChunk{}, false, err
	}
	c, err := chunkBytes(first, last, hashes)
	return c, err == nil, err
}

// scanCheckpoint reads a row of (size, root, note, signed_at): ErrNotFound
// when there is none.
func scanCheckpoint(row rowScanner) (Checkpoint, error) {
	var (
		c          Checkpoint
		root, note []byte
		ms         int64
	)
	err := row.Scan(&c.Size, &root, &note, &ms)
	if errors.Is(err, sql.ErrNoRows) {
		return c, ErrNotFound
	}
	if err != nil {
		return c, err
	}
	if len(root) != tlog.HashSize {
		return c, fmt.Errorf("stored checkpoint root is %d bytes", len(root))
	}
	copy(c.Root[:], root)
	c.Note = note
	c.SignedAt = time.UnixMilli(ms).UTC()
	return c, nil
}
