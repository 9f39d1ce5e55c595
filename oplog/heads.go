package oplog

import (
	"context"
	"fmt"
	"strings"
)

// Bulk resolution: the heads of many DIDs in one query (POST /dids).

// HeadsPerQuery is the most DIDs one query of Heads looks up: a call with
// more runs one query per HeadsPerQuery of them.
const HeadsPerQuery = 256

// headsPerQuery is HeadsPerQuery (smaller in tests).
var headsPerQuery = HeadsPerQuery

// BatchedHeads is a capability of a store whose every read is a round trip
// to a database server (PostgreSQL): one query of Heads for many DIDs then
// costs much less than a Head each, and a reader serving many requests at
// once (the API's reads of DID documents that miss its cache) gathers
// them. A store without it is read one DID at a time: SQLite's reads are
// work in the process, which gathering (small batches, one at a time)
// only moved onto fewer cores (BENCHMARKS.md, "Cold resolutions").
type BatchedHeads interface {
	// PreferBatchedHeads marks the capability; it does nothing.
	PreferBatchedHeads()
}

func (*PostgresStore) PreferBatchedHeads() {}

// sqliteHeadsSQL selects the latest non-nullified op of each DID in a
// list of values (the list is formatted in): one index lookup a DID. Both
// heads queries probe nullified as notNullified does (see it), for their
// alias h.
const sqliteHeadsSQL = `SELECT o.seq, o.did, o.created_at, o.op FROM operations o WHERE o.seq IN (
	SELECT (SELECT h.seq FROM operations h WHERE h.did = k.column1
		AND (SELECT n.seq FROM nullified n WHERE n.seq = h.seq) IS NULL
		ORDER BY h.seq DESC LIMIT 1)
	FROM (VALUES (?)%s) AS k)`

// pgHeadsSQL is the same for PostgreSQL, over an array parameter.
const pgHeadsSQL = `SELECT o.seq, o.did, o.created_at, o.op FROM unnest(?::bytea[]) AS k(did)
	CROSS JOIN LATERAL (SELECT h.seq, h.did, h.created_at, h.op FROM operations h WHERE h.did = k.did
		AND (SELECT n.seq FROM nullified n WHERE n.seq = h.seq) IS NULL
		ORDER BY h.seq DESC LIMIT 1) AS o`

// Heads returns the latest non-nullified op of each of dids that is
// registered (what Head returns for it), keyed by DID: a DID that is not
// registered, or not a did:plc at all, is absent. Duplicates are looked
// up once.
func (r reads) Heads(ctx context.Context, dids []string) (map[string]Entry, error) {
	keys := make([][]byte, 0, len(dids))
	seen := make(map[string]bool, len(dids))
	for _, d := range dids {
		if seen[d] {
			continue
		}
		seen[d] = true
		if k, err := DIDKey(d); err == nil {
			keys = append(keys, k)
		}
	}
	out := make(map[string]Entry, len(keys))
	for len(keys) > 0 {
		n := min(len(keys), headsPerQuery)
		es, err := r.heads(ctx, keys[:n])
		if err != nil {
			return nil, fmt.Errorf("read the heads of %d DIDs: %w", n, err)
		}
		for _, e := range es {
			out[e.DID] = e
		}
		keys = keys[n:]
	}
	return out, nil
}

// heads runs one query of Heads.
func (r reads) heads(ctx context.Context, keys [][]byte) ([]Entry, error) {
	if _, ok := r.h.(pgDB); ok {
		return entries(ctx, r.h, false, pgHeadsSQL, keys)
	}
	// SQLite: one placeholder a DID. The list is padded (with its first
	// key again, which selects nothing more) to a power of two, so that
	// the statements prepared once per store are a handful, not one for
	// every length.
	n := 1
	for n < len(keys) {
		n *= 2
	}
	args := make([]any, n)
	for i := range args {
		if i < len(keys) {
			args[i] = keys[i]
		} else {
			args[i] = keys[0]
		}
	}
	return entries(ctx, r.h, false, fmt.Sprintf(sqliteHeadsSQL, strings.Repeat(", (?)", n-1)), args...)
}
