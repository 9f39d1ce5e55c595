package main

import (
	"context"
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets the scripts run "plc" as a real command, in-process.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"plc": func() {
			os.Exit(run(context.Background(), os.Args[1:], env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}))
		},
	})
}

// TestScripts runs the CLI scripts in testdata/script. $VECTORS is the
// repository's interop vectors.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(e *testscript.Env) error {
			wd, err := os.Getwd()
			if err != nil {
				return err
			}
			e.Setenv("VECTORS", wd+"/../../testdata")
			return nil
		},
	})
}
