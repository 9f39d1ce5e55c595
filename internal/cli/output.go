package cli

import (
	"strconv"
	"unicode"
)

// Printable shows a string taken from the input on a terminal: "-" when
// empty, quoted when it holds anything but printable characters (no escape
// sequence from an export reaches the terminal).
func Printable(s string) string {
	if s == "" {
		return "-"
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
