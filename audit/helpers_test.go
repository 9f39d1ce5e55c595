package audit_test

import (
	"testing"

	plctlog "github.com/plcdir/plc/tlog"
)

// Test support of the monitor and export tests beside oplog/storetest's:
// a transparency-log key.

func wtKey(t testing.TB, origin string) *plctlog.Key {
	t.Helper()
	skey, _, err := plctlog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	k, err := plctlog.ParseKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
