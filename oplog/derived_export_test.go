package oplog

// SetCheckPage sets the ops CheckDerived reads per query, for tests of
// DIDs that span pages; it returns the function that restores it.
func SetCheckPage(n int) func() {
	old := checkPage
	checkPage = n
	return func() { checkPage = old }
}
