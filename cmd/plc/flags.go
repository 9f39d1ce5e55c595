package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
)

// newFlagSet returns a flag set that prints a command's usage line, its
// description and its flags (with their environment variables) on -h.
func newFlagSet(name, usageLine, description string, e env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
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

// parseFlags parses args. It reports done when the command must stop: after
// -h (exit 0, usage on stdout's behalf already printed) or on a bad flag
// (exit 2).
func parseFlags(fs *flag.FlagSet, args []string) (code int, done bool) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return 0, false
	case errors.Is(err, flag.ErrHelp):
		return exitOK, true
	default:
		return exitUsage, true
	}
}

// parseInterspersed parses args with flags before, between or after the
// positional arguments ("plc audit compare A B --json"), and returns the
// positional ones. After "--" everything is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) (pos []string, code int, done bool) {
	for {
		if code, done := parseFlags(fs, args); done {
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

// intFlag defines an int flag whose default comes from the environment
// variable envName when that is set.
func intFlag(fs *flag.FlagSet, e env, name, envName string, def int, help string) (*int, error) {
	if v := e.getenv(envName); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: not an integer", envName, v)
		}
		def = n
	}
	return fs.Int(name, def, fmt.Sprintf("%s (env %s)", help, envName)), nil
}
