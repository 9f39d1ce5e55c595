package main

import (
	"context"
	"fmt"

	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/oplog"
)

func runMigrate(_ context.Context, e env, args []string) int {
	var db string
	fs := cli.NewFlagSet("migrate", "plc migrate [--db DB] up|version",
		`Manages the database schema.

  up       apply every pending migration
  version  print the schema version, the newest this binary knows, and
           whether a migration failed half-way (dirty)`, e)
	f := cli.NewFlags(fs, e)
	f.DB(&db)
	if code, done := f.Parse("plc migrate", args); done {
		return code
	}
	if fs.NArg() != 1 || (fs.Arg(0) != "up" && fs.Arg(0) != "version") {
		return e.Failf(exitUsage, "plc migrate: want exactly one of: up, version\nUsage: plc migrate [--db DB] up|version")
	}
	var (
		st  oplog.SchemaStatus
		err error
	)
	if fs.Arg(0) == "up" {
		st, err = oplog.MigrateUp(db)
	} else {
		st, err = oplog.Status(db)
	}
	if err != nil {
		return e.Failf(exitFailure, "plc migrate %s: database %s: %v", fs.Arg(0), oplog.RedactDB(db), err)
	}
	fmt.Fprintf(e.Stdout, "version %d (latest %d)", st.Version, st.Latest)
	if st.Dirty {
		fmt.Fprint(e.Stdout, " dirty")
	}
	fmt.Fprintln(e.Stdout)
	return exitOK
}
