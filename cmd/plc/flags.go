package main

import "github.com/plcdir/plc/internal/cli"

// The command-line plumbing is internal/cli's, shared with the benchmarks;
// these are its short names here.
type (
	env     = cli.Env
	command = cli.Command
)

const (
	exitOK      = cli.ExitOK
	exitFailure = cli.ExitFailure
	exitUsage   = cli.ExitUsage
)
