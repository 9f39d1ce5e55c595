package watch_test

import (
	"os"
	"runtime"
)

func runtimeGosched() { runtime.Gosched() }

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }
