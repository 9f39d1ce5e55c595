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

func (f *Flags) fail(format string, args ...any) {
	if f.Err == nil {
		f.Err = fmt.Errorf(format, args...)
	}
}

func withEnv(help, envName string) string {
	return fmt.Sprintf("%s (env %s)", help, envName)
}

// Str binds a string flag.
func (f *Flags) Str(p *string, name, envName, def, help string) {
	if v := f.e.Getenv(envName); v != "" {
		def = v
	}
	f.fs.StringVar(p, name, def, withEnv(help, envName))
}

// Float binds a float64 flag.
func (f *Flags) Float(p *float64, name, envName string, def float64, help string) {
	if v := f.e.Getenv(envName); v != "" {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			f.fail("%s=%q: not a number", envName, v)
		}
		def = n
	}
	f.fs.Float64Var(p, name, def, withEnv(help, envName))
}

// Int binds an int flag.
func (f *Flags) Int(p *int, name, envName string, def int, help string) {
	if v := f.e.Getenv(envName); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			f.fail("%s=%q: not an integer", envName, v)
		}
		def = n
	}
	f.fs.IntVar(p, name, def, withEnv(help, envName))
}

// Bool binds a bool flag, false unless its variable says otherwise.
func (f *Flags) Bool(p *bool, name, envName string, help string) {
	def := false
	if v := f.e.Getenv(envName); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.fail("%s=%q: not a boolean", envName, v)
		}
		def = b
	}
	f.fs.BoolVar(p, name, def, withEnv(help, envName))
}

// Duration binds a time.Duration flag.
func (f *Flags) Duration(p *time.Duration, name, envName string, def time.Duration, help string) {
	if v := f.e.Getenv(envName); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.fail("%s=%q: not a duration", envName, v)
		}
		def = d
	}
	f.fs.DurationVar(p, name, def, withEnv(help, envName))
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
