package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func testEnv(vars map[string]string, stderr *bytes.Buffer) Env {
	return Env{Stdin: strings.NewReader(""), Stdout: stderr, Stderr: stderr, Getenv: func(k string) string { return vars[k] }}
}

// TestFlagsEnvironmentIsTheDefaultTheCommandLineWins: a variable that is
// set replaces the built-in default, a flag given on the command line
// replaces both, and -h names every variable.
func TestFlagsEnvironmentIsTheDefaultTheCommandLineWins(t *testing.T) {
	var out bytes.Buffer
	e := testEnv(map[string]string{"T_STR": "env", "T_INT": "7", "T_DUR": "2s", "T_BOOL": "true", "T_LIST": "a b"}, &out)
	fs := NewFlagSet("t", "t [flags]", "A test.", e)
	f := NewFlags(fs, e)
	var (
		s    string
		n    int
		fl   float64
		d    time.Duration
		b    bool
		list []string
	)
	f.Str(&s, "str", "T_STR", "def", "a string")
	f.Int(&n, "int", "T_INT", 1, "an int")
	f.Float(&fl, "float", "T_FLOAT", 0.5, "a float")
	f.Duration(&d, "dur", "T_DUR", time.Second, "a duration")
	f.Bool(&b, "bool", "T_BOOL", "a bool")
	f.List(&list, "item", "T_LIST", "an item", func(string) error { return nil })
	if f.Err != nil {
		t.Fatal(f.Err)
	}
	if code, done := ParseFlags(fs, []string{"--int", "9", "--item", "c"}); done {
		t.Fatalf("ParseFlags: %d", code)
	}
	if s != "env" || n != 9 || fl != 0.5 || d != 2*time.Second || !b || strings.Join(list, " ") != "a b c" {
		t.Errorf("got %q %d %v %v %v %q", s, n, fl, d, b, list)
	}
	out.Reset()
	if code, done := ParseFlags(fs, []string{"-h"}); !done || code != ExitOK {
		t.Errorf("-h: %d %v", code, done)
	}
	for _, v := range []string{"T_STR", "T_INT", "T_FLOAT", "T_DUR", "T_BOOL", "T_LIST"} {
		if !strings.Contains(out.String(), "env "+v) {
			t.Errorf("-h does not name %s:\n%s", v, out.String())
		}
	}
}

// TestFlagsReportTheFirstUnparsableVariable: a variable that does not
// parse is an error the command reports before it parses its arguments.
func TestFlagsReportTheFirstUnparsableVariable(t *testing.T) {
	var out bytes.Buffer
	e := testEnv(map[string]string{"T_INT": "seven", "T_DUR": "soon"}, &out)
	f := NewFlags(NewFlagSet("t", "t", "A test.", e), e)
	var n int
	var d time.Duration
	f.Int(&n, "int", "T_INT", 1, "an int")
	f.Duration(&d, "dur", "T_DUR", time.Second, "a duration")
	if f.Err == nil || f.Err.Error() != `T_INT="seven": not an integer` {
		t.Errorf("Err = %v", f.Err)
	}
}
