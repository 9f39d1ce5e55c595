package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"sync"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/internal/defaults"
	"github.com/plcdir/plc/validate"
)

// CompareOptions configure Compare.
type CompareOptions struct {
	// Workers is the number of DIDs compared at once (default 4): each
	// DID costs four requests, two to each directory.
	Workers int
	// Progress, if set, is called after each DID with the number done.
	Progress func(done int)
}

// Kinds of Difference.
const (
	// DiffMissing: an op of A's log is not in B's (by CID).
	DiffMissing = "missing"
	// DiffExtra: an op of B's log is not in A's.
	DiffExtra = "extra"
	// DiffReplaced: at the same position the logs hold different ops,
	// neither of which the other log has (a fork).
	DiffReplaced = "replaced"
	// DiffCreatedAt: the same op (CID) with different acceptance times.
	DiffCreatedAt = "createdAt"
	// DiffOperation: the same CID with different operations.
	DiffOperation = "operation"
	// DiffNullified: the same op, nullified in one log and not the other.
	DiffNullified = "nullified"
	// DiffOrder: the ops both logs have are in different orders.
	DiffOrder = "order"
	// DiffEntry: an entry of B's log names another DID than A's does.
	DiffEntry = "entry"
	// DiffDocument: GET /:did answers differently (status, or document).
	DiffDocument = "document"
)

// Difference is one way two directories disagree about a DID.
type Difference struct {
	Kind string `json:"kind"`
	// Index is the op's position in A's audit log (in B's for DiffExtra);
	// -1 for DiffDocument.
	Index int    `json:"index"`
	CID   string `json:"cid,omitempty"`
	// A and B are what each directory has (a createdAt, a CID, a flag, a
	// status and message…), as text.
	A string `json:"a,omitempty"`
	B string `json:"b,omitempty"`
}

func (d Difference) String() string {
	switch d.Kind {
	case DiffMissing:
		return fmt.Sprintf("missing from B: op %d %s (createdAt %s)", d.Index, d.CID, d.A)
	case DiffExtra:
		return fmt.Sprintf("extra in B: op %d %s (createdAt %s)", d.Index, d.CID, d.B)
	case DiffReplaced:
		return fmt.Sprintf("different op at position %d: A has %s, B has %s", d.Index, d.A, d.B)
	case DiffCreatedAt:
		return fmt.Sprintf("op %d %s: createdAt A %s, B %s", d.Index, d.CID, d.A, d.B)
	case DiffOperation:
		return fmt.Sprintf("op %d %s: the operations differ: A %s, B %s", d.Index, d.CID, d.A, d.B)
	case DiffNullified:
		return fmt.Sprintf("op %d %s: nullified A %s, B %s", d.Index, d.CID, d.A, d.B)
	case DiffOrder:
		return fmt.Sprintf("ops in a different order from position %d: A has %s, B has %s", d.Index, d.A, d.B)
	case DiffEntry:
		return fmt.Sprintf("op %d %s: entry for did A %s, B %s", d.Index, d.CID, d.A, d.B)
	case DiffDocument:
		return fmt.Sprintf("document: A %s; B %s", d.A, d.B)
	}
	return d.Kind
}

// DIDComparison is the comparison of one DID.
type DIDComparison struct {
	DID string `json:"did"`
	// OpsA and OpsB are the lengths of the audit logs (0: not registered).
	OpsA        int          `json:"opsA"`
	OpsB        int          `json:"opsB"`
	Identical   bool         `json:"identical"`
	Differences []Difference `json:"differences"`
}

// CompareReport is the comparison of two directories over a set of DIDs.
// Its JSON form is the report of `plc audit compare --json`.
type CompareReport struct {
	A string `json:"a"`
	B string `json:"b"`
	// Seed is the seed the DIDs were sampled with (set by the caller; 0:
	// not sampled).
	Seed uint64 `json:"seed,omitempty"`
	// DIDs counts the DIDs compared, Identical and Different split them.
	DIDs      int `json:"dids"`
	Identical int `json:"identical"`
	Different int `json:"different"`
	// Differences counted by kind.
	Counts map[string]int `json:"counts"`
	OK     bool           `json:"ok"`
	// Results has one comparison per DID, in the order given.
	Results []DIDComparison `json:"results"`
}

