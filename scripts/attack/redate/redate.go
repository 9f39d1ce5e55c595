// Package redate moves a seq-mode export into the recent past, so that a
// stream from cursor 0 over it is inside /export/stream's backfill window
// (7 days) and is served rather than closed with OutdatedCursor.
//
// createdAt is not part of the signed op, so the ops stay valid; the
// order of the lines is kept and every line is dated one millisecond after
// the one before, so each op stays strictly after its prev, and a
// recovery only comes closer to what it nullifies.
package redate

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"time"

	"github.com/plcdir/plc/validate"
)

// Lines copies the lines of in to out with the createdAt of line i (from
// 0) rewritten to start + i ms.
func Lines(in io.Reader, out io.Writer, start time.Time) error {
	key := []byte(`"createdAt":"`)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	w := bufio.NewWriter(out)
	for n := 0; sc.Scan(); n++ {
		line := sc.Bytes()
		i := bytes.Index(line, key)
		if i < 0 {
			return fmt.Errorf("line %d: no createdAt", n+1)
		}
		v := i + len(key)
		j := bytes.IndexByte(line[v:], '"')
		if j < 0 {
			return fmt.Errorf("line %d: unterminated createdAt", n+1)
		}
		if n > 0 {
			w.WriteByte('\n')
		}
		w.Write(line[:v])
		w.Write(validate.AppendTimestamp(nil, start.Add(time.Duration(n)*time.Millisecond)))
		w.Write(line[v+j:])
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return w.Flush()
}
