package oplog

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// appendLockKey is the key of the transaction-scoped advisory lock that
// every Append takes first: the append lock, shared by all processes using
// the database. It is "plc-appd" in ASCII.
const appendLockKey int64 = 0x706c632d61707064

// PostgresStore is the production Store: a pgx connection pool on one
// PostgreSQL primary. The append lock is a transaction-scoped advisory lock
// (pg_advisory_xact_lock), so appends of every process sharing the database
// are serialised; commits are durable as the server's synchronous_commit
// setting makes them, and OpenPostgres refuses a server where it is off.
type PostgresStore struct {
	pool *pgxpool.Pool
}

// OpenPostgres connects to the PostgreSQL database at url (a postgres:// URL
// or a libpq keyword/value string). The schema must be migrated before use
// (see Prepare). It refuses a database on which commits would not be
// durable (fsync or synchronous_commit off).
func OpenPostgres(ctx context.Context, url string) (*PostgresStore, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors redact passwords; the URL itself stays out.
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres %s: %w", RedactURL(url), err)
	}
	if err := checkDurable(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres %s: %w", RedactURL(url), err)
	}
	return &PostgresStore{pool: pool}, nil
}

// checkDurable fails unless a commit on pool is durable when it returns.
func checkDurable(ctx context.Context, pool *pgxpool.Pool) error {
	var fsync, syncCommit string
	err := pool.QueryRow(ctx, `SELECT current_setting('fsync'), current_setting('synchronous_commit')`).Scan(&fsync, &syncCommit)
	if err != nil {
		return err
	}
	if fsync != "on" {
		return fmt.Errorf("server runs with fsync=%s: commits would not be durable", fsync)
	}
	if syncCommit == "off" {
		return errors.New("synchronous_commit is off for this connection: commits would not be durable; set it to on")
	}
	return nil
}

// RedactURL returns a database URL fit for logs and errors: passwords, in
// the user info or the query, are replaced. A string that is not a URL
// (a libpq keyword/value string may hold a password) is not shown at all.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return "(database connection string)"
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// Pool returns the underlying pool (for tests and diagnostics).
func (s *PostgresStore) Pool() *pgxpool.Pool { return s.pool }

func (s *PostgresStore) Close() error {
	s.pool.Close()
	return nil
}

func (s *PostgresStore) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

func (s *PostgresStore) LatestSeq(ctx context.Context) (int64, error) {
	var seq int64
	err := s.pool.QueryRow(ctx, `SELECT COALESCE(MAX(seq), 0) FROM operations`).Scan(&seq)
	return seq, err
}

// appendReadSQL reads, in one statement, the last op's seq and createdAt
// (0, 0 for an empty log) and the records of the DIDs in $1: one row per
// record found, or one row with NULL record columns if none is.
const appendReadSQL = `WITH last AS (SELECT COALESCE(MAX(seq), 0) AS seq FROM operations)
SELECT last.seq, COALESCE(o.created_at, 0), d.did, d.head_seq, d.state, d.doc, d.data
FROM last
LEFT JOIN operations o ON o.seq = last.seq
LEFT JOIN dids d ON d.did = ANY($1)`

func (s *PostgresStore) Append(ctx context.Context, dids []string, decide DecideFunc) error {
	return s.appendTx(ctx, "", dids, appendOnly(decide))
}

func (s *PostgresStore) Ingest(ctx context.Context, source string, dids []string, decide IngestFunc) error {
	if source == "" {
		return errors.New("oplog: Ingest without a source")
	}
	return s.appendTx(ctx, source, dids, decide)
}

