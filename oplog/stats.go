package oplog

import (
	"context"
	"time"
)

// Stats are the counts a directory's status page shows. Both stores
// implement it with queries that an index answers (operations_created_at,
// rejected_source_line, both in the first two migrations): no count scans
// the log.
type Stats interface {
	// CountOpsAfter returns the number of ops whose createdAt is after t
	// (as ExportByTime compares: by whole milliseconds, the stored
	// precision).
	CountOpsAfter(ctx context.Context, t time.Time) (int64, error)
	// CountRejections returns the number of rejections of source (see
	// Rejections).
	CountRejections(ctx context.Context, source string) (int64, error)
	// RejectionSize returns the number of rejections of source and their
	// bytes, as RejectionBytes counts them (read once, at a mirror's
	// start: it reads every rejection of source).
	RejectionSize(ctx context.Context, source string) (rows, bytes int64, err error)
}

var (
	_ Stats = (*SQLiteStore)(nil)
	_ Stats = (*PostgresStore)(nil)
)

// The queries (%s: the backend's placeholder), shared with the test that
// checks their plans.
const (
	countOpsAfterSQL   = `SELECT COUNT(*) FROM operations WHERE created_at > %s`
	countRejectionsSQL = `SELECT COUNT(*) FROM rejected WHERE source = %s`
	// The bytes of a rejection, as RejectionBytes counts them.
	sqliteRejectionSizeSQL   = `SELECT COUNT(*), COALESCE(SUM(length(raw) + length(CAST(reason AS BLOB)) + length(CAST(did AS BLOB)) + length(CAST(cid AS BLOB))), 0) FROM rejected WHERE source = ?`
	postgresRejectionSizeSQL = `SELECT COUNT(*), COALESCE(SUM(octet_length(raw) + octet_length(reason) + octet_length(did) + octet_length(cid)), 0)::bigint FROM rejected WHERE source = $1`
)
