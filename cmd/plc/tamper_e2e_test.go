package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plcdir/plc/internal/pgtest"
	"github.com/plcdir/plc/oplog/tamper"
)

// TestStartupRefusesADatabaseEditedBehindTheLog: plc serve and plc mirror
// exit non-zero, naming what was changed, on a database where an op was
// added with a plain INSERT after checkpoints were signed, a nullified row
// was deleted, or a signer index was swapped;
// and they start again once the database is as the log left it.
func TestStartupRefusesADatabaseEditedBehindTheLog(t *testing.T) {
	for _, backend := range []string{"SQLite", "PostgreSQL"} {
		t.Run(backend, func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "data", "plc.sqlite")
			if backend == "PostgreSQL" {
				db = pgtest.URL(t)
			}
			key := filepath.Join(t.TempDir(), "checkpoint.key")
			if out, err := exec.Command(plcBinary(t), "keygen", "--out", key, "--origin", "plc.test").CombinedOutput(); err != nil {
				t.Fatalf("keygen: %v %s", err, out)
			}
			srv := startServer(t, db, "--checkpoint-key", key)
			writeHistory(t, srv.url, 0, 6, 2)
			if code, body := getBody(t, srv.url+"/tlog/checkpoint"); code != 200 {
				t.Fatalf("checkpoint: %d %s", code, body)
			}
			srv.kill()
			ctx := context.Background()
			conn := tamper.Open(t, db)
			one := func(q string) int64 {
				t.Helper()
				var n int64
				if err := conn.QueryRowContext(ctx, q).Scan(&n); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				return n
			}
			refused := func(check string, want ...string) {
				t.Helper()
				for _, cmd := range [][]string{
					{"serve", "--db", db, "--listen", "127.0.0.1:0", "--checkpoint-key", key, "--startup-check", check},
					{"mirror", "--upstream", "http://127.0.0.1:9", "--db", db, "--listen", "127.0.0.1:0", "--checkpoint-key", key, "--startup-check", check},
				} {
					out := startProcExpectExit(t, cmd...)
					for _, w := range want {
						if !strings.Contains(out, w) {
							t.Fatalf("plc %s on an edited database: %s\nwant %q", cmd[0], out, w)
						}
					}
				}
			}
			starts := func() {
				t.Helper()
				startServer(t, db, "--checkpoint-key", key, "--startup-check", "full").kill()
			}
			starts()

			// An op added with a plain INSERT, after the last one.
			last := one(`SELECT MAX(seq) FROM operations`)
			if _, err := conn.ExecContext(ctx, fmt.Sprintf(`INSERT INTO operations (seq, did, created_at, op, signer)
				SELECT %d, did, created_at, op, signer FROM operations WHERE seq = 2`, last+1)); err != nil {
				t.Fatal(err)
			}
			refused("quick", fmt.Sprintf("seq %d did did:plc:", last+1), "cid bafyrei", "the log did not write")
			tamper.Exec(t, db, fmt.Sprintf(`DELETE FROM operations WHERE seq = %d`, last+1))
			starts()

			// A nullified row deleted: the hostile update it hid is back.
			hidden := one(`SELECT MIN(seq) FROM nullified`)
			by := one(fmt.Sprintf(`SELECT by_seq FROM nullified WHERE seq = %d`, hidden))
			tamper.Exec(t, db, fmt.Sprintf(`DELETE FROM nullified WHERE seq = %d`, hidden))
			refused("quick", fmt.Sprintf("seq %d did did:plc:", hidden), fmt.Sprintf("nullified by seq %d, but the nullified table does not say so", by))
			tamper.Exec(t, db, fmt.Sprintf(`INSERT INTO nullified (seq, by_seq) VALUES (%d, %d)`, hidden, by))
			starts()

			// A signer index swapped for another of the same keys: only the
			// signatures tell, which the quick check reads for the ops of
			// the last recovery window (all of these).
			tamper.Exec(t, db, `UPDATE operations SET signer = 1 WHERE seq = 1`)
			for _, check := range []string{"quick", "full"} {
				refused(check, "seq 1 did did:plc:", "stored signer index is 1, but the op's signature verifies with rotation key 0")
			}
		})
	}
}
