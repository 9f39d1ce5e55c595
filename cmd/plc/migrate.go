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
		fmt.Fprintf(e.Stderr, "plc migrate: want exactly one of: up, version\nUsage: plc migrate [--db DB] up|version\n")
		return exitUsage
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
		fmt.Fprintf(e.Stderr, "plc migrate %s: database %s: %v\n", fs.Arg(0), oplog.RedactDB(db), err)
		return exitFailure
	}
	fmt.Fprintf(e.Stdout, "version %d (latest %d)", st.Version, st.Latest)
	if st.Dirty {
		fmt.Fprint(e.Stdout, " dirty")
	}
	fmt.Fprintln(e.Stdout)
	return exitOK
}
