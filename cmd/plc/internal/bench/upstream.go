package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/internal/cli"
)

// maxUpstreamCount is the largest page the stand-in serves, as the
// directory's own /export.
const maxUpstreamCount = 1000

func runBenchUpstream(ctx context.Context, e cli.Env, args []string) int {
	fs := cli.NewFlagSet("bench upstream", "plc bench upstream [--listen ADDR] FILE",
		`Serves FILE, a directory's seq-mode export (plc export --out FILE), as
GET /export?after=SEQ&count=N pages, until interrupted: an upstream for
plc mirror that costs next to no CPU or memory, so that a mirror's
backfill can be measured on its own on one machine (a production mirror's
upstream runs elsewhere). Each page is read from FILE when asked for
(from the kernel's page cache, once the file has been read or written),
and only an index of its lines is held: FILE must not change while it is
served. It serves nothing else but /_health.`, e)
	listen := fs.String("listen", "127.0.0.1:2584", "listen address")
	if code, done := cli.ParseFlags(fs, args); done {
		return code
	}
	if fs.NArg() != 1 {
		return e.Failf(cli.ExitUsage, "plc bench upstream: give one export file")
	}
	up, err := loadUpstream(fs.Arg(0))
	if err != nil {
		return e.Failf(cli.ExitFailure, "plc bench upstream: %v", err)
	}
	defer up.f.Close()
	return serveUntil(ctx, e, "upstream", *listen, up, fmt.Sprintf("serving %d ops", len(up.seqs)))
}

// upstream is a seq-mode export file read in place: line i is the file's
// bytes [ends[i-1], ends[i]) (newline included, but for a last line
// without one), with seq seqs[i]. Pages are read from the file at each
// request, so the stand-in's memory is its index, about 16 bytes a line,
// and the file's bytes stay in the kernel's page cache, where plc export
// left them: a mirror measured beside it has the machine's memory to
// itself, as beside an upstream on another machine.
type upstream struct {
	f    *os.File
	seqs []int64
	ends []int64
	// newline is false when the file's last line has no newline (one is
	// served after it).
	newline bool
}

// loadUpstream indexes a seq-mode export file, whose seqs must rise. The
// file stays open for the upstream's pages.
func loadUpstream(path string) (_ *upstream, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	up := &upstream{f: f, newline: true}
	r := bufio.NewReaderSize(f, 1<<20)
	var off int64
	for n := 1; ; n++ {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%s: line %d is longer than 1 MiB", path, n)
		}
		if len(line) > 0 {
			head, herr := plc.ReadLineHead(line)
			switch {
			case herr != nil:
				return nil, fmt.Errorf("%s: line %d: %v", path, n, herr)
			case head.Seq == 0:
				return nil, fmt.Errorf("%s: line %d has no seq (a seq-mode export is needed)", path, n)
			case len(up.seqs) > 0 && head.Seq <= up.seqs[len(up.seqs)-1]:
				return nil, fmt.Errorf("%s: line %d: seq %d does not follow %d", path, n, head.Seq, up.seqs[len(up.seqs)-1])
			}
			off += int64(len(line))
			up.newline = line[len(line)-1] == '\n'
			up.seqs = append(up.seqs, head.Seq)
			up.ends = append(up.ends, off)
		}
		if err == io.EOF {
			return up, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func (up *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, msg string) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(code)
		fmt.Fprintf(w, "{\"message\":%q}\n", msg)
	}
	switch r.URL.Path {
	case "/_health":
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		io.WriteString(w, "{}\n")
		return
	case "/export":
	default:
		fail(http.StatusNotFound, "not found")
		return
	}
	q := r.URL.Query()
	after, count := int64(0), 10
	var err error
	if s := q.Get("after"); s != "" {
		if after, err = strconv.ParseInt(s, 10, 64); err != nil || after < 0 {
			fail(http.StatusBadRequest, "after must be a seq")
			return
		}
	}
	if s := q.Get("count"); s != "" {
		if count, err = strconv.Atoi(s); err != nil || count < 1 {
			fail(http.StatusBadRequest, "count must be a positive integer")
			return
		}
	}
	count = min(count, maxUpstreamCount)
	i := sort.Search(len(up.seqs), func(i int) bool { return up.seqs[i] > after })
	j := min(i+count, len(up.seqs))
	start := int64(0)
	if i > 0 {
		start = up.ends[i-1]
	}
	end := start
	if j > i {
		end = up.ends[j-1]
	}
	w.Header().Set("Content-Type", "application/jsonl")
	if _, err := io.Copy(w, io.NewSectionReader(up.f, start, end-start)); err != nil {
		return // the client is gone, or the file failed: the page is cut short
	}
	if j == len(up.seqs) && j > i && !up.newline {
		io.WriteString(w, "\n")
	}
}
