package bench

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/oplog"
)

func runBenchResolve(ctx context.Context, e cli.Env, args []string) int {
	fs := cli.NewFlagSet("bench resolve", "plc bench resolve --url URL [--requests N] [--concurrency C] [--hot N] [--etag] [--warm] [--dids FILE] [--save-dids FILE] [--bulk [--batch N] [--rounds R]]",
		`Lists the directory's DIDs from its /export (or reads them from --dids),
then GETs /:did for DIDs drawn at random with C connections, and reports
requests/s and latency percentiles. --hot N draws from the first N DIDs
only (a hot set; 0: all of them, a uniform spread). --etag sends, for a
DID already answered once, its ETag in If-None-Match, and counts the 304
answers. --warm first GETs every DID of the draw once, untimed, so a
server's cache is in its steady state. --save-dids writes the DIDs
listed, one a line, for a later run with --dids (e.g. against plc bench
static).

--bulk compares bulk resolution with single reads instead: it draws one
set of --batch DIDs (default 1000; repeated when the directory has
fewer) and resolves it R times per connection, as GET /:did for each DID
and as one POST /dids, first over one connection, then over C; it
reports the DIDs resolved per second of each and the ratio.`, e)
	url := fs.String("url", "http://127.0.0.1:2582", "directory URL; several, comma-separated, are API processes of one directory, taken in turn by the connections")
	reqs := fs.Int("requests", 100000, "requests to send")
	conc := fs.Int("concurrency", 32, "connections")
	seed := fs.Uint64("seed", 1, "seed for the DID draw")
	hot := fs.Int("hot", 0, "draw from the first N DIDs only (0: all)")
	etag := fs.Bool("etag", false, "send If-None-Match with the ETag of a DID's earlier answer")
	didsFile := fs.String("dids", "", "read the DIDs from FILE (one a line) instead of /export")
	saveDIDs := fs.String("save-dids", "", "write the DIDs listed to FILE")
	warm := fs.Bool("warm", false, "first GET every DID of the draw once, untimed (a server's cache in its steady state)")
	bulk := fs.Bool("bulk", false, "compare POST /dids with GET /:did over one set of DIDs")
	batch := fs.Int("batch", 1000, "with --bulk: DIDs in the set (1 to 1000)")
	rounds := fs.Int("rounds", 10, "with --bulk: times each connection resolves the set each way")
	if code, done := cli.ParseFlags(fs, args); done {
		return code
	}
	if *reqs < 1 || *conc < 1 || *hot < 0 {
		return e.Failf(cli.ExitUsage, "plc bench resolve: --requests and --concurrency must be at least 1, --hot not negative")
	}
	if *bulk && (*batch < 1 || *batch > 1000 || *rounds < 1) {
		return e.Failf(cli.ExitUsage, "plc bench resolve: --batch must be between 1 and 1000, --rounds at least 1")
	}
	var bases []string
	for u := range strings.SplitSeq(*url, ",") {
		bases = append(bases, strings.TrimRight(u, "/"))
	}
	base := bases[0]
	hc := benchClient(*conc)
	var (
		dids []string
		err  error
	)
	if *didsFile != "" {
		dids, err = readDIDs(*didsFile)
	} else {
		var dir *client.Client
		if dir, err = client.New(base, hc); err != nil {
			return e.Failf(cli.ExitUsage, "plc bench resolve: %v", err)
		}
		dids, err = exportDIDs(ctx, dir)
	}
	if err != nil {
		return e.Failf(cli.ExitFailure, "plc bench resolve: %v", err)
	}
	if len(dids) == 0 {
		return e.Failf(cli.ExitFailure, "plc bench resolve: the directory has no DIDs (run plc bench write first)")
	}
	if *saveDIDs != "" {
		if err := os.WriteFile(*saveDIDs, []byte(strings.Join(dids, "\n")+"\n"), 0o644); err != nil {
			return e.Failf(cli.ExitFailure, "plc bench resolve: %v", err)
		}
	}
	if *bulk {
		return runBulkResolve(ctx, e, hc, base, dids, bulkOptions{batch: *batch, rounds: *rounds, conc: *conc, seed: *seed})
	}
	draw := dids
	if *hot > 0 && *hot < len(dids) {
		draw = dids[:*hot]
	}
	if *warm {
		if err := warmUp(ctx, hc, bases, draw, *conc); err != nil {
			return e.Failf(cli.ExitFailure, "plc bench resolve: warming up: %v", err)
		}
	}
	var (
		next        atomic.Int64
		failed      atomic.Int64
		gone        atomic.Int64 // 404: tombstoned DIDs
		notModified atomic.Int64
		tags        = make([]atomic.Pointer[string], len(draw))
		lat         = make(latencies, *reqs)
		wg          sync.WaitGroup
	)
	start := time.Now()
	for w := range *conc {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(*seed, uint64(w)))
			base := bases[w%len(bases)]
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= *reqs {
					return
				}
				d := rng.IntN(len(draw))
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/"+draw[d], nil)
				if err != nil {
					failed.Add(1)
					continue
				}
				if tag := tags[d].Load(); *etag && tag != nil {
					req.Header.Set("If-None-Match", *tag)
				}
				t0 := time.Now()
				resp, err := hc.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					switch resp.StatusCode {
					case http.StatusOK:
						if tag := resp.Header.Get("ETag"); *etag && tag != "" {
							tags[d].Store(&tag)
						}
					case http.StatusNotModified:
						notModified.Add(1)
					case http.StatusNotFound: // a tombstoned DID: a correct answer
						gone.Add(1)
					default:
						err = errors.New(resp.Status)
					}
				}
				lat[i] = time.Since(t0)
				if err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	spread := "uniform"
	if len(draw) < len(dids) {
		spread = fmt.Sprintf("hot set of %d", len(draw))
	}
	fmt.Fprintf(e.Stdout, "scenario     resolve\nDIDs         %d (%s)\nrequests     %d (%d failed, %d tombstoned, %d not modified)\nconcurrency  %d\nelapsed      %s\nthroughput   %.0f req/s\nlatency      p50 %s  p99 %s  p999 %s\n",
		len(dids), spread, *reqs, failed.Load(), gone.Load(), notModified.Load(), *conc, elapsed.Round(time.Millisecond), float64(*reqs)/elapsed.Seconds(),
		lat.quantile(0.5).Round(time.Microsecond), lat.quantile(0.99).Round(time.Microsecond), lat.quantile(0.999).Round(time.Microsecond))
	if failed.Load() > 0 {
		return cli.ExitFailure
	}
	return cli.ExitOK
}

