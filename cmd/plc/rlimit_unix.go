//go:build unix

package main

import "syscall"

// systemFileLimit returns the process's soft limit on open files (an unlimited
// one as a very large number).
func systemFileLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return uint64(rl.Cur), true
}
