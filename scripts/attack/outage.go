package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// writer posts ops for a few DIDs and remembers what was acknowledged.
type writer struct {
	base  string
	ids   []*identity
	acked map[string][]string // did → acknowledged CIDs in order
	n     int
}

func newWriter(base string, dids int) (*writer, error) {
	w := &writer{base: base, acked: map[string][]string{}}
	for i := range dids {
		id, err := newIdentity(fmt.Sprintf("outage%d.test", i))
		if err != nil {
			return nil, err
		}
		w.ids = append(w.ids, id)
	}
	return w, nil
}

// serveWritten starts plc serve on db and writes ops ops over dids DIDs
// through it, all acknowledged.
func serveWritten(ctx context.Context, c *config, db string, dids, ops int) (*proc, *writer, error) {
	p, err := start(ctx, c, nil, "serve", "--db", db)
	if err != nil {
		return nil, nil, err
	}
	w, err := newWriter(p.url, dids)
	if err != nil {
		p.stop()
		return nil, nil, err
	}
	for range ops {
		if o := w.post(); o.status != 200 {
			p.stop()
			return nil, nil, fmt.Errorf("a write before the attack: %d %v", o.status, o.err)
		}
	}
	return p, w, nil
}

// outcome is what one POST got.
type outcome struct {
	status     int
	retryAfter string
	json       bool
	err        error
}

// post sends the next op of one of the DIDs (its genesis first).
func (w *writer) post() outcome {
	id := w.ids[w.n%len(w.ids)]
	w.n++
	op := id.head
	if len(w.acked[id.did]) > 0 {
		var err error
		if op, err = id.update(fmt.Sprintf("h%d.outage.test", w.n)); err != nil {
			return outcome{err: err}
		}
	}
	status, ra, body, err := postOp(w.base, id.did, op)
	if err == nil && status == 200 {
		w.acked[id.did] = append(w.acked[id.did], op.CID())
		id.accept(op)
	}
	return outcome{status: status, retryAfter: ra, json: isJSONMessage(body), err: err}
}

// intact checks that every acknowledged op is in its DID's audit log, in
// order.
func (w *writer) intact() error {
	for did, want := range w.acked {
		got, err := auditCIDs(w.base, did)
		if err != nil {
			return err
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return fmt.Errorf("%s: audit log has %v, acknowledged %v", did, got, want)
		}
	}
	return nil
}

// checkOutage posts n ops while the store is failing: each must get 503
// with Retry-After and a JSON message.
func checkOutage(w *writer, r *modeReport, name string, n int) {
	bad := 0
	var seen []string
	for range n {
		o := w.post()
		if o.err != nil || o.status != 503 || o.retryAfter == "" || !o.json {
			bad++
			seen = append(seen, fmt.Sprintf("%d retry-after=%q json=%v err=%v", o.status, o.retryAfter, o.json, o.err))
		}
	}
	r.check(bad == 0, name, "%d writes during the outage, %d not answered 503 + Retry-After + JSON %v", n, bad, first(seen, 3))
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// recovered posts until a write succeeds again (bounded).
func recovered(w *writer, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if o := w.post(); o.status == 200 {
			return true
		}
		time.Sleep(250 * time.Millisecond)
	}
	return false
}

