package oplog

import "database/sql"

// SetQueuedHook sets a function Submit calls after it has queued an op
// (nil: none), so tests can fill one batch deterministically.
func SetQueuedHook(f func()) { testHookQueued = f }

// NewWALProbeForTest returns the SQLite store's change probe over the
// WAL-index file at shmPath.
func NewWALProbeForTest(shmPath string) ChangeProbe { return &walProbe{path: shmPath} }

// SetHeadsPerQuery sets how many DIDs one query of Heads looks up, until
// the test ends.
func SetHeadsPerQuery(t interface{ Cleanup(func()) }, n int) {
	old := headsPerQuery
	headsPerQuery = n
	t.Cleanup(func() { headsPerQuery = old })
}

// WriteDB returns the handle of the SQLite store's write connection.
func (s *SQLiteStore) WriteDB() *sql.DB { return s.w }
