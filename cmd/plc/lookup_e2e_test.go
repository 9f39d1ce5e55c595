package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/plcdir/plc/internal/optest"
)

// TestBulkResolveAndHandleLookupAgainstTheBinary: POST /dids and GET
// /_lookup/handle/… of plc serve, on both backends: every kind of line in
// the request's order, documents as GET /:did answers them, and a handle
// claimed by the DIDs whose current document lists it only.
func TestBulkResolveAndHandleLookupAgainstTheBinary(t *testing.T) {
	backends(t, func(t *testing.T, db string) {
		s := startServer(t, db)
		live := optest.NewIdentity(t, "alice.test", 1)
		moved := optest.NewIdentity(t, "alice.test", 1)
		gone := optest.NewIdentity(t, "alice.test", 1)
		for _, id := range []*optest.Identity{live, moved, gone} {
			if code, body, err := post(s.url, id.Head, id.DID); err != nil || code != 200 {
				t.Fatalf("genesis: %d %s %v", code, body, err)
			}
		}
		if code, body, err := post(s.url, moved.Update(t, nil, 0, "bob.test"), moved.DID); err != nil || code != 200 {
			t.Fatalf("update: %d %s %v", code, body, err)
		}
		if code, body, err := post(s.url, gone.Tombstone(t, nil, 0), gone.DID); err != nil || code != 200 {
			t.Fatalf("tombstone: %d %s %v", code, body, err)
		}
		get := func(path string) (int, string) {
			t.Helper()
			resp, err := http.Get(s.url + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		_, liveDoc := get("/" + live.DID)
		_, movedDoc := get("/" + moved.DID)
		unknown := "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
		body := fmt.Sprintf(`{"dids": [%q, %q, %q, %q, %q]}`, gone.DID, live.DID, unknown, moved.DID, live.DID)
		resp, err := http.Post(s.url+"/dids", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf(`{"did":%q,"document":null,"tombstoned":true}
{"did":%q,"document":%s}
{"did":%q,"document":null,"notFound":true}
{"did":%q,"document":%s}
{"did":%q,"document":%s}
`, gone.DID, live.DID, liveDoc, unknown, moved.DID, movedDoc, live.DID, liveDoc)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/jsonlines" || string(got) != want {
			t.Fatalf("POST /dids: %d %s\n%s\nwant\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), got, want)
		}
		resp, err = http.Post(s.url+"/dids", "application/json", strings.NewReader(`{"dids": ["did:web:example.com"]}`))
		if err != nil {
			t.Fatal(err)
		}
		got, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !bytes.Contains(got, []byte(`Invalid DID at dids[0]`)) {
			t.Fatalf("POST /dids of a did:web: %d %s", resp.StatusCode, got)
		}

		code, lookup := get("/_lookup/handle/Alice.Test")
		var claims struct {
			Handle string
			Claims []struct{ DID, PDS string }
		}
		if err := json.Unmarshal([]byte(lookup), &claims); err != nil || code != 200 {
			t.Fatalf("lookup: %d %s %v", code, lookup, err)
		}
		if claims.Handle != "alice.test" || len(claims.Claims) != 1 || claims.Claims[0].DID != live.DID || claims.Claims[0].PDS != "https://pds.example.com" {
			t.Fatalf("alice.test is claimed by %s only now (bob.test moved, the other is tombstoned): %s", live.DID, lookup)
		}
		if code, msg := get("/_lookup/handle/not_a_handle"); code != 400 || msg != `{"message":"Not a handle: \"not_a_handle\""}` {
			t.Fatalf("bad handle: %d %s", code, msg)
		}
	})
}