// Compare fetches each DID's audit log (GET /:did/log/audit) and document
// (GET /:did) from directories a and b and reports how they differ. Taking
// A as the reference: the ops B lacks, the ops B has on top, the ops that
// differ (same CID with another createdAt, operation or nullified flag, or
// different ops at the same position), a different order, and a different
// answer to GET /:did (status, message or document, compared as JSON
// values). A DID neither directory knows is identical in both. The error
// is for what stops the comparison: a network error, an answer that is not
// one the route documents (a *client.StatusError), ctx's end.
func Compare(ctx context.Context, a, b *client.Client, dids []string, opts CompareOptions) (CompareReport, error) {
	defaults.Positive(&opts.Workers, 4)
	rep := CompareReport{A: a.String(), B: b.String(), DIDs: len(dids), Counts: map[string]int{}}
	rep.Results = make([]DIDComparison, len(dids))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		done     int
		wg       sync.WaitGroup
	)
	next := make(chan int)
	for range min(opts.Workers, max(len(dids), 1)) {
		wg.Go(func() {
			for i := range next {
				c, err := compareDID(ctx, a, b, dids[i])
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
					cancel()
				}
				rep.Results[i] = c
				done++
				if opts.Progress != nil && err == nil {
					opts.Progress(done)
				}
				mu.Unlock()
			}
		})
	}
feed:
	for i := range dids {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return rep, firstErr
	}
	for _, c := range rep.Results {
		if c.Identical {
			rep.Identical++
		} else {
			rep.Different++
		}
		for _, d := range c.Differences {
			rep.Counts[d.Kind]++
		}
	}
	rep.OK = rep.Different == 0
	return rep, nil
}

func compareDID(ctx context.Context, a, b *client.Client, did string) (DIDComparison, error) {
	c := DIDComparison{DID: did}
	var (
		logA, logB []plc.AuditEntry
		docA, docB client.Document
		errs       [4]error
		wg         sync.WaitGroup
	)
	wg.Go(func() { logA, _, errs[0] = a.AuditLog(ctx, did) })
	wg.Go(func() { logB, _, errs[1] = b.AuditLog(ctx, did) })
	wg.Go(func() { docA, errs[2] = a.Document(ctx, did) })
	wg.Go(func() { docB, errs[3] = b.Document(ctx, did) })
	wg.Wait()
	for i, err := range errs {
		if errors.Is(err, client.ErrNotRegistered) {
			errs[i] = nil // an empty log
		}
	}
	if err := errors.Join(errs[:]...); err != nil {
		return c, err
	}
	c.OpsA, c.OpsB = len(logA), len(logB)
	c.Differences = compareLogs(logA, logB)
	if d, ok := compareDocuments(docA, docB); !ok {
		c.Differences = append(c.Differences, d)
	}
	if c.Differences == nil {
		c.Differences = []Difference{}
	}
	c.Identical = len(c.Differences) == 0
	return c, nil
}

// compareLogs lists the differences between two audit logs of a DID.
func compareLogs(a, b []plc.AuditEntry) []Difference {
	var out []Difference
	inA := make(map[string]int, len(a))
	for i, e := range a {
		if _, dup := inA[e.CID]; !dup {
			inA[e.CID] = i
		}
	}
	inB := make(map[string]int, len(b))
	for i, e := range b {
		if _, dup := inB[e.CID]; !dup {
			inB[e.CID] = i
		}
	}
	// Different ops at the same position, each missing from the other log:
	// one difference, not a missing and an extra one.
	replaced := map[int]bool{}
	for i := range min(len(a), len(b)) {
		_, aInB := inB[a[i].CID]
		_, bInA := inA[b[i].CID]
		if a[i].CID != b[i].CID && !aInB && !bInA {
			replaced[i] = true
			out = append(out, Difference{Kind: DiffReplaced, Index: i, A: a[i].CID, B: b[i].CID})
		}
	}
	var commonA []string // A's ops that B has, in A's order
	for i, e := range a {
		j, ok := inB[e.CID]
		if !ok {
			if !replaced[i] {
				out = append(out, Difference{Kind: DiffMissing, Index: i, CID: e.CID, A: e.CreatedAt})
			}
			continue
		}
		commonA = append(commonA, e.CID)
		f := b[j]
		if e.DID != f.DID {
			out = append(out, Difference{Kind: DiffEntry, Index: i, CID: e.CID, A: client.Printable(e.DID, 100), B: client.Printable(f.DID, 100)})
		}
		if e.CreatedAt != f.CreatedAt {
			out = append(out, Difference{Kind: DiffCreatedAt, Index: i, CID: e.CID, A: client.Printable(e.CreatedAt, 100), B: client.Printable(f.CreatedAt, 100)})
		}
		if !sameJSON(e.Operation, f.Operation) {
			out = append(out, Difference{Kind: DiffOperation, Index: i, CID: e.CID, A: jsonSummary(e.Operation), B: jsonSummary(f.Operation)})
		}
		if e.Nullified != f.Nullified {
			out = append(out, Difference{Kind: DiffNullified, Index: i, CID: e.CID, A: strconv.FormatBool(e.Nullified), B: strconv.FormatBool(f.Nullified)})
		}
	}
	for j, f := range b {
		if _, ok := inA[f.CID]; !ok && !replaced[j] {
			out = append(out, Difference{Kind: DiffExtra, Index: j, CID: f.CID, B: f.CreatedAt})
		}
	}
	var commonB []string
	for _, f := range b {
		if _, ok := inA[f.CID]; ok {
			commonB = append(commonB, f.CID)
		}
	}
	if len(commonA) == len(commonB) {
		for k := range commonA {
			if commonA[k] != commonB[k] {
				out = append(out, Difference{Kind: DiffOrder, Index: inA[commonA[k]], A: commonA[k], B: commonB[k]})
				break
			}
		}
	}
	slices.SortStableFunc(out, func(x, y Difference) int { return x.Index - y.Index })
	return out
}

