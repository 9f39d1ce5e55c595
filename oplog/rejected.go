package oplog

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
