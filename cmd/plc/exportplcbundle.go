package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/plcdir/plc/bundle"
	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/oplog"
)

// defaultPlcbundleMinAge is how old an op must be to be bundled: past the
// 72 h in which a recovery may nullify it, and an hour more.
const defaultPlcbundleMinAge = 73 * time.Hour

// exportPlcbundleConfig is everything `plc export-plcbundle` needs.
type exportPlcbundleConfig struct {
	// DB is a postgres:// URL or the path of an SQLite file.
	DB string
	// Dir is the repository's folder.
	Dir string
	// Origin names the repository (default https://<host name>).
	Origin string
	// MinAge: only ops created at least this long ago are bundled.
	MinAge time.Duration

	now func() time.Time // for tests (default time.Now)
}

func (c *exportPlcbundleConfig) validate() error {
	if c.DB == "" {
		return errors.New("--db must not be empty")
	}
	if c.Origin == "" {
		return errors.New("--origin must not be empty")
	}
	if c.MinAge < 0 {
		return errors.New("--min-age must not be negative")
	}
	return nil
}

func defaultPlcbundleOrigin() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return "https://" + host
}

func runExportPlcbundle(ctx context.Context, e env, args []string) int {
	c := exportPlcbundleConfig{}
	fs := cli.NewFlagSet("export-plcbundle", "plc export-plcbundle [flags] DIR",
		`Writes the log as a plcbundle V1 repository in DIR (created if need be),
for the plcbundle tools: full bundles of 10,000 legacy export lines in
createdAt order (each line as GET /export renders it, with the nullified
flag the log states), zstd in 100-line frames after a metadata frame,
chained by SHA-256, and the index plc_bundles.json. Only ops older than
--min-age are bundled, so that their nullified flags are final; the ops
past the last full bundle wait for a later run. Run it again to add the
bundles that have filled since: the last bundle is checked, and the
repository goes on after it.

Exit status: 0 when done, 1 on a database or file error, 2 on usage
errors or when DIR holds a repository that fails its checks or has
another origin.`, e)
	f := cli.NewFlags(fs, e)
	f.DB(&c.DB)
	f.Str(&c.Origin, "origin", "PLC_PLCBUNDLE_ORIGIN", defaultPlcbundleOrigin(), "the repository's origin: this directory's URL")
	f.Duration(&c.MinAge, "min-age", "PLC_PLCBUNDLE_MIN_AGE", defaultPlcbundleMinAge, "bundle only ops created at least this long ago (under 73h, nullified flags may still change)")
	if code, done := f.Parse("plc export-plcbundle", args); done {
		return code
	}
	if fs.NArg() != 1 {
		return e.Failf(exitUsage, "plc export-plcbundle: want exactly one DIR\nUsage: plc export-plcbundle [flags] DIR")
	}
	c.Dir = fs.Arg(0)
	if err := c.validate(); err != nil {
		return e.Failf(exitUsage, "plc export-plcbundle: %v", err)
	}
	return exportPlcbundle(ctx, c, e)
}

func exportPlcbundle(ctx context.Context, c exportPlcbundleConfig, e env) int {
	if c.now == nil {
		c.now = time.Now
	}
	store, _, err := oplog.Open(ctx, c.DB)
	if err != nil {
		return e.Failf(exitFailure, "plc export-plcbundle: %v", err)
	}
	defer store.Close()
	before := c.now().Add(-c.MinAge)
	st, err := bundle.WritePlcbundles(ctx, store, c.Dir, bundle.PlcbundleExportOptions{
		Origin: c.Origin,
		Before: before,
		Now:    c.now,
	})
	switch {
	case err == nil:
	case errors.Is(err, bundle.ErrPlcbundleRefused), errors.Is(err, bundle.ErrPlcbundleOrigin):
		return e.Failf(exitUsage, "plc export-plcbundle: %s: %v", c.Dir, err)
	default:
		return e.Failf(exitFailure, "plc export-plcbundle: %s: %v (%d bundles written before it)", c.Dir, err, st.Written)
	}
	fmt.Fprintf(e.Stdout, "done: %d bundles written, %d in all (ops created before %s)\n",
		st.Written, st.Existing+st.Written, before.UTC().Format(time.RFC3339))
	return exitOK
}
