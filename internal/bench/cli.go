package bench

import "github.com/plcdir/plc/internal/cli"

// Short names for internal/cli's plumbing, as in cmd/plc.
type (
	env     = cli.Env
	command = cli.Command
)

const (
	exitOK      = cli.ExitOK
	exitFailure = cli.ExitFailure
	exitUsage   = cli.ExitUsage
)
