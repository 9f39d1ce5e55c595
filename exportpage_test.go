package plc

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestSeqPageEndsAtItsHighestReadableSeq(t *testing.T) {
	line := func(seq string) string {
		return `{"type":"sequenced_op","did":"did:plc:x","operation":{},"cid":"c","createdAt":"2024-01-01T00:00:00.000Z","seq":` + seq + `}`
	}
	for _, c := range []struct {
		name, body string
		seqs       []int64
		endErr     bool // ErrPageEnd
		err        string
	}{
		{name: "Empty", body: "\n \n"},
		{name: "Page", body: line("3") + "\n\n" + line("5") + "\n", seqs: []int64{3, 5}},
		{name: "UnreadableLineInside", body: "{x\n" + line("5"), seqs: []int64{0, 5}},
		{name: "CutOff", body: line("3") + "\n" + line("5")[:20], endErr: true},
		{name: "LegacyLast", body: `{"did":"did:plc:x","operation":{},"cid":"c","nullified":false,"createdAt":"2024-01-01T00:00:00.000Z"}`, endErr: true},
		{name: "RepeatedSeq", body: line("5") + "\n" + line("5"), err: "is not above the page's seq 5"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := ParseSeqPage([]byte(c.body))
			switch {
			case c.endErr || c.err != "":
				if err == nil || errors.Is(err, ErrPageEnd) != c.endErr || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("ParseSeqPage = %+v, %v", p, err)
				}
			case err != nil || !slices.Equal(p.Seqs, c.seqs) || len(p.Lines) != len(c.seqs) ||
				(len(c.seqs) > 0 && p.Last != c.seqs[len(c.seqs)-1]):
				t.Fatalf("ParseSeqPage = %+v, %v", p, err)
			}
		})
	}
}
