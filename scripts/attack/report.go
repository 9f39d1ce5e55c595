package main

import (
	"fmt"
	"io"
	"sync"
)

// report collects the checks of every mode and prints them as they come.
type report struct {
	mu                   sync.Mutex
	out                  io.Writer
	passed, failed, skip int
	failures             []string
}

// modeReport is one mode's view of the report.
type modeReport struct {
	r    *report
	name string
}

func (r *report) mode(name string) *modeReport { return &modeReport{r: r, name: name} }

func (m *modeReport) line(tag, check, format string, args ...any) {
	m.r.mu.Lock()
	defer m.r.mu.Unlock()
	fmt.Fprintf(m.r.out, "   %-5s %s/%s: %s\n", tag, m.name, check, fmt.Sprintf(format, args...))
}

// pass records a check that held.
func (m *modeReport) pass(check, format string, args ...any) {
	m.r.mu.Lock()
	m.r.passed++
	m.r.mu.Unlock()
	m.line("ok", check, format, args...)
}

// fail records a check that did not hold.
func (m *modeReport) fail(check, format string, args ...any) {
	m.r.mu.Lock()
	m.r.failed++
	m.r.failures = append(m.r.failures, m.name+"/"+check+": "+fmt.Sprintf(format, args...))
	m.r.mu.Unlock()
	m.line("FAIL", check, format, args...)
}

// check records pass or fail by ok.
func (m *modeReport) check(ok bool, check, format string, args ...any) bool {
	if ok {
		m.pass(check, format, args...)
	} else {
		m.fail(check, format, args...)
	}
	return ok
}

// skipped records a check that could not run here, and why.
func (m *modeReport) skipped(check, format string, args ...any) {
	m.r.mu.Lock()
	m.r.skip++
	m.r.mu.Unlock()
	m.line("skip", check, format, args...)
}

// figure records a measurement (not a check).
func (m *modeReport) figure(name, format string, args ...any) {
	m.line("fig", name, format, args...)
}

// summary prints the totals and returns the exit status.
func (r *report) summary() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.out, "\nattack: %d passed, %d failed, %d skipped\n", r.passed, r.failed, r.skip)
	for _, f := range r.failures {
		fmt.Fprintf(r.out, "  failed: %s\n", f)
	}
	if r.failed > 0 {
		return 1
	}
	return 0
}
