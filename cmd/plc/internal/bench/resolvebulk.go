package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plcdir/plc/internal/cli"
)

// bulkOptions configure plc bench resolve --bulk.
type bulkOptions struct {
	batch, rounds, conc int
	seed                uint64
}

// bulkRun is one measure: DIDs resolved, how long it took, failures.
type bulkRun struct {
	dids    int64
	elapsed time.Duration
	failed  int64
}

func (r bulkRun) rate() float64 { return float64(r.dids) / r.elapsed.Seconds() }

// runBulkResolve resolves one set of DIDs as single GETs and as POST
// /dids, over one connection and over o.conc, and prints the rates.
func runBulkResolve(ctx context.Context, e cli.Env, hc *http.Client, base string, dids []string, o bulkOptions) int {
	rng := rand.New(rand.NewPCG(o.seed, 0))
	set := make([]string, o.batch)
	perm := rng.Perm(len(dids))
	for i := range set {
		set[i] = dids[perm[i%len(perm)]]
	}
	body, err := json.Marshal(map[string][]string{"dids": set})
	if err != nil {
		return e.Failf(cli.ExitFailure, "plc bench resolve --bulk: %v", err)
	}
	// One request first, so that both ways start from the same cache.
	if err := postDIDs(ctx, hc, base, body, len(set)); err != nil {
		return e.Failf(cli.ExitFailure, "plc bench resolve --bulk: POST /dids: %v", err)
	}
	concs := []int{1}
	if o.conc > 1 {
		concs = append(concs, o.conc)
	}
	var single, bulk []bulkRun
	for _, c := range concs {
		single = append(single, measure(ctx, c, o.rounds, func() (int64, error) {
			var n int64
			for _, did := range set {
				if err := getDID(ctx, hc, base, did); err != nil {
					return n, err
				}
				n++
			}
			return n, nil
		}))
		bulk = append(bulk, measure(ctx, c, o.rounds, func() (int64, error) {
			if err := postDIDs(ctx, hc, base, body, len(set)); err != nil {
				return 0, err
			}
			return int64(len(set)), nil
		}))
	}
	fmt.Fprintf(e.Stdout, "scenario     resolve --bulk\nDIDs         %d per set (of %d listed)\nrounds       %d per connection\n", len(set), len(dids), o.rounds)
	var failed int64
	for i, c := range concs {
		s, b := single[i], bulk[i]
		failed += s.failed + b.failed
		fmt.Fprintf(e.Stdout, "concurrency  %d\n  single GET  %.0f DIDs/s (%d DIDs in %s, %d failed)\n  POST /dids  %.0f DIDs/s (%d DIDs in %s, %d failed)\n  ratio       %.1fx\n",
			c, s.rate(), s.dids, s.elapsed.Round(time.Millisecond), s.failed,
			b.rate(), b.dids, b.elapsed.Round(time.Millisecond), b.failed, b.rate()/s.rate())
	}
	if failed > 0 {
		return cli.ExitFailure
	}
	return cli.ExitOK
}

// measure runs round rounds times on each of conc connections.
func measure(ctx context.Context, conc, rounds int, round func() (int64, error)) bulkRun {
	var (
		done, failed atomic.Int64
		wg           sync.WaitGroup
	)
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for range rounds {
				if ctx.Err() != nil {
					return
				}
				n, err := round()
				done.Add(n)
				if err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return bulkRun{dids: done.Load(), elapsed: time.Since(start), failed: failed.Load()}
}

// getDID GETs /did: 200, or 404 for a tombstoned DID.
func getDID(ctx context.Context, hc *http.Client, base, did string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/"+did, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
		return errors.New(resp.Status)
	}
	return nil
}

// postDIDs POSTs body to /dids and checks it is answered a line per DID.
func postDIDs(ctx context.Context, hc *http.Client, base string, body []byte, n int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/dids", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %.200s", resp.Status, b)
	}
	if lines := bytes.Count(b, []byte("\n")); lines != n {
		return fmt.Errorf("%d lines for %d DIDs", lines, n)
	}
	return nil
}
