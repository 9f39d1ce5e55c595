package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/internal/pgtest"
	"github.com/plcdir/plc/oplog"
)

// TestFloorReadsEachDIDBeforeAnsweringTheFixedBody: plc bench static --db
// answers the fixed body only for a DID the database holds, after reading
// it; a DID it does not hold is a 404, a path that is not a DID a 400, and
// a read that fails (the database closed) a 503, never the body.
func TestFloorReadsEachDIDBeforeAnsweringTheFixedBody(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testFloor(t, filepath.Join(t.TempDir(), "floor.sqlite")) })
	t.Run("postgres", func(t *testing.T) { testFloor(t, pgtest.URL(t)) })
}

func testFloor(t *testing.T, path string) {
	ctx := context.Background()
	store, _, err := oplog.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	id := optest.NewIdentity(t, "floor.test", 1)
	if _, err := oplog.NewLog(store, oplog.Options{NoRateLimit: true}).Submit(ctx, id.DID, id.Head); err != nil {
		t.Fatal(err)
	}
	store.Close()

	read, closeDB, err := latestOpReader(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	body := staticBody(staticBodySize)
	h := floorHandler(read, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	get := func(target string) (int, string) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
		return w.Code, w.Body.String()
	}
	if code, got := get("/" + id.DID); code != http.StatusOK || got != string(body) {
		t.Fatalf("GET a held DID: %d %q, want 200 and the fixed body", code, got)
	}
	other := optest.NewIdentity(t, "elsewhere.test", 1)
	if code, got := get("/" + other.DID); code != http.StatusNotFound || got == string(body) {
		t.Fatalf("GET a DID the database does not hold: %d %q, want 404", code, got)
	}
	if code, _ := get("/not-a-did"); code != http.StatusBadRequest {
		t.Fatalf("GET a path that is not a DID: %d, want 400", code)
	}
	closeDB()
	if code, got := get("/" + id.DID); code != http.StatusServiceUnavailable || got == string(body) {
		t.Fatalf("GET after the database closed: %d %q, want 503", code, got)
	}
}
