package bundle

// allegedly's weekly files: <week_start>.jsonl.gz, week_start the Unix
// time of the week's start (a multiple of 604,800 s), gzip of that week's
// ops as JSON objects {did, cid, createdAt, nullified, operation} in the
// legacy export's order, each followed by a newline in older files and by
// nothing in newer ones (one long line). No index, no hash, no signature:
// nothing in a weekly file can be checked but its ops.

import (
	"bufio"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/oplog"
)

// WeeklySeconds is the length of a week of weekly files.
const WeeklySeconds = 7 * 24 * 60 * 60

// ErrWeekly: a weekly file is not a stream of JSON objects (a byte
// outside an object, an object cut by the end of the file, bad gzip).
var ErrWeekly = errors.New("bad weekly file")

var weeklyName = regexp.MustCompile(`^([0-9]{1,12})\.jsonl\.gz$`)

// IsWeeklyFile reports whether name (a base name) is a weekly file's:
// <digits>.jsonl.gz.
func IsWeeklyFile(name string) bool { return weeklyName.MatchString(name) }

// WeeklyFiles returns the weekly files of dir in week order (by the
// number in their names); other files are left out.
func WeeklyFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	type week struct {
		start int64
		path  string
	}
	var weeks []week
	for _, e := range ents {
		m := weeklyName.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		start, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			continue
		}
		weeks = append(weeks, week{start, filepath.Join(dir, e.Name())})
	}
	slices.SortFunc(weeks, func(a, b week) int { return cmp.Compare(a.start, b.start) })
	paths := make([]string, len(weeks))
	for i, w := range weeks {
		paths[i] = w.path
	}
	return paths, nil
}

// WeeklyReader hands over the ops of weekly files, one file after the
// other, as an oplog.LineSource: each JSON object is one line, whether
// objects are separated by newlines (or other white space) or not at
// all. Objects are delimited by a streaming scan that holds at most
// MaxLineBytes+1 bytes of one (a longer one is handed over cut, and so
// rejected, and the scan goes on after it), never a whole line of the
// file. Lines are numbered across the files from 1, minus what Skip
// passed over.
type WeeklyReader struct {
	paths []string
	next  int   // the next file to open
	n     int64 // the objects read
	foreignLines

	f  *os.File
	zr *gzip.Reader
	sc *weeklyScanner
}

// OpenWeekly opens the weekly files at paths, in that order.
func OpenWeekly(paths []string) (*WeeklyReader, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("%w: no weekly files (named <week start>.jsonl.gz)", ErrWeekly)
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return nil, err
		}
	}
	return &WeeklyReader{paths: paths}, nil
}

// Source names the input for an import's cursor: "weekly:" and the first
// 32 hex digits of the SHA-256 of the first object (of the first file
// that holds one). It reads up to that object.
func (r *WeeklyReader) Source() (string, error) {
	first := &WeeklyReader{paths: r.paths}
	defer first.Close()
	l, err := first.Next(context.Background())
	if errors.Is(err, io.EOF) {
		return "", fmt.Errorf("%w: no op in %s", ErrWeekly, strings.Join(r.paths, ", "))
	}
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(l.Raw)
	return "weekly:" + hex.EncodeToString(sum[:16]), nil
}

// Next returns the next object as a line (see WeeklyReader). Once it has
// returned an error (io.EOF included), it returns that error again.
func (r *WeeklyReader) Next(ctx context.Context) (oplog.Line, error) { return r.sticky(ctx, r.next1) }

func (r *WeeklyReader) next1(ctx context.Context) (oplog.Line, error) {
	for {
		if r.sc != nil {
			b, err := r.sc.next()
			switch {
			case err == nil:
				r.n++
				if r.n <= r.skip {
					continue
				}
				return oplog.Line{N: r.n - r.skip, Raw: b}, nil
			case errors.Is(err, io.EOF):
				r.closeFile()
			default:
				name := r.paths[r.next-1]
				r.closeFile()
				return oplog.Line{}, fmt.Errorf("%w: %s: %w", oplog.ErrInput, name, err)
			}
		}
		if err := ctx.Err(); err != nil {
			return oplog.Line{}, err
		}
		if r.next >= len(r.paths) {
			return oplog.Line{}, io.EOF
		}
		path := r.paths[r.next]
		r.next++
		f, err := os.Open(path)
		if err != nil {
			return oplog.Line{}, fmt.Errorf("%w: %w", oplog.ErrInput, err)
		}
		zr, err := gzip.NewReader(bufio.NewReaderSize(f, 1<<16))
		if err != nil {
			f.Close()
			return oplog.Line{}, fmt.Errorf("%w: %s: %w: gzip: %w", oplog.ErrInput, path, ErrWeekly, err)
		}
		r.f, r.zr, r.sc = f, zr, newWeeklyScanner(zr)
	}
}

// Close closes the file being read.
func (r *WeeklyReader) Close() error {
	r.closeFile()
	return nil
}

func (r *WeeklyReader) closeFile() {
	if r.f != nil {
		r.zr.Close()
		r.f.Close()
	}
	r.f, r.zr, r.sc = nil, nil, nil
}

// weeklyScanner cuts a stream of JSON objects into objects, by their
// braces and strings alone (the objects are parsed later, by
// plc.ParseExportLine): it never holds more than MaxLineBytes+1 bytes of
// one.
type weeklyScanner struct {
	br  *bufio.Reader
	off int64 // bytes read
}

func newWeeklyScanner(r io.Reader) *weeklyScanner {
	return &weeklyScanner{br: bufio.NewReaderSize(r, 1<<16)}
}

// next returns the next object (cut after MaxLineBytes+1 bytes when
// longer), or io.EOF after the last, or ErrWeekly.
func (s *weeklyScanner) next() ([]byte, error) {
	var c byte
	for {
		b, err := s.br.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("%w: %w", ErrWeekly, err)
		}
		s.off++
		if b != ' ' && b != '\t' && b != '\r' && b != '\n' {
			c = b
			break
		}
	}
	if c != '{' {
		return nil, fmt.Errorf("%w: byte %d: %q where a JSON object should begin", ErrWeekly, s.off-1, c)
	}
	start := s.off - 1
	obj := []byte{'{'}
	depth, inString, escaped := 1, false, false
	for depth > 0 {
		b, err := s.br.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%w: the object at byte %d is cut by the end of the file", ErrWeekly, start)
			}
			return nil, fmt.Errorf("%w: %w", ErrWeekly, err)
		}
		s.off++
		if len(obj) <= plc.MaxLineBytes {
			obj = append(obj, b)
		}
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
		case b == '"':
			inString = true
		case b == '{' || b == '[':
			depth++
		case b == '}' || b == ']':
			depth--
		}
	}
	return obj, nil
}
