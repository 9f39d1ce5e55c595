package bundle

import (
	"context"
	"fmt"
	"io"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// ExportPage is how many ops ExportLines reads from the store at once.
const ExportPage = 1000

// ExportLines writes the ops of store with seq > after, up to the log's
// end as it is when each page is read, as seq-mode export lines
// (byte-identical to GET /export?after=…), each followed by a newline.
// It holds one page at a time. It returns how many lines it wrote and the
// seq of the last one (after when none): an interrupted export resumes
// with after set to that seq.
func ExportLines(ctx context.Context, store oplog.Store, after int64, w io.Writer) (n, last int64, err error) {
	last = after
	var buf []byte
	for {
		es, err := store.Export(ctx, last, ExportPage)
		if err != nil {
			return n, last, fmt.Errorf("reading the log after seq %d: %w", last, err)
		}
		if len(es) == 0 {
			return n, last, nil
		}
		buf = buf[:0]
		for i := range es {
			if buf, err = appendLine(buf, &es[i]); err != nil {
				return n, last, err
			}
		}
		if _, err := w.Write(buf); err != nil {
			return n, last, err
		}
		n += int64(len(es))
		last = es[len(es)-1].Seq
	}
}

// appendLine appends e's seq-mode export line and a newline.
func appendLine(dst []byte, e *oplog.Entry) ([]byte, error) {
	op, err := e.ParsedOp()
	if err != nil {
		return dst, err
	}
	return append(validate.AppendSequencedJSON(dst, e.DID, op, e.CreatedAt, e.Seq), '\n'), nil
}
