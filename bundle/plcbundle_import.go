package bundle

import (
	"context"

	"github.com/plcdir/plc/oplog"
)

// ForeignSource is a foreign bulk input read as an oplog.LineSource: a
// PlcbundleReader or a WeeklyReader.
type ForeignSource interface {
	oplog.LineSource
	// Skip passes over the first n lines, before the first Next.
	Skip(n int64)
	// Skipped returns the n of Skip.
	Skipped() int64
}

// ReplayForeign replays src into l through oplog.Replay under the source
// name opts.Source (which must be set): src first passes over the lines
// that source's cursor says an earlier run committed, and the lines after
// are numbered after the cursor, so an interrupted import (or one of a
// repository that has grown since) goes on where the last one stopped and
// applies nothing twice. It returns the lines passed over with Replay's
// totals.
func ReplayForeign(ctx context.Context, l *oplog.Log, src ForeignSource, opts oplog.ImportOptions) (done int64, st oplog.ImportStats, err error) {
	cur, err := l.Store().Cursor(ctx, opts.Source)
	if err != nil {
		return 0, st, err
	}
	src.Skip(cur.Line)
	st, err = oplog.Replay(ctx, l, src, opts)
	return cur.Line, st, err
}
