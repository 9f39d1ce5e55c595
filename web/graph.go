package web

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// The history graph: a vertical timeline, one row per op in log order.
// The current chain runs down lane 0; ops that a recovery nullified sit on
// a branch lane to the right (lane = how many recoveries undid them), so a
// fork reads as a branch leaving its fork point. Where a recovery
// happened, the branch carries a band for the 72-hour window it used.
// Everything is computed here as numbers and short strings; the template
// writes them into SVG elements and html/template escapes every string.

const (
	graphTop     = 28 // y of the first row's node
	graphRow     = 64 // distance between rows
	graphLeft    = 24 // x of lane 0
	graphLane    = 32 // distance between lanes
	graphNodeR   = 8
	graphTextGap = 20 // between the last lane and the text
	graphTextW   = 720
	labelMax     = 104 // characters of a text line (11 px monospace in graphTextW)
	gaugeW       = 144
)

// graph is the SVG's content.
type graph struct {
	Width, Height int
	Lanes         int
	Edges         []edge
	Windows       []window
	Nodes         []node
}

type edge struct {
	D     string // SVG path data
	Class string
}

// window is a recovery's 72-hour window, drawn as a band on the branch it
// cut off, from the fork point down to the recovery.
type window struct {
	X, Y, W, H int
	Title      string
}

type node struct {
	N         int
	Seq       int64
	Lane      int
	X, Y      int
	Class     string
	Tombstone bool
	Nullified bool
	Recovery  bool
	TextX     int
	// Lines are the text beside the node (one to three).
	Lines []textLine
	// Gauge, on a recovery, shows how much of the window it used:
	// GaugeFill of gaugeW.
	// R is a circle's radius; BoxX, BoxY, BoxW and Cross draw a
	// tombstone's square.
	R                int
	BoxX, BoxY, BoxW int
	Cross            string
	Gauge            bool
	GaugeX           int
	GaugeY           int
	GaugeW           int
	GaugeFill        int
	Title            string
}

type textLine struct {
	X, Y  int
	Class string
	Text  string
}

// layout draws ops (a contiguous run of a DID's history, in log order).
func layout(ops []opView) graph {
	var g graph
	if len(ops) == 0 {
		return g
	}
	first := ops[0].N
	row := func(n int) int { return n - first } // -1 and below: before the run
	maxLane := 0
	for i := range ops {
		maxLane = max(maxLane, ops[i].Depth)
	}
	g.Lanes = maxLane + 1
	laneX := func(l int) int { return graphLeft + l*graphLane }
	rowY := func(r int) int { return graphTop + r*graphRow }
	textX := laneX(maxLane) + graphNodeR + graphTextGap
	g.Width = textX + graphTextW
	g.Height = rowY(len(ops)-1) + graphRow - graphTop/2

	lane := make(map[int]int, len(ops)) // N → lane
	for i := range ops {
		lane[ops[i].N] = ops[i].Depth
	}
	for i := range ops {
		o := &ops[i]
		x, y := laneX(o.Depth), rowY(i)
		if o.Prev > 0 {
			class := "edge"
			if o.Nullified {
				class += " nullified"
			}
			pr := row(o.Prev)
			if pr < 0 {
				// The prev is older than the ops drawn: a stub from the top.
				g.Edges = append(g.Edges, edge{D: fmt.Sprintf("M%d %d L%d %d", x, 0, x, y), Class: class + " stub"})
			} else {
				px, py := laneX(lane[o.Prev]), rowY(pr)
				if px == x {
					g.Edges = append(g.Edges, edge{D: fmt.Sprintf("M%d %d L%d %d", px, py, x, y), Class: class})
				} else {
					// A branch: leave the fork point and bend into the
					// op's lane within one row.
					turn := min(py+graphRow, y)
					mid := (py + turn) / 2
					g.Edges = append(g.Edges, edge{
						D:     fmt.Sprintf("M%d %d C%d %d %d %d %d %d L%d %d", px, py, px, mid, x, mid, x, turn, x, y),
						Class: class + " branch",
					})
				}
			}
		}
		if r := o.Recovery; r != nil {
			fr := row(r.ForkAt)
			top := rowY(max(fr, 0))
			if fr < 0 {
				top = 0
			}
			bx := laneX(o.Depth+1) - graphLane/2 + 3
			g.Windows = append(g.Windows, window{
				X: bx, Y: top, W: graphLane - 6, H: y - top,
				Title: fmt.Sprintf("72-hour recovery window: from %s (op #%d, the first op nullified) to %s; op #%d forked from #%d after %s",
					stamp(r.WindowStart), r.Nullified[0], stamp(r.WindowEnd), o.N, r.ForkAt, span(r.Elapsed)),
			})
		}

		n := node{
			N: o.N, Seq: o.Seq, Lane: o.Depth, X: x, Y: y, TextX: textX,
			Tombstone: o.Tombstone(), Nullified: o.Nullified, Recovery: o.Recovery != nil,
		}
		n.R = graphNodeR
		n.BoxX, n.BoxY, n.BoxW = x-graphNodeR, y-graphNodeR, 2*graphNodeR
		if n.Tombstone {
			d := graphNodeR - 3
			n.Cross = fmt.Sprintf("M%d %d L%d %d M%d %d L%d %d", x-d, y-d, x+d, y+d, x+d, y-d, x-d, y+d)
		}
		classes := []string{"op"}
		if o.Prev == 0 {
			classes = append(classes, "genesis")
		}
		if n.Tombstone {
			classes = append(classes, "tombstone")
		}
		if n.Nullified {
			classes = append(classes, "nullified")
		}
		if n.Recovery {
			classes = append(classes, "recovery")
		}
		n.Class = strings.Join(classes, " ")

		head := fmt.Sprintf("#%d %s · %s", o.N, o.TypeName(), o.CreatedAt.Format("2006-01-02 15:04:05 UTC"))
		switch {
		case o.Nullified && o.NullifiedBy > 0:
			head += fmt.Sprintf(" · nullified by #%d", o.NullifiedBy)
		case o.Nullified:
			head += " · nullified"
		}
		n.Lines = append(n.Lines, textLine{X: textX, Y: y + 4, Class: "head", Text: clip(head)})
		n.Lines = append(n.Lines, textLine{X: textX, Y: y + 20, Class: "detail", Text: clip(signerLine(o) + " · " + changeLine(o))})
		n.Title = head
		if r := o.Recovery; r != nil {
			// The gauge (72 h at gaugeW px) and what it shows, on a third
			// line.
			n.Gauge = true
			n.GaugeX, n.GaugeY, n.GaugeW = textX, y+28, gaugeW
			n.GaugeFill = int(float64(gaugeW) * min(1, max(0, r.Elapsed.Hours()/72)))
			n.Lines = append(n.Lines, textLine{X: textX + gaugeW + 8, Y: y + 36, Class: "window-label",
				Text: clip(fmt.Sprintf("recovery from #%d, %s into the 72 h window; nullified %s", r.ForkAt, span(r.Elapsed), nList(r.Nullified)))})
		}
		g.Nodes = append(g.Nodes, n)
	}
	return g
}

