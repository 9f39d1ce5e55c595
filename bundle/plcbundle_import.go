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

// foreignLines is the part of a ForeignSource both readers share: the
// lines Skip passes over, and the error that ended the source.
type foreignLines struct {
	skip int64 // the lines passed over
	err  error // the error that ended the source, returned again
}

// Skip passes over the first n lines (those an earlier import did), before
// the first Next: the first line handed over is numbered 1.
func (s *foreignLines) Skip(n int64) { s.skip = max(n, 0) }

// Skipped returns the lines Skip passed over.
func (s *foreignLines) Skipped() int64 { return s.skip }

// Ready: the lines are at hand.
func (s *foreignLines) Ready() bool { return true }

// sticky returns next's line; once next has returned an error (io.EOF
// included) other than ctx's end, it returns that error again without
// calling next.
func (s *foreignLines) sticky(ctx context.Context, next func(context.Context) (oplog.Line, error)) (oplog.Line, error) {
	if s.err != nil {
		return oplog.Line{}, s.err
	}
	l, err := next(ctx)
	if err != nil && ctx.Err() == nil {
		s.err = err
	}
	return l, err
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