// appendTx is Append, and Ingest when source is set.
func (s *PostgresStore) appendTx(ctx context.Context, source string, dids []string, decide IngestFunc) (err error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{}) // READ COMMITTED: each statement sees what committed before it
	if err != nil {
		return fmt.Errorf("begin append: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	// The lock comes first, in its own statement: the reads below then
	// take their snapshots after every earlier append has committed.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, appendLockKey); err != nil {
		return fmt.Errorf("take the append lock: %w", err)
	}
	var view IngestView
	if view.AppendView, err = s.readView(ctx, tx, dids); err != nil {
		return err
	}
	if source != "" {
		if view.Cursor, err = pgCursor(ctx, tx, source); err != nil {
			return err
		}
	}
	batch, err := decide(view)
	if err != nil {
		return err
	}
	writes := batch.Writes
	changed := len(writes) > 0
	if source != "" {
		if changed, err = checkIngest(source, view.Cursor, &batch); err != nil {
			return err
		}
	}
	if !changed {
		return tx.Rollback(ctx)
	}
	if err := checkWrites(view.LastSeq, writes); err != nil {
		return err
	}
	if err := insertWrites(ctx, tx, lastRecordOnly(writes), source != "", &batch); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// pgQuerier is what cursor reads need of a pool or a transaction.
type pgQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func pgCursor(ctx context.Context, q pgQuerier, source string) (Cursor, error) {
	c := Cursor{Source: source}
	var ms int64
	switch err := q.QueryRow(ctx, `SELECT line, seq, updated_at FROM cursors WHERE source = $1`, source).Scan(&c.Line, &c.Seq, &ms); {
	case errors.Is(err, pgx.ErrNoRows):
		return c, nil
	case err != nil:
		return c, fmt.Errorf("read the cursor of %s: %w", source, err)
	}
	c.UpdatedAt = time.UnixMilli(ms).UTC()
	return c, nil
}

func (s *PostgresStore) Cursor(ctx context.Context, source string) (Cursor, error) {
	return pgCursor(ctx, s.pool, source)
}

func (s *PostgresStore) Rejections(ctx context.Context, source string, after int64, limit int) ([]Rejection, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, source, line, did, cid, raw, reason, created_at FROM rejected
		WHERE id > $1 AND ($2 = '' OR source = $2) ORDER BY id LIMIT $3`, after, source, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanRejections(rows)
}

func (s *PostgresStore) readView(ctx context.Context, tx pgx.Tx, dids []string) (AppendView, error) {
	view := AppendView{Records: make(map[string]*DIDRecord, len(dids))}
	uniq := make([]string, 0, len(dids))
	seen := make(map[string]bool, len(dids))
	for _, d := range dids {
		if !seen[d] {
			seen[d] = true
			uniq = append(uniq, d)
		}
	}
	rows, err := tx.Query(ctx, appendReadSQL, uniq)
	if err != nil {
		return view, fmt.Errorf("read last seq and states: %w", err)
	}
	defer rows.Close()
	var lastMs int64
	for rows.Next() {
		var (
			did              *string
			headSeq          *int64
			state, doc, data []byte
		)
		if err := rows.Scan(&view.LastSeq, &lastMs, &did, &headSeq, &state, &doc, &data); err != nil {
			return view, fmt.Errorf("read last seq and states: %w", err)
		}
		if did == nil {
			continue
		}
		st, seqs, err := decodeState(*did, state)
		if err != nil {
			return view, fmt.Errorf("state of %s: %w", *did, err)
		}
		view.Records[*did] = &DIDRecord{DID: *did, HeadSeq: *headSeq, State: st, Seqs: seqs, Doc: doc, Data: data}
	}
	if err := rows.Err(); err != nil {
		return view, fmt.Errorf("read last seq and states: %w", err)
	}
	if view.LastSeq > 0 {
		view.LastCreatedAt = time.UnixMilli(lastMs).UTC()
	}
	return view, nil
}

// insertWrites writes the ops, nullifications and records of a batch, and
// for an ingest its rejections and cursor, with one statement per table,
// sent together in one round trip.
func insertWrites(ctx context.Context, tx pgx.Tx, planned []plannedWrite, ingest bool, ib *IngestBatch) error {
	var (
		seqs, createdAt       []int64
		opDIDs, cids          []string
		ops                   [][]byte
		types, signers        []int16
		nullSeqs, nullBySeqs  []int64
		recDIDs               []string
		recHeads              []int64
		recStates, docs, data [][]byte
	)
	for _, w := range planned {
		e := &w.Entry
		if w.op {
			if w.Signer < 0 || w.Signer > 1<<15-1 {
				return fmt.Errorf("insert op %d: signer index %d out of range", e.Seq, w.Signer)
			}
			seqs = append(seqs, e.Seq)
			opDIDs = append(opDIDs, e.DID)
			cids = append(cids, e.CID)
			createdAt = append(createdAt, e.CreatedAt.UnixMilli())
			ops = append(ops, e.Op)
			types = append(types, int16(w.Type))
			signers = append(signers, int16(w.Signer))
			for _, n := range w.Nullifies {
				nullSeqs = append(nullSeqs, n)
				nullBySeqs = append(nullBySeqs, e.Seq)
			}
		}
		if w.record {
			r := &w.Record
			recDIDs = append(recDIDs, r.DID)
			recHeads = append(recHeads, r.HeadSeq)
			recStates = append(recStates, encodeState(r.State, r.Seqs))
			docs = append(docs, r.Doc)
			data = append(data, r.Data)
		}
	}
	b := &pgx.Batch{}
	var what []string
	queue := func(name, sql string, args ...any) {
		b.Queue(sql, args...)
		what = append(what, name)
	}
	if len(seqs) > 0 {
		queue("insert ops", `INSERT INTO operations (seq, did, cid, created_at, op, type, signer)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bytea[], $6::smallint[], $7::smallint[])`,
			seqs, opDIDs, cids, createdAt, ops, types, signers)
	}
	if len(nullSeqs) > 0 {
		queue("insert nullifications", `INSERT INTO nullified (seq, by_seq) SELECT * FROM unnest($1::bigint[], $2::bigint[])`, nullSeqs, nullBySeqs)
	}
	if len(recDIDs) > 0 {
		queue("write DID states", `INSERT INTO dids (did, head_seq, state, doc, data)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::bytea[], $5::bytea[])
		ON CONFLICT (did) DO UPDATE SET head_seq = excluded.head_seq, state = excluded.state, doc = excluded.doc, data = excluded.data`,
			recDIDs, recHeads, recStates, docs, data)
	}
	if ingest {
		if n := len(ib.Rejections); n > 0 {
			var (
				sources, rdids, rcids, reasons []string
				lines, at                      []int64
				raws                           [][]byte
			)
			for _, r := range ib.Rejections {
				sources = append(sources, r.Source)
				lines = append(lines, r.Line)
				rdids = append(rdids, r.DID)
				rcids = append(rcids, r.CID)
				raws = append(raws, nonNil(r.Raw))
				reasons = append(reasons, r.Reason)
				at = append(at, r.CreatedAt.UnixMilli())
			}
			// WITH ORDINALITY keeps the IDs in the batch's line order.
			queue("insert rejections", `INSERT INTO rejected (source, line, did, cid, raw, reason, created_at)
		SELECT s, l, d, c, r, re, t FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::bigint[])
			WITH ORDINALITY AS u(s, l, d, c, r, re, t, n) ORDER BY n`,
				sources, lines, rdids, rcids, raws, reasons, at)
		}
		c := &ib.Cursor
		queue("move the cursor", `INSERT INTO cursors (source, line, seq, updated_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (source) DO UPDATE SET line = excluded.line, seq = excluded.seq, updated_at = excluded.updated_at`,
			c.Source, c.Line, c.Seq, c.UpdatedAt.UnixMilli())
	}
	if len(what) == 0 {
		return nil
	}
	br := tx.SendBatch(ctx, b)
	for _, w := range what {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return fmt.Errorf("%s: %w", w, err)
		}
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("write batch: %w", err)
	}
	return nil
}

func (s *PostgresStore) Record(ctx context.Context, did string) (*DIDRecord, error) {
	return scanRecord(did, s.pool.QueryRow(ctx, `SELECT head_seq, state, doc, data FROM dids WHERE did = $1`, did))
}

func (s *PostgresStore) Ops(ctx context.Context, did string) ([]Entry, error) {
	rows, err := s.pool.Query(ctx, `SELECT o.seq, o.did, o.cid, o.created_at, o.op, n.seq IS NOT NULL
		FROM operations o LEFT JOIN nullified n ON n.seq = o.seq WHERE o.did = $1 ORDER BY o.seq`, did)
	if err != nil {
		return nil, err
	}
	return scanPgEntries(rows, true)
}

func (s *PostgresStore) Op(ctx context.Context, seq int64) (Entry, error) {
	rows, err := s.pool.Query(ctx, `SELECT seq, did, cid, created_at, op FROM operations WHERE seq = $1`, seq)
	if err != nil {
		return Entry{}, err
	}
	es, err := scanPgEntries(rows, false)
	if err != nil {
		return Entry{}, err
	}
	if len(es) == 0 {
		return Entry{}, ErrNotFound
	}
	return es[0], nil
}

func (s *PostgresStore) Export(ctx context.Context, after int64, limit int) ([]Entry, error) {
	rows, err := s.pool.Query(ctx, `SELECT seq, did, cid, created_at, op FROM operations WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
	if err != nil {
		return nil, err
	}
	return scanPgEntries(rows, false)
}

func (s *PostgresStore) ExportByTime(ctx context.Context, after time.Time, limit int) ([]Entry, error) {
	rows, err := s.pool.Query(ctx, `SELECT o.seq, o.did, o.cid, o.created_at, o.op, n.seq IS NOT NULL
		FROM operations o LEFT JOIN nullified n ON n.seq = o.seq
		WHERE o.created_at > $1 ORDER BY o.created_at, o.cid COLLATE "C" LIMIT $2`, after.UnixMilli(), limit)
	if err != nil {
		return nil, err
	}
	return scanPgEntries(rows, true)
}

func scanPgEntries(rows pgx.Rows, withNullified bool) ([]Entry, error) {
	defer rows.Close()
	return scanEntries(rows, withNullified)
}
