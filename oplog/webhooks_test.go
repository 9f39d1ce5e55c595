package oplog_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/pgtest"
	"github.com/plcdir/plc/oplog"
)

func TestSQLiteWebhooks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plc.db")
	if _, err := oplog.MigrateUp(path); err != nil {
		t.Fatal(err)
	}
	testWebhooks(t, reopen(t, path))
}

func TestPostgresWebhooks(t *testing.T) {
	url := pgtest.URL(t)
	if _, err := oplog.MigrateUp(url); err != nil {
		t.Fatal(err)
	}
	testWebhooks(t, reopen(t, url))
}

func testWebhooks(t *testing.T, s oplog.Store) {
	ctx := context.Background()
	ws, ok := oplog.WebhooksOf(s)
	if !ok {
		t.Fatal("the store keeps no webhooks")
	}
	k := keys(t, 2)
	g := genesis(t, "a.test", k[0], k[1])
	did := g.GenesisDID()
	appendOps(t, s, gen(g, at(time.Second)))

	now := at(time.Minute)
	a, err := ws.AddWebhook(ctx, did, "https://a.example/hook", 2, 3, now)
	if err != nil {
		t.Fatal(err)
	}
	if a.Cursor != 1 || a.DID != did || !a.CreatedAt.Equal(now) || a.Disabled || a.Failures != 0 {
		t.Fatalf("added %+v: want the cursor at the latest seq (1)", a)
	}
	if _, err := ws.AddWebhook(ctx, did, "https://a.example/hook", 2, 3, now); !errors.Is(err, oplog.ErrWebhookExists) {
		t.Fatalf("the same URL twice: %v, want ErrWebhookExists", err)
	}
	if _, err := ws.AddWebhook(ctx, did, "https://b.example/hook", 2, 3, now); err != nil {
		t.Fatal(err)
	}
	if _, err := ws.AddWebhook(ctx, did, "https://c.example/hook", 2, 3, now); !errors.Is(err, oplog.ErrWebhookLimit) {
		t.Fatalf("a third webhook of one DID (limit 2): %v, want ErrWebhookLimit", err)
	}
	other := "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
	if _, err := ws.AddWebhook(ctx, other, "https://c.example/hook", 2, 3, now); err != nil {
		t.Fatal(err)
	}
	if _, err := ws.AddWebhook(ctx, "did:plc:cccccccccccccccccccccccc", "https://c.example/hook", 2, 3, now); !errors.Is(err, oplog.ErrWebhookLimit) {
		t.Fatalf("a fourth webhook (total 3): %v, want ErrWebhookLimit", err)
	}

	// The cursor only moves forward; the last error is kept, bounded and
	// valid UTF-8.
	long := strings.Repeat("é", 400)
	if err := ws.SaveWebhook(ctx, a.ID, 7, 3, true, long); err != nil {
		t.Fatal(err)
	}
	if err := ws.SaveWebhook(ctx, a.ID, 5, 3, true, long); err != nil {
		t.Fatal(err)
	}
	all, err := ws.Webhooks(ctx)
	if err != nil || len(all) != 3 {
		t.Fatalf("Webhooks: %d, %v; want 3", len(all), err)
	}
	got := all[0]
	if got.ID != a.ID || got.Cursor != 7 || got.Failures != 3 || !got.Disabled || len(got.LastError) > 500 || !strings.HasPrefix(got.LastError, "éé") {
		t.Fatalf("after saves: %+v", got)
	}
	if err := ws.EnableWebhook(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	all, _ = ws.Webhooks(ctx)
	if all[0].Disabled || all[0].Failures != 0 || all[0].Cursor != 7 {
		t.Fatalf("enabled: %+v; want the cursor kept", all[0])
	}
	if err := ws.RemoveWebhook(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := ws.RemoveWebhook(ctx, a.ID); !errors.Is(err, oplog.ErrNotFound) {
		t.Fatalf("removing twice: %v, want ErrNotFound", err)
	}
	if err := ws.SaveWebhook(ctx, a.ID, 9, 0, false, ""); !errors.Is(err, oplog.ErrNotFound) {
		t.Fatalf("saving a removed webhook: %v, want ErrNotFound", err)
	}
	if err := ws.EnableWebhook(ctx, a.ID); !errors.Is(err, oplog.ErrNotFound) {
		t.Fatalf("enabling a removed webhook: %v, want ErrNotFound", err)
	}

	// One holder of the delivery lease at a time, until it expires or is
	// released.
	lease := func(holder string, at time.Duration, want bool) {
		t.Helper()
		got, err := ws.LeaseWebhooks(ctx, holder, now.Add(at), 30*time.Second)
		if err != nil || got != want {
			t.Fatalf("lease for %s at +%s: %v, %v; want %v", holder, at, got, err, want)
		}
	}
	lease("p1", 0, true)
	lease("p2", time.Second, false)
	lease("p1", 20*time.Second, true) // renewed: now until +50s
	lease("p2", 40*time.Second, false)
	lease("p2", 51*time.Second, true) // p1's expired
	lease("p1", 52*time.Second, false)
	if err := ws.ReleaseWebhooks(ctx, "p1"); err != nil { // not the holder: nothing
		t.Fatal(err)
	}
	lease("p1", 53*time.Second, false)
	if err := ws.ReleaseWebhooks(ctx, "p2"); err != nil {
		t.Fatal(err)
	}
	lease("p1", 54*time.Second, true)
}
