package plc

import (
	"bytes"
	"errors"
	"fmt"
)

// ExportLines returns the non-blank lines of an export body (a page of
// /export, or the event lines of a stream), in order.
func ExportLines(body []byte) [][]byte {
	var out [][]byte
	for l := range bytes.SplitSeq(body, []byte{'\n'}) {
		if len(bytes.TrimSpace(l)) > 0 {
			out = append(out, l)
		}
	}
	return out
}

// ErrPageEnd: the last line of a seq-mode export page is not a seq-mode
// line (a body cut off, or an export without seq mode), so where the next
// page starts is not known.
var ErrPageEnd = errors.New("the last line is not a seq-mode export line")

// SeqPage is a page of a seq-mode export (GET /export?after=…).
type SeqPage struct {
	Lines [][]byte
	// Seqs are the lines' seqs, as ReadLineHead reads them (0: none, or
	// a line that cannot be read); Last is the last line's (0: an empty
	// page).
	Seqs []int64
	Last int64
}

// ParseSeqPage splits a seq-mode export page into its lines and reads
// their seqs by ReadLineHead, the rules the ingest of the lines applies.
// The last line's seq is where the next page starts: it must be readable
// (else ErrPageEnd) and above every other seq of the page.
func ParseSeqPage(body []byte) (SeqPage, error) {
	p := SeqPage{Lines: ExportLines(body)}
	n := len(p.Lines)
	if n == 0 {
		return p, nil
	}
	p.Seqs = make([]int64, n)
	for i, l := range p.Lines {
		if h, err := ReadLineHead(l); err == nil {
			p.Seqs[i] = h.Seq
		} else if i == n-1 {
			return SeqPage{}, fmt.Errorf("%w (cut off?): %v", ErrPageEnd, err)
		}
	}
	p.Last = p.Seqs[n-1]
	if p.Last == 0 {
		return SeqPage{}, fmt.Errorf("%w: it has no seq", ErrPageEnd)
	}
	for _, s := range p.Seqs[:n-1] {
		if s >= p.Last {
			return SeqPage{}, fmt.Errorf("the last line's seq %d is not above the page's seq %d", p.Last, s)
		}
	}
	return p, nil
}
