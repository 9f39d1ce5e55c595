//go:build unix

package oplog

import (
	"os"
	"syscall"
)

// removed reports whether f's file no longer has a name (or cannot be
// examined).
func removed(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return true
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return !ok || st.Nlink == 0
}