// warmUp GETs each of dids once with conc connections (the servers of
// bases in turn), failing on the first answer that is neither 200 nor 404.
func warmUp(ctx context.Context, hc *http.Client, bases, dids []string, conc int) error {
	var (
		next atomic.Int64
		bad  atomic.Pointer[error]
		wg   sync.WaitGroup
	)
	for w := range conc {
		wg.Go(func() {
			base := bases[w%len(bases)]
			for ctx.Err() == nil && bad.Load() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(dids) {
					return
				}
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/"+dids[i], nil)
				if err == nil {
					var resp *http.Response
					if resp, err = hc.Do(req); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
							err = fmt.Errorf("%s: %s", dids[i], resp.Status)
						}
					}
				}
				if err != nil {
					bad.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if p := bad.Load(); p != nil {
		return *p
	}
	return ctx.Err()
}

// readDIDs reads a file of DIDs, one a line (blank lines skipped).
func readDIDs(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var dids []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if d := strings.TrimSpace(sc.Text()); d != "" {
			dids = append(dids, d)
		}
	}
	return dids, sc.Err()
}

// staticBodySize is the size of a typical DID document: the body plc
// bench static answers by default.
const staticBodySize = 536

func runBenchStatic(ctx context.Context, e cli.Env, args []string) int {
	fs := cli.NewFlagSet("bench static", "plc bench static [--listen ADDR] [--size N] [--db DB]",
		`Serves every GET, whatever its path, with 200 and one fixed JSON body of
N bytes from a bare net/http server, until interrupted: the bound plc
bench resolve is compared with on the same machine.

With --db, each GET /DID first reads the DID's latest stored op from that
database with one indexed query, the least a resolution that misses every
cache does (no nullification check, no decoding, no document), and then
answers the same body (404 for a DID the database does not hold): the
floor of a cold resolution on that backend, beside the bare server.`, e)
	listen := fs.String("listen", "127.0.0.1:2583", "listen address")
	size := fs.Int("size", staticBodySize, "body size in bytes (at least 16)")
	db := fs.String("db", "", "database to read each DID's latest op from: a postgres:// URL or an SQLite file path")
	if code, done := cli.ParseFlags(fs, args); done {
		return code
	}
	if *size < 16 || *size > 1<<20 {
		return e.Failf(cli.ExitUsage, "plc bench static: --size must be between 16 and 1048576")
	}
	body := staticBody(*size)
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/did+ld+json; charset=utf-8")
		w.Write(body)
	})
	what := fmt.Sprintf("serving %d bytes", len(body))
	if *db != "" {
		read, closeDB, err := latestOpReader(ctx, *db)
		if err != nil {
			return e.Failf(cli.ExitFailure, "plc bench static: %v", err)
		}
		defer closeDB()
		h = floorHandler(read, h)
		what += " after one read of each DID's latest op from " + oplog.RedactDB(*db)
	}
	return serveUntil(ctx, e, "static", *listen, h, what)
}

