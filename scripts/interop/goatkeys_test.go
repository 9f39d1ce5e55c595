package interop

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// goat and plc share key files: a key goat generates is a rotation key
// plc op signs a DID's genesis with (a DID plc serve accepts, whose
// history goat then reads), and goat reads a key plc keygen wrote as the
// same did:key plc printed.
func TestGoatAndPlcShareKeyFiles(t *testing.T) {
	bin := bins(t)
	dir := t.TempDir()
	addr := freePort(t)
	servePLC(t, bin, dir, addr)
	url := "http://" + addr
	goat, plcBin := filepath.Join(bin, "goat"), filepath.Join(bin, "plc")

	for _, typ := range []string{"k256", "p256"} {
		// plc keygen → goat crypto inspect.
		keyFile := filepath.Join(dir, "plc-"+typ+".key")
		didKey := strings.TrimSpace(run(t, dir, plcBin, "keygen", "--type", typ, "--out", keyFile))
		secret, err := os.ReadFile(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		if out := run(t, dir, goat, "crypto", "inspect", strings.TrimSpace(string(secret))); !strings.Contains(out, "Public (DID Key): "+didKey) {
			t.Fatalf("goat crypto inspect of plc keygen --type %s's key (%s):\n%s", typ, didKey, out)
		}

		// goat crypto generate → plc op genesis → plc serve → goat plc history.
		goatKey := filepath.Join(dir, "goat-"+typ+".key")
		if err := os.WriteFile(goatKey, []byte(run(t, dir, goat, "crypto", "generate", "--type", typ)), 0o600); err != nil {
			t.Fatal(err)
		}
		var printed struct {
			DID string `json:"did"`
			CID string `json:"cid"`
		}
		out := run(t, dir, plcBin, "op", "genesis", "--rotation-key", goatKey, "--handle", "goat-"+typ+".test", "--directory", url)
		if err := json.Unmarshal([]byte(out), &printed); err != nil {
			t.Fatalf("plc op genesis printed %s: %v", out, err)
		}
		history := goatJSON(t, run(t, dir, goat, "plc", "--plc-directory", url, "history", printed.DID))
		if len(history) != 1 {
			t.Fatalf("goat plc history %s: %v", printed.DID, history)
		}
	}
}
