package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
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

// flagSource binds flags to their environment fallbacks: the one way a
// command gives a flag an environment variable. A variable that is set
// becomes the flag's default (a flag on the command line wins), and the
// flag's help names it. The first variable that does not parse is kept in
// err, for the command to report before it parses its arguments.
type flagSource struct {
	fs  *flag.FlagSet
	e   env
	err error
}

func (f *flagSource) str(p *string, name, envName, def, help string) {
	if v := f.e.getenv(envName); v != "" {
		def = v
	}
	f.fs.StringVar(p, name, def, fmt.Sprintf("%s (env %s)", help, envName))
}

func (f *flagSource) float(p *float64, name, envName string, def float64, help string) {
	if v := f.e.getenv(envName); v != "" {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil && f.err == nil {
			f.err = fmt.Errorf("%s=%q: not a number", envName, v)
		}
		def = n
	}
	f.fs.Float64Var(p, name, def, fmt.Sprintf("%s (env %s)", help, envName))
}

func (f *flagSource) int(p *int, name, envName string, def int, help string) {
	if v := f.e.getenv(envName); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil && f.err == nil {
			f.err = fmt.Errorf("%s=%q: not an integer", envName, v)
		}
		def = n
	}
	f.fs.IntVar(p, name, def, fmt.Sprintf("%s (env %s)", help, envName))
}

func (f *flagSource) bool(p *bool, name, envName string, help string) {
	def := false
	if v := f.e.getenv(envName); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil && f.err == nil {
			f.err = fmt.Errorf("%s=%q: not a boolean", envName, v)
		}
		def = b
	}
	f.fs.BoolVar(p, name, def, fmt.Sprintf("%s (env %s)", help, envName))
}

func (f *flagSource) duration(p *time.Duration, name, envName string, def time.Duration, help string) {
	if v := f.e.getenv(envName); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil && f.err == nil {
			f.err = fmt.Errorf("%s=%q: not a duration", envName, v)
		}
		def = d
	}
	f.fs.DurationVar(p, name, def, fmt.Sprintf("%s (env %s)", help, envName))
}

// list binds a repeatable flag; the environment variable holds
// space-separated values. check vets each value given on the command line.
func (f *flagSource) list(p *[]string, name, envName, help string, check func(string) error) {
	if v := f.e.getenv(envName); v != "" {
		*p = strings.Fields(v)
	}
	f.fs.Func(name, fmt.Sprintf("%s (repeatable; env %s, space-separated)", help, envName), func(s string) error {
		if err := check(s); err != nil {
			return err
		}
		*p = append(*p, s)
		return nil
	})
}