// sameJSON reports whether a and b are the same JSON value (object keys in
// any order).
func sameJSON(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// jsonSummary shows a JSON value, cut short.
func jsonSummary(v json.RawMessage) string {
	var buf bytes.Buffer
	if json.Compact(&buf, v) != nil {
		return client.Printable(string(v), 200)
	}
	return client.Printable(buf.String(), 200)
}

// compareDocuments compares two answers to GET /:did.
func compareDocuments(a, b client.Document) (Difference, bool) {
	same := a.Status == b.Status
	if same {
		if a.Status == 200 {
			same = sameJSON(a.Body, b.Body)
		} else {
			same = a.Message() == b.Message()
		}
	}
	if same {
		return Difference{}, true
	}
	show := func(d client.Document) string {
		if d.Status == 200 {
			return "200 " + jsonSummary(d.Body)
		}
		return strconv.Itoa(d.Status) + " " + d.Message()
	}
	return Difference{Kind: DiffDocument, Index: -1, A: show(a), B: show(b)}, false
}

// SampleDIDs picks up to n distinct DIDs from d's seq-mode export, spread
// over the whole log: the log's seqs are cut into n equal ranges, and the
// first op after a random seq of each range gives a DID (a DID met twice
// is replaced by one from another draw, within a bounded number of
// draws). Fewer than n DIDs come back only from a directory with fewer
// DIDs than that (or nearly so).
func SampleDIDs(ctx context.Context, d *client.Client, n int, rng *rand.Rand) ([]string, error) {
	if n <= 0 {
		return nil, nil
	}
	latest, err := d.LatestSeq(ctx)
	if err != nil {
		return nil, err
	}
	if latest == 0 {
		return nil, nil
	}
	seen := map[string]bool{}
	var dids []string
	pick := func(after int64) error {
		p, err := d.SeqPage(ctx, after, 1)
		if err != nil || len(p.Lines) == 0 {
			return err
		}
		l, err := plc.ReadLineHead(p.Lines[0])
		if err != nil || l.DID == "" {
			return &client.StatusError{URL: d.Endpoint("/export", nil), Message: fmt.Sprintf("the line after seq %d names no DID", after),
				Body: p.Lines[0], Err: client.ErrMalformed}
		}
		if !seen[l.DID] {
			seen[l.DID] = true
			dids = append(dids, l.DID)
		}
		return nil
	}
	for k := range int64(n) {
		lo, hi := k*latest/int64(n), (k+1)*latest/int64(n)
		if hi <= lo {
			continue
		}
		if err := pick(lo + rng.Int64N(hi-lo)); err != nil {
			return nil, err
		}
	}
	for tries := 0; len(dids) < n && tries < 4*n; tries++ {
		if err := pick(rng.Int64N(latest)); err != nil {
			return nil, err
		}
	}
	return dids, nil
}

// ReadDIDList reads a list of DIDs, one per line (blank lines and lines
// starting with # are skipped; surrounding white space is trimmed).
// Duplicates are dropped; a line that is not a did:plc is an error.
func ReadDIDList(r io.Reader) ([]string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var dids []string
	seen := map[string]bool{}
	for n, l := range bytes.Split(b, []byte{'\n'}) {
		s := string(bytes.TrimSpace(l))
		if s == "" || s[0] == '#' {
			continue
		}
		if !validate.ValidDID(s) {
			return nil, fmt.Errorf("line %d: %s is not a did:plc identifier", n+1, client.Printable(s, 100))
		}
		if !seen[s] {
			seen[s] = true
			dids = append(dids, s)
		}
	}
	return dids, nil
}
