package web

import (
	"fmt"
	"strings"
	"unicode"
)

// reveal makes invisible and direction-changing characters visible as
// ⟨U+XXXX⟩, so a value reads as what it holds: a handle or an endpoint
// cannot hide a right-to-left override, a zero-width character or a
// control character from the person checking it. Line breaks and tabs
// stay (evidence is shown as preformatted text).
func reveal(s string) string {
	if !strings.ContainsFunc(s, hidden) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if hidden(r) {
			fmt.Fprintf(&b, "⟨U+%04X⟩", r)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func hidden(r rune) bool {
	return r != '\n' && r != '\t' && (unicode.IsControl(r) || unicode.Is(unicode.Cf, r) ||
		unicode.Is(unicode.Zl, r) || unicode.Is(unicode.Zp, r))
}

func revealAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = reveal(s)
	}
	return out
}
