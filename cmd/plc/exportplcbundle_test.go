package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/bundle"
	"github.com/plcdir/plc/internal/pgtest"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/validate"
)

// Tests of `plc export-plcbundle` and of `plc import` of the foreign
// formats: a repository written from one log imports into a fresh one as
// the same ops; an altered one is refused; weekly files are found by
// name, alone or in a folder.

// plcbundleCreatedAtOf returns the createdAt of a seq-mode corpus line.
func plcbundleCreatedAtOf(t *testing.T, line []byte) time.Time {
	t.Helper()
	x, _, err := plc.ParseExportLine(line)
	if err != nil {
		t.Fatal(err)
	}
	return x.CreatedAt
}

func TestExportPlcbundleThenImportIt(t *testing.T) {
	if testing.Short() {
		t.Skip("imports 10,200 ops twice")
	}
	lines := storetest.Corpus(t, 19, bundle.PlcbundleOps+200)
	src, srcDB := storetest.SQLite(t)
	storetest.Load(t, src, lines)
	dir := filepath.Join(t.TempDir(), "bundles")
	var stdout, stderr bytes.Buffer
	e := env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}

	// By default only ops 73 h old are bundled: 73 h after the
	// 10,000th op, there are not 10,000 of them.
	cfg := exportPlcbundleConfig{DB: srcDB, Dir: dir, Origin: "https://plc.example", MinAge: defaultPlcbundleMinAge,
		now: func() time.Time { return plcbundleCreatedAtOf(t, lines[bundle.PlcbundleOps-1]).Add(73 * time.Hour) }}
	if code := exportPlcbundle(context.Background(), cfg, e); code != exitOK || !strings.Contains(stdout.String(), "done: 0 bundles written, 0 in all") {
		t.Fatalf("exit %d\n%s%s", code, &stdout, &stderr)
	}
	stdout.Reset()
	cfg.now = func() time.Time { return plcbundleCreatedAtOf(t, lines[bundle.PlcbundleOps+100]).Add(73 * time.Hour) }
	if code := exportPlcbundle(context.Background(), cfg, e); code != exitOK || !strings.Contains(stdout.String(), "done: 1 bundles written, 1 in all") {
		t.Fatalf("exit %d\n%s%s", code, &stdout, &stderr)
	}
	// A rerun (now from the command line) adds nothing: 200 ops are left.
	code, out, errOut := runPLC(t, context.Background(), nil, "export-plcbundle", "--db", srcDB, "--origin", "https://plc.example", "--min-age", "0s", dir)
	if code != exitOK || !strings.Contains(out, "done: 0 bundles written, 1 in all") {
		t.Fatalf("rerun: exit %d\n%s%s", code, out, errOut)
	}
	// Another origin is not mixed in.
	code, _, errOut = runPLC(t, context.Background(), nil, "export-plcbundle", "--db", srcDB, "--origin", "https://other.example", dir)
	if code != exitUsage || !strings.Contains(errOut, "another origin") {
		t.Fatalf("another origin: exit %d\n%s", code, errOut)
	}

	// The repository imports as the log's first 10,000 ops.
	dst := filepath.Join(t.TempDir(), "plc.sqlite")
	code, out, errOut = runPLC(t, context.Background(), nil, "import", "--db", dst, dir)
	if code != exitOK || !strings.Contains(out, "done: 10000 lines: 10000 imported, 0 rejected") || !strings.Contains(errOut, "plcbundle repository") {
		t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
	}
	want, _ := src.Export(context.Background(), 0, bundle.PlcbundleOps)
	got, _ := openDB(t, dst).Export(context.Background(), 0, bundle.PlcbundleOps+1)
	if len(got) != len(want) {
		t.Fatalf("imported %d ops, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].CID != want[i].CID || !bytes.Equal(got[i].Op, want[i].Op) || !got[i].CreatedAt.Equal(want[i].CreatedAt) {
			t.Fatalf("op %d: %s, want %s", i+1, got[i].CID, want[i].CID)
		}
	}
	code, out, _ = runPLC(t, context.Background(), nil, "import", "--db", dst, dir)
	if code != exitOK || !strings.Contains(out, "0 imported, 0 rejected, 10000 skipped") {
		t.Fatalf("re-import: exit %d\n%s", code, out)
	}

	// An altered bundle is refused, with the evidence.
	path := filepath.Join(dir, bundle.PlcbundleFileName(1))
	b, _ := os.ReadFile(path)
	b[len(b)-50] ^= 1
	os.WriteFile(path, b, 0o644)
	code, out, errOut = runPLC(t, context.Background(), nil, "import", "--db", filepath.Join(t.TempDir(), "plc.sqlite"), dir)
	if code != exitUsage || !strings.Contains(errOut, "refused: plcbundle bundle 1 (000001.jsonl.zst): altered file") || !strings.Contains(out, "0 imported") {
		t.Fatalf("altered: exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = runPLC(t, context.Background(), nil, "export-plcbundle", "--db", srcDB, "--origin", "https://plc.example", dir)
	if code != exitUsage || !strings.Contains(errOut, "bundle 1") {
		t.Fatalf("export onto an altered repository: exit %d\n%s", code, errOut)
	}
}

func TestImportWeeklyFileAndFolder(t *testing.T) {
	lines := storetest.Corpus(t, 19, 300)
	var body bytes.Buffer
	for i, l := range lines {
		x, _, err := plc.ParseExportLine(l)
		if err != nil {
			t.Fatal(err)
		}
		body.Write(validate.AppendAuditEntryJSON(nil, x.DID, x.Op, false, x.CreatedAt))
		if i%2 == 0 {
			body.WriteByte('\n') // and concatenated after the others
		}
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(body.Bytes())
	zw.Close()
	dir := t.TempDir()
	week := plcbundleCreatedAtOf(t, lines[0]).Unix() / bundle.WeeklySeconds * bundle.WeeklySeconds
	file := filepath.Join(dir, fmt.Sprintf("%d.jsonl.gz", week))
	os.WriteFile(file, z.Bytes(), 0o644)

	for _, arg := range []string{file, dir} {
		db := filepath.Join(t.TempDir(), "plc.sqlite")
		code, out, errOut := runPLC(t, context.Background(), nil, "import", "--db", db, arg)
		if code != exitOK || !strings.Contains(out, "done: 300 lines: 300 imported, 0 rejected") || !strings.Contains(errOut, "weekly file") {
			t.Fatalf("%s: exit %d\n%s%s", arg, code, out, errOut)
		}
	}

	// A folder of nothing foreign is still not an export.
	code, _, errOut := runPLC(t, context.Background(), nil, "import", "--db", filepath.Join(t.TempDir(), "plc.sqlite"), t.TempDir())
	if code != exitUsage || !strings.Contains(errOut, "is a directory") {
		t.Fatalf("empty folder: exit %d\n%s", code, errOut)
	}
	// A weekly file that is not one says so.
	bad := filepath.Join(t.TempDir(), "0.jsonl.gz")
	os.WriteFile(bad, []byte("{}"), 0o644)
	code, _, errOut = runPLC(t, context.Background(), nil, "import", "--db", filepath.Join(t.TempDir(), "plc.sqlite"), bad)
	if code != exitUsage || !strings.Contains(errOut, "bad weekly file") {
		t.Fatalf("bad weekly file: exit %d\n%s", code, errOut)
	}
}

// TestExportPlcbundleIsTheSameOnBothBackends: the same log gives the same
// bundle (the same content_hash) from SQLite and PostgreSQL, and the
// bundle imports on each.
func TestExportPlcbundleIsTheSameOnBothBackends(t *testing.T) {
	if testing.Short() {
		t.Skip("imports 10,050 ops and 10,000 on each backend")
	}
	lines := storetest.Corpus(t, 19, bundle.PlcbundleOps+50)
	export := writeFile(t, "export.jsonl", bytes.Join(lines, []byte("\n")))
	hashes := map[string]string{}
	backends(t, func(t *testing.T, db string) {
		if code, out, errOut := runPLC(t, context.Background(), nil, "import", "--db", db, export); code != exitOK {
			t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
		}
		dir := filepath.Join(t.TempDir(), "bundles")
		if code, out, errOut := runPLC(t, context.Background(), nil, "export-plcbundle", "--db", db, "--origin", "https://plc.example", "--min-age", "0s", dir); code != exitOK || !strings.Contains(out, "1 bundles written") {
			t.Fatalf("export: exit %d\n%s%s", code, out, errOut)
		}
		idx, err := bundle.ReadPlcbundleIndex(dir)
		if err != nil {
			t.Fatal(err)
		}
		hashes[t.Name()] = idx.Bundles[0].ContentHash
		dst := filepath.Join(t.TempDir(), "copy.sqlite")
		if oplog.IsPostgres(db) {
			dst = pgtest.URL(t)
		}
		if code, out, errOut := runPLC(t, context.Background(), nil, "import", "--db", dst, dir); code != exitOK || !strings.Contains(out, "10000 imported, 0 rejected") {
			t.Fatalf("import of the bundles: exit %d\n%s%s", code, out, errOut)
		}
	})
	var first string
	for _, h := range hashes {
		if first != "" && h != first {
			t.Fatalf("content hashes differ between backends: %v", hashes)
		}
		first = h
	}
}

func TestExportPlcbundleUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "want exactly one DIR"},
		{[]string{"a", "b"}, "want exactly one DIR"},
		{[]string{"--min-age", "-1h", "dir"}, "--min-age must not be negative"},
		{[]string{"--origin", "", "dir"}, "--origin must not be empty"},
	} {
		code, _, errOut := runPLC(t, context.Background(), nil, append([]string{"export-plcbundle"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, %s; want 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
}