// runDBKill stops PostgreSQL under a running plc serve.
func runDBKill(ctx context.Context, c *config, r *modeReport) error {
	base, data, bin := os.Getenv("PLC_TEST_POSTGRES"), os.Getenv("PLC_TEST_PGDATA"), os.Getenv("PLC_TEST_PGBIN")
	if base == "" || data == "" || bin == "" {
		r.skipped("postgres", "needs PLC_TEST_POSTGRES, PLC_TEST_PGDATA and PLC_TEST_PGBIN (run under scripts/with-postgres.sh)")
		return nil
	}
	url, err := createDatabase(base, "attack_dbkill")
	if err != nil {
		return err
	}
	p, w, err := serveWritten(ctx, c, url, 4, 12)
	if err != nil {
		return err
	}
	defer p.stop()
	if out, err := pgCtl(bin, data, "-m", "immediate", "-w", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop: %v %s", err, out)
	}
	restarted := false
	defer func() {
		if !restarted {
			pgCtl(bin, data, "-l", filepath.Join(filepath.Dir(data), "server.log"), "-w", "start")
		}
	}()
	checkOutage(w, r, "writes while the database is down", 10)
	for did := range w.acked {
		status, hdr, body, err := get(p.url+"/"+did, 10*time.Second)
		r.check(err == nil && status == 503 && hdr.Get("Retry-After") != "" && isJSONMessage(body), "reads while the database is down",
			"GET /%s: %d, Retry-After %q, %s %v", did, status, hdr.Get("Retry-After"), clip(string(body)), err)
		break
	}
	status, hdr, _, _ := get(p.url+"/_health", 10*time.Second)
	r.check(status == 503, "health reports the outage", "/_health %d (Retry-After %q)", status, hdr.Get("Retry-After"))
	if out, err := pgCtl(bin, data, "-l", filepath.Join(filepath.Dir(data), "server.log"), "-w", "start"); err != nil {
		return fmt.Errorf("pg_ctl start: %v %s", err, out)
	}
	restarted = true
	r.check(recovered(w, 60*time.Second), "writes resume", "a write succeeds after the database is back")
	err = w.intact()
	r.check(err == nil, "no acknowledged op lost", "every acknowledged op is in the log (%v)", err)
	r.check(!p.exited(), "alive", "the server is still running")
	return nil
}

func pgCtl(bin, data string, args ...string) (string, error) {
	argv := append([]string{"-D", data}, args...)
	cmd := exec.Command(filepath.Join(bin, "pg_ctl"), argv...)
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(bin, "pg_ctl")}, argv...)...)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// createDatabase makes a fresh database beside base's and returns its URL.
func createDatabase(base, name string) (string, error) {
	db, err := sql.Open("pgx", base)
	if err != nil {
		return "", err
	}
	defer db.Close()
	if _, err := db.Exec(`DROP DATABASE IF EXISTS ` + name + ` WITH (FORCE)`); err != nil {
		return "", err
	}
	if _, err := db.Exec(`CREATE DATABASE ` + name); err != nil {
		return "", err
	}
	i := strings.Index(base, "?")
	if i < 0 {
		i = len(base)
	}
	j := strings.LastIndex(base[:i], "/")
	return base[:j+1] + name + base[i:], nil
}

// runDiskFull fills the file system under an SQLite directory.
func runDiskFull(ctx context.Context, c *config, r *modeReport) error {
	if os.Geteuid() != 0 {
		r.skipped("disk", "needs root to mount a small tmpfs")
		return nil
	}
	dir := filepath.Join(c.work, "full")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", dir).CombinedOutput(); err != nil {
		r.skipped("disk", "cannot mount a tmpfs here: %v %s", err, strings.TrimSpace(string(out)))
		return nil
	}
	defer exec.Command("umount", "-l", dir).Run()
	p, w, err := serveWritten(ctx, c, filepath.Join(dir, "plc.sqlite"), 4, 12)
	if err != nil {
		return err
	}
	defer p.stop()
	filler := filepath.Join(dir, "filler")
	if err := fill(filler); err != nil {
		return err
	}
	checkOutage(w, r, "writes on a full disk", 10)
	r.check(!p.exited(), "alive on a full disk", "the server is still running")
	os.Remove(filler)
	r.check(recovered(w, 30*time.Second), "writes resume", "a write succeeds once there is space again")
	err = w.intact()
	r.check(err == nil, "no acknowledged op lost", "every acknowledged op is in the log (%v)", err)
	return nil
}

// fill writes path until the file system has no space left.
func fill(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			// Squeeze out the last partial blocks too.
			for _, n := range []int{4096, 512, 1} {
				for {
					if _, err := f.Write(buf[:n]); err != nil {
						break
					}
				}
			}
			return nil
		}
	}
}
