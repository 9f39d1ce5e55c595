package oplog

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/plcdir/plc/internal/pgtest"
)

// TestStatsCountsUseAnIndex: a status page is served to anyone, so its
// counts must never scan the whole log. The query plans name the indexes
// of the existing migrations.
func TestStatsCountsUseAnIndex(t *testing.T) {
	queries := map[string]string{
		countOpsAfterSQL:   "operations_created_at",
		countRejectionsSQL: "rejected_source_line",
	}
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "plc.db")
		if _, err := MigrateUp(path); err != nil {
			t.Fatal(err)
		}
		s, err := OpenSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for q, index := range queries {
			var plan []string
			rows, err := s.db.Query(`EXPLAIN QUERY PLAN `+fmt.Sprintf(q, "?"), 0)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var id, parent, unused int
				var detail string
				if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail)
			}
			rows.Close()
			if p := strings.Join(plan, "; "); !strings.Contains(p, "INDEX "+index) || strings.Contains(p, "SCAN") {
				t.Errorf("%s: plan %q does not search index %s", q, p, index)
			}
		}
	})
	t.Run("postgres", func(t *testing.T) {
		conn := pgPlanConn(t,
			// On an empty table the planner would rightly pick a
			// sequential scan; with it priced out, the plan shows whether
			// the index can answer the query at all.
			`SET enable_seqscan = off`)
		for q, index := range queries {
			arg := any(int64(0))
			if strings.Contains(q, "source") {
				arg = "upstream:x"
			}
			if p := pgPlan(t, conn, fmt.Sprintf(q, "$1"), arg); !strings.Contains(p, index) || strings.Contains(p, "Seq Scan") {
				t.Errorf("%s: plan %q does not use index %s", q, p, index)
			}
		}
	})
}

// pgPlanConn returns a connection of a PostgreSQL store on a migrated
// database, with settings applied to it.
func pgPlanConn(t *testing.T, settings ...string) *pgxpool.Conn {
	t.Helper()
	url := pgtest.URL(t)
	if _, err := MigrateUp(url); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := OpenPostgres(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Release)
	for _, set := range settings {
		if _, err := conn.Exec(ctx, set); err != nil {
			t.Fatal(err)
		}
	}
	return conn
}

// pgPlan returns the plan of q on conn, its lines joined by "; ".
func pgPlan(t *testing.T, conn *pgxpool.Conn, q string, args ...any) string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `EXPLAIN `+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "; ")
}

// TestDIDReadsStartNoParallelWorkers: the reads of DID records (one DID,
// or an append's batch of thousands) are lookups of a few rows; a plan
// that starts parallel workers for them costs the server tens of
// milliseconds a read. With parallel plans priced as free, the plans on
// the store's connections, generic ones as prepared statements keep,
// still take no workers.
func TestDIDReadsStartNoParallelWorkers(t *testing.T) {
	conn := pgPlanConn(t,
		`SET parallel_setup_cost = 0`, `SET parallel_tuple_cost = 0`,
		`SET min_parallel_table_scan_size = 0`, `SET min_parallel_index_scan_size = 0`,
		`SET plan_cache_mode = force_generic_plan`)
	key, _ := DIDKey("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
	for q, arg := range map[string]any{pgRecordSQL: key, pgRecordsSQL: [][]byte{key}} {
		if p := pgPlan(t, conn, q, arg); strings.Contains(p, "Gather") || strings.Contains(p, "Parallel") {
			t.Errorf("%s: plan %q takes parallel workers", q, p)
		}
	}
}

// TestReadsOfOneDIDDoNotScanEveryNullifiedOp: a read of a few ops (a
// DID's record or head, its audit log, heads in bulk, an export page by
// time) must look their nullified flags up by seq. Written as an anti or
// outer join, the planner may hash the whole of nullified for each read —
// as it does after a bulk load, whose statistics are stale — and each
// resolution then costs time in proportion to every op ever nullified (a
// 1 M-op import spent 9 s of the server's time so). With the joins a
// planner could pick priced out, the plans still probe nullified by its
// index, and never read it whole.
func TestReadsOfOneDIDDoNotScanEveryNullifiedOp(t *testing.T) {
	conn := pgPlanConn(t,
		`SET enable_nestloop = off`, `SET enable_mergejoin = off`, `SET enable_seqscan = off`,
		`SET plan_cache_mode = force_generic_plan`)
	key, _ := DIDKey("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
	for q, args := range map[string][]any{
		pgRecordSQL:               {key},
		pgRecordsSQL:              {[][]byte{key}},
		numbered(headSQL):         {key},
		numbered(opsSQL):          {key},
		numbered(pgHeadsSQL):      {[][]byte{key}},
		numbered(exportByTimeSQL): {int64(0), 10},
		numbered(exportAtTimeSQL): {int64(0)},
	} {
		p := pgPlan(t, conn, q, args...)
		if strings.Contains(p, "Join") || !strings.Contains(p, "Index Cond: (seq = o.seq)") && !strings.Contains(p, "Index Cond: (seq = h.seq)") {
			t.Errorf("%s: plan %q reads nullified otherwise than by the seq of each row", q, p)
		}
	}
}
