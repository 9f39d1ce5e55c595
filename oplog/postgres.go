package oplog

import (
	"time"

	"context"
	"errors"
	"fmt"
	"net/url"

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
	reads
	pool *pgxpool.Pool
	tree *treeCache

	changes     pgChanges     // see ListenForChanges
	listenRetry time.Duration // the first wait before listening again
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
	// plc's reads are index lookups of a few rows. The planner's estimate
	// for a DID read of an array parameter (an append's batch) is
	// thousands of rows, and its prepared plan, kept for the connection,
	// then starts parallel workers for each read: starting them costs the
	// server far more than the read. Parallel query is off for plc's
	// connections unless the connection string sets it.
	if _, ok := cfg.ConnConfig.RuntimeParams[noParallel]; !ok {
		cfg.ConnConfig.RuntimeParams[noParallel] = "0"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres %s: %w", RedactURL(url), err)
	}
	if err := checkDurable(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres %s: %w", RedactURL(url), err)
	}
	return &PostgresStore{reads: reads{pgDB{pool}}, pool: pool, tree: newTreeCache(), listenRetry: time.Second}, nil
}

// noParallel is the setting that turns parallel query off (at 0).
const noParallel = "max_parallel_workers_per_gather"

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

// pgRecordsSQL selects the non-nullified ops of the DIDs in $1, in (did,
// seq) order: the rows their records are rebuilt from.
const pgRecordsSQL = `SELECT o.did, o.seq, o.created_at, o.op, o.signer FROM operations o
	WHERE o.did = ANY($1) AND ` + notNullified + `
	ORDER BY o.did, o.seq`

// pgRecordSQL is recordSQL (see Record) as PostgreSQL runs it.
var pgRecordSQL = numbered(recordSQL)

func (s *PostgresStore) Append(ctx context.Context, source string, dids []string, decide DecideFunc) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{}) // READ COMMITTED: each statement sees what committed before it
	if err != nil {
		return fmt.Errorf("begin append: %w", err)
	}
	// The lock comes first, in its own statement: the reads of runAppend
	// then take their snapshots after every earlier append has committed.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, appendLockKey); err != nil {
		tx.Rollback(context.WithoutCancel(ctx))
		return fmt.Errorf("take the append lock: %w", err)
	}
	err = runAppend(ctx, pgAppend{dbTree{pgDB{tx}}, tx}, s.tree, source, dids, decide)
	if err == nil {
		// This process's readers need not wait for the notice.
		s.changes.bump()
	}
	return err
}

// pgAppend is a PostgreSQL append transaction (see runAppend).
type pgAppend struct {
	dbTree
	tx pgx.Tx
}

func (t pgAppend) write(ctx context.Context, b *Batch, ingest bool, ext *treeExtension) error {
	return insertWrites(ctx, t.tx, b.Writes, ingest, b, ext)
}

func (t pgAppend) commit(ctx context.Context) error { return t.tx.Commit(ctx) }
func (t pgAppend) rollback(ctx context.Context) error {
	return t.tx.Rollback(context.WithoutCancel(ctx))
}

// readRecords reads the records of dids that exist into recs.
func (t pgAppend) readRecords(ctx context.Context, dids []string, recs map[string]*DIDRecord) error {
	keys, err := didKeys(dids)
	if err != nil || len(keys) == 0 {
		return err
	}
	rows, err := t.tx.Query(ctx, pgRecordsSQL, keys)
	if err != nil {
		return fmt.Errorf("read DID states: %w", err)
	}
	defer rows.Close()
	if err := scanRecords(rows, recs); err != nil {
		return fmt.Errorf("read DID states: %w", err)
	}
	return nil
}

