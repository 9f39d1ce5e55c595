package cli

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Flags binds flags to their environment fallbacks: the one way a command
// gives a flag an environment variable. A variable that is set becomes the
// flag's default (a flag on the command line wins), and the flag's help
// names it. The first variable that does not parse is kept in Err, for the
// command to report before it parses its arguments.
type Flags struct {
	fs  *flag.FlagSet
	e   Env
	Err error
}

// NewFlags binds flags of fs to the environment of e.
func NewFlags(fs *flag.FlagSet, e Env) *Flags {
	return &Flags{fs: fs, e: e}
}

// Parse parses args as ParseFlags does, after reporting Err (prefixed with
// cmd, "plc serve") as a usage error if a variable did not parse.
func (f *Flags) Parse(cmd string, args []string) (code int, done bool) {
	if f.Err != nil {
		return f.e.Failf(ExitUsage, "%s: %v", cmd, f.Err), true
	}
	return ParseFlags(f.fs, args)
}

func withEnv(help, envName string) string {
	return fmt.Sprintf("%s (env %s)", help, envName)
}

// fromEnv returns the value of the variable envName, parsed, or def when
// it is not set. A value that does not parse is kept in Err (as "not
// what") and gives parse's result.
func fromEnv[T any](f *Flags, envName string, def T, parse func(string) (T, error), what string) T {
	v := f.e.Getenv(envName)
	if v == "" {
		return def
	}
	x, err := parse(v)
	if err != nil && f.Err == nil {
		f.Err = fmt.Errorf("%s=%q: not %s", envName, v, what)
	}
	return x
}

// Str binds a string flag.
func (f *Flags) Str(p *string, name, envName, def, help string) {
	f.fs.StringVar(p, name, fromEnv(f, envName, def, func(s string) (string, error) { return s, nil }, ""), withEnv(help, envName))
}

// Float binds a float64 flag.
func (f *Flags) Float(p *float64, name, envName string, def float64, help string) {
	parse := func(s string) (float64, error) { return strconv.ParseFloat(s, 64) }
	f.fs.Float64Var(p, name, fromEnv(f, envName, def, parse, "a number"), withEnv(help, envName))
}

// Int binds an int flag.
func (f *Flags) Int(p *int, name, envName string, def int, help string) {
	f.fs.IntVar(p, name, fromEnv(f, envName, def, strconv.Atoi, "an integer"), withEnv(help, envName))
}

// Bool binds a bool flag, false unless its variable says otherwise.
func (f *Flags) Bool(p *bool, name, envName string, help string) {
	f.fs.BoolVar(p, name, fromEnv(f, envName, false, strconv.ParseBool, "a boolean"), withEnv(help, envName))
}

// Duration binds a time.Duration flag.
func (f *Flags) Duration(p *time.Duration, name, envName string, def time.Duration, help string) {
	f.fs.DurationVar(p, name, fromEnv(f, envName, def, time.ParseDuration, "a duration"), withEnv(help, envName))
}

// List binds a repeatable flag; the environment variable holds
// space-separated values. check vets each value given on the command line.
func (f *Flags) List(p *[]string, name, envName, help string, check func(string) error) {
	if v := f.e.Getenv(envName); v != "" {
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

// DefaultDB is the embedded store's file, created on first start.
const DefaultDB = "./plc-data/plc.sqlite"

// DB binds --db (PLC_DB), the database of every command that opens one.
func (f *Flags) DB(p *string) {
	f.Str(p, "db", "PLC_DB", DefaultDB, "database: a postgres:// URL or an SQLite file path")
}
