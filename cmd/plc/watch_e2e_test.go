package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/validate"
	"github.com/plcdir/plc/watch"
)

// TestWatchAgainstTheBinary: a webhook registered with plc watch add and a
// GET /_watch stream of plc serve both see a hostile key rotation and the
// recovery that nullifies it, with what changed; the deliveries verify
// with the key GET /_watch/key publishes; SIGTERM ends the stream with a
// Shutdown event and the server exits cleanly.
func TestWatchAgainstTheBinary(t *testing.T) {
	backends(t, func(t *testing.T, db string) {
		id := optest.NewIdentity(t, "alice.test", 2)
		attacker := optest.NewKey(t, false)
		body := id.Body
		body.Prev = id.Head.CID()
		body.RotationKeys = []string{attacker.DID}
		rotation := optest.Sign(t, body, id.Rotation[1])
		rec := id.Body
		rec.Prev = id.Head.CID()
		recovery := optest.Sign(t, rec, id.Rotation[0])

		type delivery struct{ body, ts, sig string }
		got := make(chan delivery, 10)
		recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			got <- delivery{string(b), r.Header.Get(watch.TimestampHeader), r.Header.Get(watch.SignatureHeader)}
		}))
		defer recv.Close()

		bin := plcBinary(t)
		if out, err := exec.Command(bin, "migrate", "--db", db, "up").CombinedOutput(); err != nil {
			t.Fatalf("plc migrate up: %v\n%s", err, out)
		}
		out, err := exec.Command(bin, "watch", "add", "--db", db, "--did", id.DID, "--url", recv.URL+"/hook").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "webhook 1: ") {
			t.Fatalf("plc watch add: %v\n%s", err, out)
		}
		s := startServer(t, db)
		for _, op := range []*validate.Op{id.Head, rotation} {
			if code, b, err := post(s.url, op, id.DID); err != nil || code != 200 {
				t.Fatalf("POST: %d %s %v", code, b, err)
			}
		}
		resp, err := http.Get(s.url + "/_watch?did=" + url.QueryEscape(id.DID) + "&after=1")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /_watch: %v %v", resp, err)
		}
		defer resp.Body.Close()
		rd := bufio.NewReader(resp.Body)
		event := func() (name, data string) {
			t.Helper()
			for {
				line, err := rd.ReadString('\n')
				if err != nil {
					t.Fatalf("stream: %v", err)
				}
				line = strings.TrimSpace(line)
				if line == "" && name != "" {
					return name, data
				}
				if v, ok := strings.CutPrefix(line, "event: "); ok {
					name = v
				}
				if v, ok := strings.CutPrefix(line, "data: "); ok {
					data = v
				}
			}
		}
		if code, b, err := post(s.url, recovery, id.DID); err != nil || code != 200 {
			t.Fatalf("POST the recovery: %d %s %v", code, b, err)
		}
		var stream []watch.Change
		for range 2 {
			name, data := event()
			var c watch.Change
			if name != "op" || json.Unmarshal([]byte(data), &c) != nil {
				t.Fatalf("event %s %s", name, data)
			}
			stream = append(stream, c)
		}
		if stream[0].Seq != 2 || !slices.Equal(stream[0].Changed, []string{"rotationKeys"}) ||
			stream[1].Seq != 3 || !slices.Equal(stream[1].Changed, []string{"nullified"}) || stream[1].Nullified[0].CID != rotation.CID() {
			t.Fatalf("stream: %+v", stream)
		}

		kr, err := http.Get(s.url + "/_watch/key")
		if err != nil {
			t.Fatal(err)
		}
		var key struct{ PublicKey string }
		json.NewDecoder(kr.Body).Decode(&key)
		kr.Body.Close()
		pub, err := base64.StdEncoding.DecodeString(key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []int64{1, 2, 3} {
			var d delivery
			select {
			case d = <-got:
			case <-time.After(time.Minute):
				t.Fatalf("no delivery of seq %d", want)
			}
			if err := watch.Verify(pub, d.ts, d.sig, []byte(d.body), time.Now(), time.Hour); err != nil {
				t.Fatalf("delivery %s: %v", d.body, err)
			}
			var c watch.Change
			if json.Unmarshal([]byte(d.body), &c) != nil || c.Seq != want {
				t.Fatalf("delivery %s, want seq %d", d.body, want)
			}
		}

		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if name, data := event(); name != "error" || !strings.Contains(data, `"Shutdown"`) {
			t.Fatalf("at SIGTERM: %s %s", name, data)
		}
		<-s.done
		if code := s.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("exit code %d after SIGTERM", code)
		}
	})
}

// TestWatchOnAMirror: a mirror serves GET /_watch and delivers webhooks
// for the ops it replicates, as plc serve does for those it accepts.
func TestWatchOnAMirror(t *testing.T) {
	backends(t, func(t *testing.T, db string) {
		id := optest.NewIdentity(t, "bob.test", 2)
		up := startServer(t, filepath.Join(t.TempDir(), "upstream.sqlite"))
		if code, b, err := post(up.url, id.Head, id.DID); err != nil || code != 200 {
			t.Fatalf("POST: %d %s %v", code, b, err)
		}
		got := make(chan string, 10)
		recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			got <- string(b)
		}))
		defer recv.Close()
		bin := plcBinary(t)
		if out, err := exec.Command(bin, "watch", "add", "--db", db, "--did", id.DID, "--url", recv.URL).CombinedOutput(); err != nil {
			t.Fatalf("plc watch add: %v\n%s", err, out)
		}
		m := startMirror(t, up.url, db)
		m.await(t, "mirror: following the upstream's stream")
		resp, err := http.Get(m.url + "/_watch?did=" + url.QueryEscape(id.DID) + "&after=0")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /_watch on the mirror: %v %v", resp, err)
		}
		defer resp.Body.Close()
		op := id.Update(t, nil, 1, "bob2.test")
		if code, b, err := post(up.url, op, id.DID); err != nil || code != 200 {
			t.Fatalf("POST: %d %s %v", code, b, err)
		}
		rd := bufio.NewReader(resp.Body)
		var seqs []int64
		for len(seqs) < 2 {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			if data, ok := strings.CutPrefix(strings.TrimSpace(line), "data: "); ok {
				var c watch.Change
				if err := json.Unmarshal([]byte(data), &c); err != nil {
					t.Fatal(err)
				}
				seqs = append(seqs, c.Seq)
			}
		}
		if !slices.Equal(seqs, []int64{1, 2}) {
			t.Fatalf("the mirror's stream: seqs %v, want [1 2]", seqs)
		}
		for _, want := range []string{`"changed":["created"]`, `"changed":["handle"]`} {
			select {
			case b := <-got:
				if !strings.Contains(b, want) {
					t.Fatalf("delivery %s, want %s", b, want)
				}
			case <-time.After(time.Minute):
				t.Fatalf("no delivery with %s", want)
			}
		}
	})
}
