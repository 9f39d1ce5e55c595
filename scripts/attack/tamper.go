package main

import (
	"context"
	"database/sql"
	"encoding/base32"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// didBytes is the stored form of a did:plc (the 15 bytes its 24 base32
// characters encode).
func didBytes(did string) ([]byte, error) {
	return base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ToUpper(strings.TrimPrefix(did, "did:plc:")))
}

// runTamper edits a stopped directory's SQLite database behind the log's
// back, the way an intruder with the file could, and checks that the next
// start refuses it with a message naming what changed.
func runTamper(ctx context.Context, c *config, r *modeReport) error {
	pristine := filepath.Join(c.work, "tamper-pristine")
	if err := os.MkdirAll(pristine, 0o755); err != nil {
		return err
	}
	db := filepath.Join(pristine, "plc.sqlite")
	p, err := start(ctx, c, nil, "serve", "--db", db)
	if err != nil {
		return err
	}
	id, err := newIdentity("victim.test")
	if err != nil {
		p.stop()
		return err
	}
	if status, _, body, err := postOp(p.url, id.did, id.head); err != nil || status != 200 {
		p.stop()
		return fmt.Errorf("POST genesis: %d %s %v", status, body, err)
	}
	up, err := id.update("victim2.test")
	if err != nil {
		p.stop()
		return err
	}
	if status, _, body, err := postOp(p.url, id.did, up); err != nil || status != 200 {
		p.stop()
		return fmt.Errorf("POST update: %d %s %v", status, body, err)
	}
	id.accept(up)
	// A checkpoint covering both ops.
	if status, _, body, err := get(p.url+"/tlog/checkpoint", 10*time.Second); err != nil || status != 200 {
		p.stop()
		return fmt.Errorf("GET /tlog/checkpoint: %d %s %v", status, body, err)
	}
	p.stop()

	// The control: an untouched copy starts.
	if dir, err := copyDir(pristine, filepath.Join(c.work, "tamper-control")); err != nil {
		return err
	} else if p, err := start(ctx, c, nil, "serve", "--db", filepath.Join(dir, "plc.sqlite")); err != nil {
		r.fail("control", "an untouched copy does not start: %v", err)
	} else {
		p.stop()
		r.pass("control", "an untouched copy starts")
	}

	forged, err := id.update("attacker.test")
	if err != nil {
		return err
	}
	key, err := didBytes(id.did)
	if err != nil {
		return err
	}
	cases := []struct {
		name  string
		stmts []string
		args  [][]any
		names string // what the refusal must mention
	}{
		{
			name:  "inserted op",
			stmts: []string{`INSERT INTO operations (seq, did, created_at, op, signer) SELECT max(seq)+1, ?, max(created_at)+1, ?, 0 FROM operations`},
			args:  [][]any{{key, validate.AppendCompact(nil, forged)}},
			names: forged.CID(),
		},
		{
			name:  "nullified edited",
			stmts: []string{`INSERT INTO nullified (seq, by_seq) VALUES (2, 1)`},
			args:  [][]any{nil},
			names: "nullif",
		},
		{
			name: "signer index edited",
			stmts: []string{
				`DROP TRIGGER operations_no_update`,
				`UPDATE operations SET signer = 3 WHERE seq = 1`,
			},
			args:  [][]any{nil, nil},
			names: "signer",
		},
	}
	for i, tc := range cases {
		// A directory name that cannot satisfy the check by itself.
		dir, err := copyDir(pristine, filepath.Join(c.work, fmt.Sprintf("tamper-%d", i)))
		if err != nil {
			return err
		}
		tdb := filepath.Join(dir, "plc.sqlite")
		if err := execSQLite(tdb, tc.stmts, tc.args); err != nil {
			return fmt.Errorf("%s: %w", tc.name, err)
		}
		p, err := start(ctx, c, nil, "serve", "--db", tdb)
		if err == nil {
			_, _, body, _ := get(p.url+"/"+id.did+"/log/last", 5*time.Second)
			p.stop()
			r.fail(tc.name, "the server started on the tampered database (it serves %s)", clip(string(body)))
			continue
		}
		msg := err.Error()
		r.check(strings.Contains(strings.ToLower(msg), strings.ToLower(tc.names)), tc.name,
			"start refused; the message names %q: %s", tc.names, clip(firstLineWith(msg, strings.ToLower(tc.names))))
	}
	return nil
}

// firstLineWith returns the first line of s that contains word (in any
// case), from the word on.
func firstLineWith(s, word string) string {
	for _, line := range strings.Split(s, "\n") {
		if i := strings.Index(strings.ToLower(line), word); i >= 0 {
			return line[max(0, i-60):]
		}
	}
	return s
}

func execSQLite(path string, stmts []string, args [][]any) error {
	db, err := sql.Open("sqlite", oplog.SQLiteDSN(path))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for i, s := range stmts {
		if _, err := db.Exec(s, args[i]...); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// copyDir copies the regular files of src into a new directory dst.
func copyDir(src, dst string) (string, error) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", err
	}
	es, err := os.ReadDir(src)
	if err != nil {
		return "", err
	}
	for _, e := range es {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return "", err
		}
		info, _ := e.Info()
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, info.Mode().Perm()); err != nil {
			return "", err
		}
	}
	return dst, nil
}
