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

// checkIngest enforces, inside Ingest, what decide may ask of a source's
// cursor and rejections, and reports whether the batch changes anything.
func checkIngest(source string, view Cursor, b *IngestBatch) (changed bool, err error) {
	if b.Cursor.Source != source {
		return false, fmt.Errorf("oplog: ingest of %q returned the cursor of %q", source, b.Cursor.Source)
	}
	if b.Cursor.Line < view.Line || b.Cursor.Seq < view.Seq {
		return false, fmt.Errorf("oplog: cursor of %q would move back from line %d seq %d to line %d seq %d",
			source, view.Line, view.Seq, b.Cursor.Line, b.Cursor.Seq)
	}
	for i, r := range b.Rejections {
		if r.Source != source {
			return false, fmt.Errorf("oplog: rejection %d of an ingest of %q names source %q", i, source, r.Source)
		}
	}
	return len(b.Writes) > 0 || len(b.Rejections) > 0 || b.Cursor.Line != view.Line || b.Cursor.Seq != view.Seq, nil
}

// appendOnly adapts a DecideFunc to the ingest path without a source.
func appendOnly(decide DecideFunc) IngestFunc {
	return func(v IngestView) (IngestBatch, error) {
		ws, err := decide(v.AppendView)
		return IngestBatch{Writes: ws}, err
	}
}

// decideBatch runs decide on the view and checks what it returns: seq
// density, and for an ingest (source set) its cursor and rejections. It
// reports whether the batch writes anything.
func decideBatch(view IngestView, source string, decide IngestFunc) (IngestBatch, bool, error) {
	batch, err := decide(view)
	if err != nil {
		return batch, false, err
	}
	changed := len(batch.Writes) > 0
	if source != "" {
		if changed, err = checkIngest(source, view.Cursor, &batch); err != nil {
			return batch, false, err
		}
	}
	if changed {
		if err := checkWrites(view.LastSeq, batch.Writes); err != nil {
			return batch, false, err
		}
	}
	return batch, changed, nil
}