// floorHandler answers GET /DID as static does once read found the DID's
// latest op: 400 for a path that is not a DID, 404 for a DID read does not
// find (its error is sql.ErrNoRows or pgx.ErrNoRows), 503 when the read
// fails.
func floorHandler(read func(ctx context.Context, key []byte) error, static http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, err := oplog.DIDKey(strings.TrimPrefix(r.URL.Path, "/"))
		if err != nil {
			http.Error(w, `{"message":"not a DID"}`, http.StatusBadRequest)
			return
		}
		switch err := read(r.Context(), key); {
		case errors.Is(err, sql.ErrNoRows) || errors.Is(err, pgx.ErrNoRows):
			http.Error(w, `{"message":"DID not registered"}`, http.StatusNotFound)
		case err != nil:
			http.Error(w, `{"message":"read failed"}`, http.StatusServiceUnavailable)
		default:
			static.ServeHTTP(w, r)
		}
	})
}

// latestOpSQL reads a DID's latest stored op by the (did, seq) index.
const latestOpSQL = `SELECT op FROM operations WHERE did = $1 ORDER BY seq DESC LIMIT 1`

// latestOpReader opens db (which must already hold the log's schema) and
// returns a read of a DID's latest op by its stored key, through the same
// driver and pool settings plc serve uses; the read's error is the
// driver's own (its no-rows error for a DID the database does not hold).
func latestOpReader(ctx context.Context, db string) (func(context.Context, []byte) error, func(), error) {
	if oplog.IsPostgres(db) {
		s, err := oplog.OpenPostgres(ctx, db)
		if err != nil {
			return nil, nil, err
		}
		pool := s.Pool()
		return func(ctx context.Context, key []byte) error {
			var op []byte
			return pool.QueryRow(ctx, latestOpSQL, key).Scan(&op)
		}, func() { s.Close() }, nil
	}
	s, err := oplog.OpenSQLite(db)
	if err != nil {
		return nil, nil, err
	}
	stmt, err := s.DB().PrepareContext(ctx, latestOpSQL)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return func(ctx context.Context, key []byte) error {
		var op []byte
		return stmt.QueryRowContext(ctx, key).Scan(&op)
	}, func() { stmt.Close(); s.Close() }, nil
}

// serveUntil serves h on listen until ctx ends, after printing what it
// serves and where on stdout, for plc bench NAME.
func serveUntil(ctx context.Context, e cli.Env, name, listen string, h http.Handler, what string) int {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return e.Failf(cli.ExitFailure, "plc bench %s: %v", name, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	fmt.Fprintf(e.Stdout, "%s at http://%s\n", what, ln.Addr())
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return e.Failf(cli.ExitFailure, "plc bench %s: %v", name, err)
	}
	return cli.ExitOK
}

// staticBody is a JSON object of exactly n bytes (n ≥ 16).
func staticBody(n int) []byte {
	b := make([]byte, 0, n)
	b = append(b, `{"padding":"`...)
	for len(b) < n-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}
