package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/validate"
)

// Run is `plc bench`: it runs the scenario args names.
func Run(ctx context.Context, e cli.Env, args []string) int {
	return cli.RunGroup(ctx, e, "bench", "scenario", []cli.Command{
		{Name: "write", Summary: "POST throughput: new DIDs with C requests in flight", Run: runBenchWrite},
		{Name: "resolve", Summary: "GET /:did throughput and latency over the directory's DIDs", Run: runBenchResolve},
		{Name: "verify", Summary: "the validator over a corpus, beside the bare signature-check bound", Run: runBenchVerify},
		{Name: "export", Summary: "/export paging and /export/stream backfill rates", Run: runBenchExport},
		{Name: "import", Summary: "plc import of a corpus: ops/s, ratio to the signature bound, peak RSS, bytes per op", Run: runBenchImport},
		{Name: "bundles", Summary: "plc export (lines, bundles) rates, bundle bytes per op, and the bootstrap from local bundles ÷ the signature bound", Run: runBenchBundles},
		{Name: "gen", Summary: "generate a signed synthetic export corpus", Run: runBenchGen},
		{Name: "upstream", Summary: "a seq-mode export file served as /export pages: an upstream for measuring plc mirror alone", Run: runBenchUpstream},
		{Name: "static", Summary: "a bare HTTP server answering every GET with one fixed body: the baseline of resolve", Run: runBenchStatic},
	}, args)
}

// latencies summarises request durations.
type latencies []time.Duration

func (l latencies) quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(q * float64(len(s)-1))
	return s[i]
}

func benchClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        conns * 2,
			MaxIdleConnsPerHost: conns * 2,
			MaxConnsPerHost:     conns,
			IdleConnTimeout:     time.Minute,
		},
	}
}

func runBenchWrite(ctx context.Context, e cli.Env, args []string) int {
	fs := cli.NewFlagSet("bench write", "plc bench write --url URL [--ops N] [--concurrency C]",
		`Signs N genesis ops for new DIDs (before the clock starts, on all cores),
then POSTs them with C requests in flight and reports accepted ops/s and
latency percentiles.`, e)
	url := fs.String("url", "http://127.0.0.1:2582", "directory URL")
	ops := fs.Int("ops", 10000, "operations to submit")
	conc := fs.Int("concurrency", 16, "requests in flight")
	if code, done := cli.ParseFlags(fs, args); done {
		return code
	}
	if *ops < 1 || *conc < 1 {
		return e.Failf(cli.ExitUsage, "plc bench write: --ops and --concurrency must be at least 1")
	}
	fmt.Fprintf(e.Stderr, "signing %d ops...\n", *ops)
	bodies, dids, err := signGenesisOps(*ops)
	if err != nil {
		return e.Failf(cli.ExitFailure, "plc bench write: %v", err)
	}
	client := benchClient(*conc)
	base := strings.TrimRight(*url, "/")
	var (
		next     atomic.Int64
		failed   atomic.Int64
		firstErr atomic.Value
		lat      = make(latencies, *ops)
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(bodies) {
					return
				}
				t0 := time.Now()
				resp, err := client.Post(base+"/"+dids[i], "application/json", bytes.NewReader(bodies[i]))
				if err == nil {
					b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
					}
				}
				lat[i] = time.Since(t0)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	ok := int64(*ops) - failed.Load()
	fmt.Fprintf(e.Stdout, "scenario     write\nops          %d accepted, %d failed\nconcurrency  %d\nelapsed      %s\nthroughput   %.0f ops/s\nlatency      p50 %s  p99 %s  p999 %s\n",
		ok, failed.Load(), *conc, elapsed.Round(time.Millisecond), float64(ok)/elapsed.Seconds(),
		lat.quantile(0.5).Round(time.Microsecond), lat.quantile(0.99).Round(time.Microsecond), lat.quantile(0.999).Round(time.Microsecond))
	if msg := firstErr.Load(); msg != nil {
		return e.Failf(cli.ExitFailure, "first failure: %s", msg)
	}
	return cli.ExitOK
}

// signGenesisOps signs n genesis ops of fresh DIDs, shaped like a typical
// real op (two rotation keys, one verification method, a handle, a PDS).
func signGenesisOps(n int) ([][]byte, []string, error) {
	bodies := make([][]byte, n)
	dids := make([]string, n)
	var (
		next    atomic.Int64
		errOnce sync.Once
		err     error
		wg      sync.WaitGroup
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				op, e := benchGenesis(i)
				if e != nil {
					errOnce.Do(func() { err = e })
					return
				}
				bodies[i] = op.AppendJSON(nil)
				dids[i] = op.GenesisDID()
			}
		}()
	}
	wg.Wait()
	return bodies, dids, err
}

func benchGenesis(i int) (*validate.Op, error) {
	rot, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return nil, err
	}
	rotPub, err := rot.PublicKey()
	if err != nil {
		return nil, err
	}
	sign, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return nil, err
	}
	signPub, err := sign.PublicKey()
	if err != nil {
		return nil, err
	}
	return validate.Sign(validate.Operation{
		Type:                validate.TypeOperation,
		RotationKeys:        []string{rotPub.DIDKey(), signPub.DIDKey()},
		VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: signPub.DIDKey()}},
		AlsoKnownAs:         []string{"at://bench" + strconv.Itoa(i) + ".bsky.social"},
		Services:            []validate.Service{{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://morel.us-east.host.bsky.network"}},
	}, rot)
}

// exportDIDs pages through the seq-mode export and returns each DID once.
func exportDIDs(ctx context.Context, dir *client.Client) ([]string, error) {
	seen := map[string]bool{}
	var dids []string
	for after := int64(0); ; {
		p, err := dir.SeqPage(ctx, after, 1000)
		if err != nil || len(p.Lines) == 0 {
			return dids, err
		}
		for _, line := range p.Lines {
			l, err := plc.ReadLineHead(line)
			if err != nil {
				return nil, fmt.Errorf("export line: %w", err)
			}
			if !seen[l.DID] {
				seen[l.DID] = true
				dids = append(dids, l.DID)
			}
		}
		after = p.Last
	}
}