// signerLine names the op's signer briefly.
func signerLine(o *opView) string {
	if o.SignerIndex < 0 {
		return "no allowed key verifies it"
	}
	return fmt.Sprintf("signed by rotation key %d (%s)", o.SignerIndex, shortKey(o.Signer))
}

// changeLine summarises an op's changes on one line.
func changeLine(o *opView) string {
	if o.Prev == 0 && !o.Tombstone() {
		return "created"
	}
	if len(o.Changes) == 0 {
		return "no change"
	}
	parts := make([]string, 0, len(o.Changes))
	for _, c := range o.Changes {
		if strings.HasPrefix(c.What, "rotation key") || strings.HasPrefix(c.What, "verification key") {
			c.Old, c.New = shortKey(c.Old), shortKey(c.New)
		} else {
			c.Old, c.New = clipN(c.Old, 32), clipN(c.New, 32)
		}
		parts = append(parts, c.Summary())
	}
	return strings.Join(parts, "; ")
}

// shortKey abbreviates a did:key: its type prefix and last characters.
func shortKey(k string) string {
	s := strings.TrimPrefix(k, "did:key:")
	if utf8.RuneCountInString(s) <= 16 {
		return s
	}
	r := []rune(s)
	return string(r[:8]) + "…" + string(r[len(r)-6:])
}

func clip(s string) string { return clipN(s, labelMax) }

// clipN cuts s to n characters, marking the cut.
func clipN(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func nList(ns []int) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = fmt.Sprintf("#%d", n)
	}
	return strings.Join(parts, ", ")
}

// stamp renders a time as the page shows it.
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000 UTC") }

// span renders a duration in days, hours and minutes.
func span(d time.Duration) string {
	if d < 0 {
		return "-" + span(-d)
	}
	if d < time.Minute {
		return fmt.Sprintf("%.3gs", d.Seconds())
	}
	d = d.Truncate(time.Minute)
	days, h, m := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour), int(d%time.Hour/time.Minute)
	switch {
	case days > 0:
		return fmt.Sprintf("%dd %dh %dm", days, h, m)
	case h > 0:
		return fmt.Sprintf("%dh %dm", h, m)
	}
	return fmt.Sprintf("%dm", m)
}
