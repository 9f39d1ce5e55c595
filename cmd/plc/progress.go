package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/plcdir/plc/audit"
	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/oplog"
)

// progress reports a long run (an import, a backfill, a verification) on
// stderr: on a terminal a one-line bar redrawn at most four times a
// second, otherwise a log line every ten seconds.
type progress struct {
	w           io.Writer
	tty         bool
	now         func() time.Time
	start, last time.Time
	size        int64         // the input's size in bytes (0: unknown)
	read        *atomic.Int64 // bytes of the input read so far (nil: unknown)
	shown       bool          // a bar is on the terminal's line
	cmd         string        // the log lines' prefix
}

// show reports, at most once per interval, the share of the input read,
// then line(time since the start), then the ETA when it is known: as the
// bar on a terminal, else as a log line.
func (p *progress) show(line func(elapsed time.Duration) string) {
	t := p.now()
	interval := 10 * time.Second
	if p.tty {
		interval = 250 * time.Millisecond
	}
	if t.Sub(p.last) < interval {
		return
	}
	p.last = t
	elapsed := t.Sub(p.start)
	var b strings.Builder
	eta := ""
	if p.size > 0 && p.read != nil {
		frac := min(float64(p.read.Load())/float64(p.size), 1)
		if p.tty {
			const width = 20
			full := int(frac * width)
			b.WriteString("[" + strings.Repeat("#", full) + strings.Repeat(".", width-full) + "] ")
		}
		fmt.Fprintf(&b, "%.0f%%, ", frac*100)
		if frac > 0 && frac < 1 {
			eta = ", ETA " + time.Duration(float64(elapsed)*(1-frac)/frac).Round(time.Second).String()
		}
	}
	b.WriteString(line(elapsed) + eta)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", b.String())
		p.shown = true
		return
	}
	fmt.Fprintf(p.w, "%s: %s\n", p.cmd, b.String())
}

// batch reports an import's progress.
func (p *progress) batch(st oplog.ImportStats) {
	p.show(func(elapsed time.Duration) string {
		return fmt.Sprintf("%d lines, %d imported, %d rejected, %d skipped, %s ops/s",
			st.Lines, st.Imported, st.Rejected, st.Skipped, rate(st.Imported, elapsed))
	})
}

// verified reports a verification's progress.
func (p *progress) verified(st audit.ExportProgress) {
	p.show(func(elapsed time.Duration) string {
		return fmt.Sprintf("%d lines, %d ops verified, %d invalid, %s ops/s", st.Lines, st.Ops, st.Invalid, rate(st.Ops, elapsed))
	})
}

// rejected reports an import's rejected line.
func (p *progress) rejected(r oplog.Rejection) {
	p.clear()
	fmt.Fprintf(p.w, "rejected line %d %s %s: %s\n", r.Line, cli.Printable(r.DID), cli.Printable(r.CID), cli.Printable(r.Reason))
}

// clear takes the bar off the terminal's line.
func (p *progress) clear() {
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
		p.shown = false
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(n)/d.Seconds(), 'f', 0, 64)
}
