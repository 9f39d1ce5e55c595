// Command refsize measures database bytes per operation: it loads an
// export corpus into the reference implementation's PostgreSQL schema
// (did-method-plc's operations table, jsonb ops, and its indexes) and
// reports that database's size per op beside the size of a database of
// ours holding the same corpus (imported with `plc import`).
//
//	go run ./scripts/refsize -ref postgres://…/refdb -ours postgres://…/plcdb corpus.jsonl
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
)

// referenceSchema is the reference's operations and dids tables with every
// index its migrations create (as of its 2025-11 sequencing migration).
const referenceSchema = `
CREATE TABLE operations (
    did text NOT NULL,
    operation jsonb NOT NULL,
    cid text NOT NULL,
    nullified boolean NOT NULL,
    "createdAt" timestamptz NOT NULL DEFAULT current_timestamp,
    seq bigint,
    CONSTRAINT operations_primary_key PRIMARY KEY (did, cid)
);
CREATE INDEX "operations_createdAt_index" ON operations ("createdAt");
CREATE INDEX "operations_did_createdAt_index" ON operations (did, "createdAt");
CREATE INDEX operations_seq_createdat_idx ON operations (seq, "createdAt");
CREATE TABLE dids (did text PRIMARY KEY);
`

func main() {
	ref := flag.String("ref", "", "URL of an empty database to load the reference schema into")
	ours := flag.String("ours", "", "URL of a plc database holding the same corpus")
	flag.Parse()
	if *ref == "" || *ours == "" || flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: refsize -ref URL -ours URL CORPUS")
		os.Exit(2)
	}
	if err := run(context.Background(), *ref, *ours, flag.Arg(0)); err != nil {
		fmt.Fprintln(os.Stderr, "refsize:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, refURL, oursURL, corpus string) error {
	ref, err := pgx.Connect(ctx, refURL)
	if err != nil {
		return err
	}
	defer ref.Close(ctx)
	if _, err := ref.Exec(ctx, referenceSchema); err != nil {
		return fmt.Errorf("reference schema: %w", err)
	}
	f, err := os.Open(corpus)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var rows [][]any
	dids := map[string]bool{}
	var didRows [][]any
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var l struct {
			DID       string          `json:"did"`
			Operation json.RawMessage `json:"operation"`
			CID       string          `json:"cid"`
			CreatedAt time.Time       `json:"createdAt"`
			Seq       int64           `json:"seq"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return err
		}
		rows = append(rows, []any{l.DID, string(l.Operation), l.CID, false, l.CreatedAt, l.Seq})
		if !dids[l.DID] {
			dids[l.DID] = true
			didRows = append(didRows, []any{l.DID})
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if _, err := ref.CopyFrom(ctx, pgx.Identifier{"operations"}, []string{"did", "operation", "cid", "nullified", "createdAt", "seq"}, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("load reference operations: %w", err)
	}
	if _, err := ref.CopyFrom(ctx, pgx.Identifier{"dids"}, []string{"did"}, pgx.CopyFromRows(didRows)); err != nil {
		return fmt.Errorf("load reference dids: %w", err)
	}
	refBytes, err := dbSize(ctx, ref)
	if err != nil {
		return err
	}
	o, err := pgx.Connect(ctx, oursURL)
	if err != nil {
		return err
	}
	defer o.Close(ctx)
	var ourOps int64
	if err := o.QueryRow(ctx, `SELECT count(*) FROM operations`).Scan(&ourOps); err != nil {
		return err
	}
	ourBytes, err := dbSize(ctx, o)
	if err != nil {
		return err
	}
	n := float64(len(rows))
	fmt.Printf("ops                %d (ours holds %d)\n", len(rows), ourOps)
	fmt.Printf("reference schema   %d bytes, %.0f bytes/op\n", refBytes, float64(refBytes)/n)
	fmt.Printf("ours               %d bytes, %.0f bytes/op\n", ourBytes, float64(ourBytes)/float64(ourOps))
	fmt.Printf("ratio              %.2f\n", (float64(ourBytes)/float64(ourOps))/(float64(refBytes)/n))
	return nil
}

// dbSize vacuums the user tables and sums their total relation sizes
// (heap, TOAST and indexes).
func dbSize(ctx context.Context, c *pgx.Conn) (int64, error) {
	if _, err := c.Exec(ctx, `VACUUM ANALYZE`); err != nil {
		return 0, err
	}
	var n int64
	err := c.QueryRow(ctx, `SELECT COALESCE(sum(pg_total_relation_size(relid)), 0)::bigint FROM pg_catalog.pg_statio_user_tables`).Scan(&n)
	return n, err
}
