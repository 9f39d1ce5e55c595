// Package cli is the command-line plumbing the plc commands share (cmd/plc
// and the benchmarks of internal/bench): what a command may touch of the
// process (Env), the exit codes, flag sets whose -h names each flag's
// environment variable, the one way to bind a flag to that variable
// (Flags), dispatch of a command's subcommands, and reading an input file
// that may be compressed. It does no I/O but through the Env it is given.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Env is what a command may touch of the process: its streams and its
// environment (for flag fallbacks). Tests supply their own.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

// Failf writes a message (format and a, and a newline) to standard error
// and returns code: how a command stops on an error.
func (e Env) Failf(code int, format string, a ...any) int {
	fmt.Fprintf(e.Stderr, "%s\n", fmt.Sprintf(format, a...))
	return code
}

// Exit codes shared by every command.
const (
	ExitOK      = 0
	ExitFailure = 1 // the command ran and found a problem (e.g. an invalid log)
	ExitUsage   = 2 // bad usage, unreadable input, I/O error
)

// Command is a command or subcommand: its name, its one-line summary and
// what runs it with the arguments after its name.
type Command struct {
	Name    string
	Summary string
	Run     func(ctx context.Context, e Env, args []string) int
}

// NewFlagSet returns a flag set that prints a command's usage line, its
// description and its flags (with their environment variables) on -h.
func NewFlagSet(name, usageLine, description string, e Env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: %s\n\n%s\n", usageLine, description)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintf(out, "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// ParseFlags parses args. It reports done when the command must stop: after
// -h (exit 0, usage on stdout's behalf already printed) or on a bad flag
// (exit 2).
func ParseFlags(fs *flag.FlagSet, args []string) (code int, done bool) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return 0, false
	case errors.Is(err, flag.ErrHelp):
		return ExitOK, true
	default:
		return ExitUsage, true
	}
}

// ParseInterspersed parses args with flags before, between or after the
// positional arguments ("plc audit compare A B --json"), and returns the
// positional ones. After "--" everything is positional.
func ParseInterspersed(fs *flag.FlagSet, args []string) (pos []string, code int, done bool) {
	for {
		if code, done := ParseFlags(fs, args); done {
			return nil, code, true
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), 0, false
		}
		if len(rest) == 0 {
			return pos, 0, false
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// RunGroup dispatches a command with subcommands ("plc audit verify-log").
func RunGroup(ctx context.Context, e Env, group, what string, subs []Command, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		w, code := e.Stdout, ExitOK
		if len(args) == 0 {
			w, code = e.Stderr, ExitUsage
		}
		fmt.Fprintf(w, "Usage: plc %s <%s> [flags] [args]\n\n%ss:\n", group, what, strings.ToUpper(what[:1])+what[1:])
		for _, c := range subs {
			fmt.Fprintf(w, "  %-12s %s\n", c.Name, c.Summary)
		}
		return code
	}
	for _, c := range subs {
		if c.Name == args[0] {
			return c.Run(ctx, e, args[1:])
		}
	}
	return e.Failf(ExitUsage, "plc %s: unknown %s %q\nRun 'plc %s help' for the list.", group, what, args[0], group)
}
