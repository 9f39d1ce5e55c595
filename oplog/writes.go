package oplog

import "fmt"

// checkWrites enforces the density of seq inside Append, whatever decide
// returned: a bug there must fail the transaction, not leave a gap.
func checkWrites(last int64, writes []Write) error {
	for i, w := range writes {
		if want := last + 1 + int64(i); w.Entry.Seq != want {
			return fmt.Errorf("oplog: write %d has seq %d, want %d", i, w.Entry.Seq, want)
		}
		if w.Record != nil && w.Record.DID != w.Entry.DID {
			return fmt.Errorf("oplog: write %d: record of %s for an op of %s", i, w.Record.DID, w.Entry.DID)
		}
	}
	return nil
}

// checkAppend enforces, inside Append, what decide may ask of a source's
// cursor and rejections, and the density of seq, and reports whether the
// batch changes anything.
func checkAppend(source string, view View, b *Batch) (changed bool, err error) {
	if source == "" {
		if len(b.Rejections) > 0 || b.Cursor != (Cursor{}) {
			return false, fmt.Errorf("oplog: rejections or a cursor in an append without a source")
		}
	} else {
		if b.Cursor.Source != source {
			return false, fmt.Errorf("oplog: append of %q returned the cursor of %q", source, b.Cursor.Source)
		}
		c := view.Cursor
		if b.Cursor.Line < c.Line || b.Cursor.Seq < c.Seq {
			return false, fmt.Errorf("oplog: cursor of %q would move back from line %d seq %d to line %d seq %d",
				source, c.Line, c.Seq, b.Cursor.Line, b.Cursor.Seq)
		}
		for i, r := range b.Rejections {
			if r.Source != source {
				return false, fmt.Errorf("oplog: rejection %d of an append of %q names source %q", i, source, r.Source)
			}
			if r.Kind == "" {
				b.Rejections[i].Kind = KindInvalidOp
			}
		}
	}
	if err := checkWrites(view.LastSeq, b.Writes); err != nil {
		return false, err
	}
	return len(b.Writes) > 0 || len(b.Rejections) > 0 || b.Cursor.Line != view.Cursor.Line || b.Cursor.Seq != view.Cursor.Seq, nil
}
