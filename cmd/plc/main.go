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
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{os.Stdin, os.Stdout, os.Stderr, os.Getenv})
	stop()
	os.Exit(code)
}

// env is what a command may touch of the process: its streams and its
// environment (for flag fallbacks). Tests supply their own.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

// Exit codes shared by every command.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and found a problem (e.g. an invalid log)
	exitUsage   = 2 // bad usage, unreadable input, I/O error
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e env, args []string) int
}

func commands() []command {
	return []command{
		{"serve", "run the directory (HTTP API over the operation log)", runServe},
		{"mirror", "replicate and verify another directory, and serve it", runMirror},
		{"import", "import an export file (verified, resumable)", runImport},
		{"migrate", "manage the database schema (up, version)", runMigrate},
		{"audit", "independent verification (plc audit help)", runAudit},
		{"keygen", "create a transparency-log checkpoint key", runKeygen},
		{"bench", "load a running directory (plc bench help)", runBench},
		{"version", "print the version", runVersion},
		{"help", "show help for a command", nil},
	}
}

func run(ctx context.Context, args []string, e env) int {
	if len(args) == 0 {
		usage(e.stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 && rest[0] != "help" {
			return run(ctx, []string{rest[0], "-h"}, e)
		}
		usage(e.stdout)
		return exitOK
	}
	for _, c := range commands() {
		if c.name == name && c.run != nil {
			return c.run(ctx, e, rest)
		}
	}
	fmt.Fprintf(e.stderr, "plc: unknown command %q\nRun 'plc help' for the list of commands.\n", name)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "plc: an independent did:plc directory\n\nUsage:\n  plc <command> [flags] [args]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'plc <command> -h' for a command's flags.\n")
}

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func runVersion(_ context.Context, e env, args []string) int {
	fs := newFlagSet("version", "plc version", "Print the version of this binary.", e)
	if code, done := parseFlags(fs, args); done {
		return code
	}
	fmt.Fprintln(e.stdout, version)
	return exitOK
}

// runGroup dispatches a command with subcommands ("plc audit verify-log").
func runGroup(ctx context.Context, e env, group, what string, subs []command, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		w, code := e.stdout, exitOK
		if len(args) == 0 {
			w, code = e.stderr, exitUsage
		}
		fmt.Fprintf(w, "Usage: plc %s <%s> [flags] [args]\n\n%ss:\n", group, what, strings.ToUpper(what[:1])+what[1:])
		for _, c := range subs {
			fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
		}
		return code
	}
	for _, c := range subs {
		if c.name == args[0] {
			return c.run(ctx, e, args[1:])
		}
	}
	fmt.Fprintf(e.stderr, "plc %s: unknown %s %q\nRun 'plc %s help' for the list.\n", group, what, args[0], group)
	return exitUsage
}