// insertWrites writes the ops, nullifications and records of a batch, and
// for an ingest its rejections and cursor, with one statement per table,
// sent together in one round trip with the notice of the new ops.
func insertWrites(ctx context.Context, tx pgx.Tx, writes []Write, ingest bool, ib *Batch, ext *treeExtension) error {
	var (
		seqs, createdAt      []int64
		opDIDs, ops          [][]byte
		signers              []int16
		nullSeqs, nullBySeqs []int64
	)
	for i := range writes {
		w := &writes[i]
		e := &w.Entry
		if w.Signer < 0 || w.Signer > 1<<15-1 {
			return fmt.Errorf("insert op %d: signer index %d out of range", e.Seq, w.Signer)
		}
		did, err := DIDKey(e.DID)
		if err != nil {
			return err
		}
		op, err := storedOp(e)
		if err != nil {
			return err
		}
		seqs = append(seqs, e.Seq)
		opDIDs = append(opDIDs, did)
		createdAt = append(createdAt, e.CreatedAt.UnixMilli())
		ops = append(ops, op)
		signers = append(signers, int16(w.Signer))
		for _, n := range w.Nullifies {
			nullSeqs = append(nullSeqs, n)
			nullBySeqs = append(nullBySeqs, e.Seq)
		}
	}
	b := &pgx.Batch{}
	var what []string
	queue := func(name, sql string, args ...any) {
		b.Queue(sql, args...)
		what = append(what, name)
	}
	if len(seqs) > 0 {
		queue("insert ops", `INSERT INTO operations (seq, did, created_at, op, signer)
		SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bigint[], $4::bytea[], $5::smallint[])`,
			seqs, opDIDs, createdAt, ops, signers)
	}
	if len(seqs) > 0 {
		// Delivered when the transaction commits (see ListenForChanges).
		queue("notify", notifySQL)
	}
	if ext != nil {
		queue("insert tree hashes", `INSERT INTO tree_hashes (first_seq, last_seq, hashes) VALUES ($1, $2, $3)`, ext.chunk.first, ext.chunk.last, ext.chunk.hashes)
	}
	if len(nullSeqs) > 0 {
		queue("insert nullifications", `INSERT INTO nullified (seq, by_seq) SELECT * FROM unnest($1::bigint[], $2::bigint[])`, nullSeqs, nullBySeqs)
	}
	if ingest {
		if n := len(ib.Rejections); n > 0 {
			var (
				sources, rdids, rcids, kinds, reasons []string
				lines, at                             []int64
				raws                                  [][]byte
			)
			for _, r := range ib.Rejections {
				sources = append(sources, r.Source)
				lines = append(lines, r.Line)
				rdids = append(rdids, r.DID)
				rcids = append(rcids, r.CID)
				raws = append(raws, nonNil(r.Raw))
				kinds = append(kinds, string(r.Kind))
				reasons = append(reasons, r.Reason)
				at = append(at, r.CreatedAt.UnixMilli())
			}
			// WITH ORDINALITY keeps the IDs in the batch's line order.
			queue("insert rejections", `INSERT INTO rejected (source, line, did, cid, raw, kind, reason, created_at)
		SELECT s, l, d, c, r, k, re, t FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::text[], $8::bigint[])
			WITH ORDINALITY AS u(s, l, d, c, r, k, re, t, n) ORDER BY n`,
				sources, lines, rdids, rcids, raws, kinds, reasons, at)
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

// The handle index (HandleIndex, see handles.go).

// pgHandlesSQL inserts the pairs of two parallel arrays.
const pgHandlesSQL = `INSERT INTO handles (handle, did) SELECT * FROM unnest($1::text[], $2::bytea[]) ON CONFLICT DO NOTHING`

// pgHandleArgs returns the arguments of pgHandlesSQL for entries (ok false
// when they list no handle).
func pgHandleArgs(entries []*Entry) (args []any, ok bool, err error) {
	pairs, err := handlePairs(entries)
	if err != nil || len(pairs) == 0 {
		return nil, false, err
	}
	handles := make([]string, len(pairs))
	dids := make([][]byte, len(pairs))
	for i, p := range pairs {
		handles[i], dids[i] = p.handle, p.did
	}
	return []any{handles, dids}, true, nil
}

func (s *PostgresStore) HandlesBehind(ctx context.Context) (int64, error) {
	return s.scalar(ctx, `SELECT COALESCE(MAX(GREATEST((SELECT COALESCE(MAX(seq), 0) FROM operations) - done, 0)), 0) FROM handles_backfill`)
}

func (s *PostgresStore) ExtendHandles(ctx context.Context, limit int) (int, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	// The row lock makes concurrent catch-ups take turns. Seqs become
	// visible in order (they are given and committed under the append
	// lock), so the ops after done have no gap.
	t := pgAppend{dbTree{pgDB{tx}}, tx}
	return extendHandlesIn(ctx, t, `SELECT done FROM handles_backfill WHERE id = 1 FOR UPDATE`, limit, func(es []*Entry) error {
		args, ok, err := pgHandleArgs(es)
		if err != nil || !ok {
			return err
		}
		if _, err := t.tx.Exec(ctx, pgHandlesSQL, args...); err != nil {
			return fmt.Errorf("index handles: %w", err)
		}
		return nil
	})
}

// The counts (Stats, see stats.go).

func (s *PostgresStore) RejectionSize(ctx context.Context, source string) (int64, int64, error) {
	var n, b int64
	err := s.pool.QueryRow(ctx, postgresRejectionSizeSQL, source).Scan(&n, &b)
	return n, b, err
}

// The transparency log's tree and checkpoint (see tree.go).

func (s *PostgresStore) ExtendTree(ctx context.Context, limit int) (int, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, appendLockKey); err != nil {
		tx.Rollback(context.WithoutCancel(ctx))
		return 0, fmt.Errorf("take the append lock: %w", err)
	}
	return extendTreeIn(ctx, pgAppend{dbTree{pgDB{tx}}, tx}, s.tree, limit)
}

func (s *PostgresStore) SwapCheckpoint(ctx context.Context, old *Checkpoint, next Checkpoint) error {
	return swapCheckpoint(ctx, s.reads.h, `INSERT INTO checkpoint (id, size, root, note, signed_at) VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`, old, next)
}
