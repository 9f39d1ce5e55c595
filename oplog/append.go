package oplog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// rowScanner is a one-row read of either backend (*sql.Row, pgx.Row). A
// read that finds no row fails with sql.ErrNoRows on both: pgx.ErrNoRows
// is sql.ErrNoRows too.
type rowScanner interface {
	Scan(dest ...any) error
}

// appendTx is one backend's append transaction, the append lock taken:
// the steps of Append that differ between the backends.
type appendTx interface {
	treeTx
	db
	// readRecords reads the records of dids that exist into recs.
	readRecords(ctx context.Context, dids []string, recs map[string]*DIDRecord) error
	// write inserts a batch's ops and nullifications with the tree chunk
	// that covers them (ext, nil without ops), and for an ingest its
	// rejections and its cursor.
	write(ctx context.Context, b *Batch, ingest bool, ext *treeExtension) error
	commit(ctx context.Context) error
	rollback(ctx context.Context) error
}

// runAppend is Store.Append in tx, the same on both backends: read the
// view, decide, check, extend the tree, insert, commit, and settle the
// tree cache. It rolls tx back unless it commits.
func runAppend(ctx context.Context, tx appendTx, tree *treeCache, source string, dids []string, decide DecideFunc) (err error) {
	defer func() {
		if err != nil {
			tx.rollback(ctx)
		}
	}()
	view := View{Records: make(map[string]*DIDRecord, len(dids))}
	var lastMs int64
	switch err := tx.queryRow(ctx, `SELECT seq, created_at FROM operations ORDER BY seq DESC LIMIT 1`).Scan(&view.LastSeq, &lastMs); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return fmt.Errorf("read last seq: %w", err)
	default:
		view.LastCreatedAt = time.UnixMilli(lastMs).UTC()
	}
	view.Load = func(more []string) error { return tx.readRecords(ctx, more, view.Records) }
	if err := view.Load(dids); err != nil {
		return err
	}
	if source != "" {
		if view.Cursor, err = readCursor(ctx, tx, source); err != nil {
			return err
		}
	}
	batch, err := decide(view)
	if err != nil {
		return err
	}
	changed, err := checkAppend(source, view, &batch)
	if err != nil {
		return err
	}
	if !changed {
		return tx.rollback(ctx)
	}
	var ext *treeExtension
	if len(batch.Writes) > 0 {
		if ext, err = tree.extend(ctx, tx, view.LastSeq, writeEntries(batch.Writes)); err != nil {
			return err
		}
	}
	if err := tx.write(ctx, &batch, source != "", ext); err != nil {
		return err
	}
	if err := tx.commit(ctx); err != nil {
		tree.failed()
		return fmt.Errorf("commit: %w", err)
	}
	tree.committed(ext)
	return nil
}

// extendTreeIn is Store.ExtendTree in tx, the append lock taken, the same
// on both backends. It rolls tx back unless it commits.
func extendTreeIn(ctx context.Context, tx appendTx, cache *treeCache, limit int) (int, error) {
	defer tx.rollback(ctx) // after a commit: nothing to roll back
	var last int64
	if err := tx.queryRow(ctx, `SELECT COALESCE(MAX(seq), 0) FROM operations`).Scan(&last); err != nil {
		return 0, err
	}
	ext, err := extendTree(ctx, tx, cache, last, limit, func(after int64, limit int) ([]Entry, error) {
		return entries(ctx, tx, false, exportSQL, after, limit)
	})
	if err != nil || ext == nil {
		return 0, err
	}
	if err := tx.commit(ctx); err != nil {
		return 0, err
	}
	return int(ext.chunk.last - ext.chunk.first + 1), nil
}

// extendHandlesIn is HandleIndex.ExtendHandles in tx, the same on both
// backends but for the read of the backfill's position (doneSQL) and the
// insert of the handles. It rolls tx back unless it commits.
func extendHandlesIn(ctx context.Context, tx appendTx, doneSQL string, limit int, insert func([]*Entry) error) (int, error) {
	defer tx.rollback(ctx) // after a commit: nothing to roll back
	var done int64
	switch err := tx.queryRow(ctx, doneSQL).Scan(&done); {
	case errors.Is(err, sql.ErrNoRows):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("read the handle index's backfill: %w", err)
	}
	es, err := entries(ctx, tx, false, exportSQL, done, limit)
	if err != nil || len(es) == 0 {
		return 0, err
	}
	last, err := backfillEnd(es, done)
	if err != nil {
		return 0, err
	}
	if err := insert(entryPtrs(es)); err != nil {
		return 0, err
	}
	if _, err := tx.exec(ctx, `UPDATE handles_backfill SET done = ? WHERE id = 1`, last); err != nil {
		return 0, err
	}
	if err := tx.commit(ctx); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return len(es), nil
}

// readCursor reads the cursor of source through d: an empty one when
// there is none.
func readCursor(ctx context.Context, d db, source string) (Cursor, error) {
	c := Cursor{Source: source}
	var ms int64
	switch err := d.queryRow(ctx, `SELECT line, seq, updated_at FROM cursors WHERE source = ?`, source).Scan(&c.Line, &c.Seq, &ms); {
	case errors.Is(err, sql.ErrNoRows):
		return c, nil
	case err != nil:
		return c, fmt.Errorf("read the cursor of %s: %w", source, err)
	}
	c.UpdatedAt = time.UnixMilli(ms).UTC()
	return c, nil
}
