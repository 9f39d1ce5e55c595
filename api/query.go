package api

import (
	"math"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// Query parameters, parsed as the reference's express app does: the
// JavaScript parseInt and Date forms its handlers accept.

// exportBeginning is before every createdAt the log can hold (their years
// have four digits), and within every backend's time range.
var exportBeginning = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).Add(-time.Millisecond)

// queryParam returns a query parameter given exactly once. Express's query
// parser makes a repeated parameter an array, which the reference treats as
// absent.
func queryParam(c *gin.Context, name string) string {
	v := c.Request.URL.Query()[name]
	if len(v) != 1 {
		return ""
	}
	return v[0]
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// isJSSpace reports whether r is white space or a line terminator to
// JavaScript's parseInt and Date parsing.
func isJSSpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', ' ', 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff:
		return true
	}
	return r >= 0x2000 && r <= 0x200a
}

// jsParseInt is JavaScript's parseInt(s, 10): leading white space, an
// optional sign, then as many decimal digits as there are; anything after
// them is ignored. ok is false where parseInt gives NaN. Values saturate at
// ±MaxInt64.
func jsParseInt(s string) (n int64, ok bool) {
	s = strings.TrimLeftFunc(s, isJSSpace)
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	i := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		d := int64(s[i] - '0')
		if n > (math.MaxInt64-d)/10 {
			n = math.MaxInt64
		} else {
			n = n*10 + d
		}
	}
	if i == 0 {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

// The range of a JavaScript Date: ±8.64e15 ms around the epoch.
var (
	minJSDate = time.UnixMilli(-8.64e15).UTC()
	maxJSDate = time.UnixMilli(8.64e15).UTC()
)

// parseJSDate parses what new Date(s) accepts of the ISO 8601 forms:
// YYYY, YYYY-MM, YYYY-MM-DD (or an expanded ±YYYYYY year), optionally
// followed by T (or a space) and HH:mm, HH:mm:ss or HH:mm:ss.fraction, then
// an optional Z or ±HH:mm offset. A time without an offset is taken as UTC
// (the reference's servers run in UTC). Fractions are truncated to
// milliseconds; a day beyond the month's end rolls over, as in V8.
func parseJSDate(s string) (time.Time, bool) {
	p := dateParser{s: strings.TrimFunc(s, isJSSpace)}
	var year int
	switch {
	case p.peek('+') || p.peek('-'):
		neg := p.s[0] == '-'
		p.s = p.s[1:]
		y, ok := p.digits(6)
		if !ok || (neg && y == 0) {
			return time.Time{}, false
		}
		if year = y; neg {
			year = -y
		}
	default:
		y, ok := p.digits(4)
		if !ok {
			return time.Time{}, false
		}
		year = y
	}
	month, day := 1, 1
	if p.take('-') {
		m, ok := p.digits(2)
		if !ok || m < 1 || m > 12 {
			return time.Time{}, false
		}
		month = m
		if p.take('-') {
			d, ok := p.digits(2)
			if !ok || d < 1 || d > 31 {
				return time.Time{}, false
			}
			day = d
		}
	}
	var hour, minute, sec, nsec int
	if p.take('T') || p.take('t') || (len(p.s) > 1 && p.take(' ')) {
		var ok bool
		if hour, ok = p.digits(2); !ok || !p.take(':') {
			return time.Time{}, false
		}
		if minute, ok = p.digits(2); !ok || minute > 59 {
			return time.Time{}, false
		}
		if p.take(':') {
			if sec, ok = p.digits(2); !ok || sec > 59 {
				return time.Time{}, false
			}
			if p.take('.') || p.take(',') {
				n := 0
				for len(p.s) > 0 && p.s[0] >= '0' && p.s[0] <= '9' {
					if n < 3 {
						nsec = nsec*10 + int(p.s[0]-'0')
					}
					n++
					p.s = p.s[1:]
				}
				if n == 0 {
					return time.Time{}, false
				}
				for ; n < 3; n++ {
					nsec *= 10
				}
				nsec *= int(time.Millisecond)
			}
		}
		if hour > 24 || (hour == 24 && (minute != 0 || sec != 0 || nsec != 0)) {
			return time.Time{}, false
		}
		offset := 0
		switch {
		case p.take('Z') || p.take('z'):
		case p.peek('+') || p.peek('-'):
			sign := 1
			if p.s[0] == '-' {
				sign = -1
			}
			p.s = p.s[1:]
			oh, ok := p.digits(2)
			if !ok {
				return time.Time{}, false
			}
			p.take(':')
			om, ok := p.digits(2)
			if !ok || oh > 23 || om > 59 {
				return time.Time{}, false
			}
			offset = sign * (oh*3600 + om*60)
		}
		t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC).Add(-time.Duration(offset) * time.Second)
		return checkJSRange(t, p.s == "")
	}
	return checkJSRange(time.Date(year, time.Month(month), day, 0, 0, 0, 0, time.UTC), p.s == "")
}

func checkJSRange(t time.Time, ok bool) (time.Time, bool) {
	if !ok || t.Before(minJSDate) || t.After(maxJSDate) {
		return time.Time{}, false
	}
	return t, true
}

type dateParser struct{ s string }

func (p *dateParser) peek(c byte) bool { return len(p.s) > 0 && p.s[0] == c }

func (p *dateParser) take(c byte) bool {
	if p.peek(c) {
		p.s = p.s[1:]
		return true
	}
	return false
}

// digits reads exactly n decimal digits.
func (p *dateParser) digits(n int) (int, bool) {
	if len(p.s) < n {
		return 0, false
	}
	v := 0
	for i := 0; i < n; i++ {
		c := p.s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	p.s = p.s[n:]
	return v, true
}
