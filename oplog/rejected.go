package oplog

import (
	"fmt"
)

// Lookups of stored rejections by their source line and content, for the
// mirror: whether a divergence is recorded already (so that it is recorded
// once, across restarts), and what the line the cursor ends at was when it
// was not applied. Both use the (source, line) index.

const (
	hasRejectionSQL = `SELECT EXISTS (SELECT 1 FROM rejected
		WHERE source = %[1]s AND line = %[2]s AND did = %[3]s AND cid = %[4]s AND reason = %[5]s AND raw = %[6]s)`
	rejectionsAtSQL = `SELECT id, source, line, did, cid, raw, kind, reason, created_at FROM rejected
		WHERE source = %[1]s AND line = %[2]s ORDER BY id`
)

var (
	sqliteHasRejection   = fmt.Sprintf(hasRejectionSQL, "?", "?", "?", "?", "?", "?")
	sqliteRejectionsAt   = fmt.Sprintf(rejectionsAtSQL, "?", "?")
	postgresHasRejection = fmt.Sprintf(hasRejectionSQL, "$1", "$2", "$3", "$4", "$5", "$6")
	postgresRejectionsAt = fmt.Sprintf(rejectionsAtSQL, "$1", "$2")
)
