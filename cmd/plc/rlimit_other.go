//go:build !unix

package main

// systemFileLimit reports no limit where the platform has no RLIMIT_NOFILE.
func systemFileLimit() (uint64, bool) { return 0, false }
