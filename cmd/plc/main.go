// Command plc is an independent did:plc directory: it serves, mirrors,
// imports and audits the did:plc operation log.
//
// Usage:
//
//	plc <command> [flags] [args]
//	plc help [command]
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/plcdir/plc/cmd/plc/internal/bench"
	"github.com/plcdir/plc/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv})
	stop()
	os.Exit(code)
}

func commands() []command {
	return []command{
		{Name: "serve", Summary: "run the directory (HTTP API over the operation log)", Run: runServe},
		{Name: "mirror", Summary: "replicate and verify another directory, and serve it", Run: runMirror},
		{Name: "import", Summary: "import an export file (verified, resumable)", Run: runImport},
		{Name: "export", Summary: "write the log as export lines, or as bundles (offline, from the database)", Run: runExport},
		{Name: "export-plcbundle", Summary: "write the log as a plcbundle V1 repository (incremental)", Run: runExportPlcbundle},
		{Name: "migrate", Summary: "manage the database schema (up, version)", Run: runMigrate},
		{Name: "audit", Summary: "independent verification (plc audit help)", Run: runAudit},
		{Name: "watch", Summary: "register webhooks for the new ops of DIDs (add, list, remove, enable)", Run: runWatch},
		{Name: "keygen", Summary: "create a transparency-log checkpoint key, or a did:plc rotation key", Run: runKeygen},
		{Name: "op", Summary: "build, sign and submit a DID's operations from key files (plc op help)", Run: runOp},
		{Name: "bench", Summary: "load a running directory (plc bench help)", Run: bench.Run},
		{Name: "version", Summary: "print the version", Run: runVersion},
		{Name: "help", Summary: "show help for a command"},
	}
}

func run(ctx context.Context, args []string, e env) int {
	if len(args) == 0 {
		usage(e.Stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	if isHelp(name) {
		// "plc help serve" is "plc serve -h"; "plc help -h" is "plc help".
		if len(rest) > 0 && !isHelp(rest[0]) {
			return run(ctx, []string{rest[0], "-h"}, e)
		}
		usage(e.Stdout)
		return exitOK
	}
	for _, c := range commands() {
		if c.Name == name && c.Run != nil {
			return c.Run(ctx, e, rest)
		}
	}
	return e.Failf(exitUsage, "plc: unknown command %q\nRun 'plc help' for the list of commands.", name)
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	switch arg {
	case "help", "-h", "-help", "--help":
		return true
	}
	return false
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "plc: an independent did:plc directory\n\nUsage:\n  plc <command> [flags] [args]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.Name, c.Summary)
	}
	fmt.Fprintf(w, "\nRun 'plc <command> -h' for a command's flags.\n")
}

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func runVersion(_ context.Context, e env, args []string) int {
	fs := cli.NewFlagSet("version", "plc version", "Print the version of this binary.", e)
	if code, done := cli.ParseFlags(fs, args); done {
		return code
	}
	fmt.Fprintln(e.Stdout, version)
	return exitOK
}
