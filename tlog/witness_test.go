package tlog_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	sumdb "golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/tlog"
)

// wtRound runs one round of tl.Run: sign, then ask the witnesses.
func wtRound(t *testing.T, s oplog.Store, key *tlog.Key, logs io.Writer, ws ...*tlog.Witness) *tlog.TLog {
	t.Helper()
	stop := errors.New("stop")
	tl := tlog.New(s, key, tlog.Options{
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Witnesses: ws,
		Interval:  time.Nanosecond, // sign whenever the log grew
		Wait:      func(context.Context, time.Duration) error { return stop },
	})
	tl.Run(context.Background(), nil)
	return tl
}

// testWitness is a C2SP tlog-witness: it knows one log's key, keeps the
// latest size and root it cosigned per origin, and checks what
// tlog-witness says a witness checks, the consistency proof with an
// implementation independent of the log's (transparency-dev/merkle).
type testWitness struct {
	t    *testing.T
	name string
	priv ed25519.PrivateKey
	vkey string
	hash uint32
	log  note.Verifier
	srv  *httptest.Server

	mu       sync.Mutex
	state    map[string]wtState
	requests []wtRequest
	// mode: "" answers per the spec; "badsig" corrupts its signature;
	// "stranger" signs with another key.
	mode string
	// before, if set, runs before a cosignature is returned.
	before func()

	// signer, if set, signs instead of priv: an ML-DSA-44 witness.
	signer *tlog.Cosigner
}

type wtState struct {
	size int64
	root sumdb.Hash
}

type wtRequest struct {
	old    int64
	proof  int // hashes
	size   int64
	status int
}

func newTestWitness(t *testing.T, name string, logVKey string) *testWitness {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	lv, err := tlog.NewVerifier(logVKey)
	if err != nil {
		t.Fatal(err)
	}
	w := &testWitness{t: t, name: name, priv: priv, log: lv, state: map[string]wtState{}}
	w.vkey, w.hash = wtCosignerVKey(name, pub)
	w.srv = httptest.NewServer(w)
	t.Cleanup(w.srv.Close)
	return w
}

// wtCosignerVKey encodes a tlog-cosignature key as a vkey, computing the
// key ID as the spec says.
func wtCosignerVKey(name string, pub ed25519.PublicKey) (vkey string, hash uint32) {
	key := append([]byte{0x04}, pub...)
	sum := sha256.Sum256(append([]byte(name+"\n"), key...))
	hash = binary.BigEndian.Uint32(sum[:4])
	return fmt.Sprintf("%s+%08x+%s", name, hash, base64.StdEncoding.EncodeToString(key)), hash
}

// flag returns the --witness form of the witness.
func (w *testWitness) flag() string { return w.srv.URL + "=" + w.vkey }

func (w *testWitness) witness(t *testing.T) *tlog.Witness {
	t.Helper()
	aw, err := tlog.ParseWitness(w.flag())
	if err != nil {
		t.Fatal(err)
	}
	return aw
}

func (w *testWitness) Name() string    { return w.name }
func (w *testWitness) KeyHash() uint32 { return w.hash }

// Sign makes a cosignature/v1 timestamped_signature over msg.
func (w *testWitness) Sign(msg []byte) ([]byte, error) {
	if w.signer != nil {
		return w.signer.Sign(msg)
	}
	ts := uint64(time.Now().Unix())
	signed := fmt.Appendf(nil, "cosignature/v1\ntime %d\n%s", ts, msg)
	sig := binary.BigEndian.AppendUint64(nil, ts)
	return append(sig, ed25519.Sign(w.priv, signed)...), nil
}

func (w *testWitness) reqs() []wtRequest {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]wtRequest(nil), w.requests...)
}

func (w *testWitness) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/add-checkpoint" {
		http.Error(rw, "not found", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	status, answer, ctype := w.add(body)
	w.mu.Lock()
	before := w.before
	w.before = nil
	w.mu.Unlock()
	if status == http.StatusOK && before != nil {
		before()
	}
	if ctype != "" {
		rw.Header().Set("Content-Type", ctype)
	}
	rw.WriteHeader(status)
	rw.Write(answer)
}

func (w *testWitness) add(body []byte) (status int, answer []byte, ctype string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	req := wtRequest{old: -1}
	defer func() {
		req.status = status
		w.requests = append(w.requests, req)
	}()
	bad := func(code int, msg string) (int, []byte, string) { return code, []byte(msg + "\n"), "text/plain" }
	sc := bufio.NewScanner(bytes.NewReader(body))
	var consumed int
	line := func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		consumed += len(sc.Bytes()) + 1
		return sc.Text(), true
	}
	first, ok := line()
	oldStr, isOld := strings.CutPrefix(first, "old ")
	old, err := strconv.ParseInt(oldStr, 10, 64)
	if !ok || !isOld || err != nil || old < 0 || strconv.FormatInt(old, 10) != oldStr {
		return bad(http.StatusBadRequest, "no old size line")
	}
	req.old = old
	var pf [][]byte
	for {
		l, ok := line()
		if !ok {
			return bad(http.StatusBadRequest, "no checkpoint")
		}
		if l == "" {
			break
		}
		h, err := base64.StdEncoding.DecodeString(l)
		if err != nil || len(h) != 32 {
			return bad(http.StatusBadRequest, "bad proof line")
		}
		pf = append(pf, h)
	}
	req.proof = len(pf)
	if len(pf) > 63 {
		return bad(http.StatusBadRequest, "too many proof lines")
	}
	n, err := note.Open(body[consumed:], note.VerifierList(w.log))
	if err != nil {
		var unknown *note.UnverifiedNoteError
		if errors.As(err, &unknown) {
			return bad(http.StatusForbidden, "not signed by a known log key")
		}
		return bad(http.StatusBadRequest, "bad checkpoint: "+err.Error())
	}
	cp, err := plc.ParseCheckpointBody(n.Text)
	if err != nil {
		return bad(http.StatusBadRequest, err.Error())
	}
	if cp.Origin != w.log.Name() {
		return bad(http.StatusNotFound, "unknown log")
	}
	req.size = cp.Size
	if old > cp.Size {
		return bad(http.StatusBadRequest, "old size beyond the checkpoint")
	}
	st := w.state[cp.Origin]
	if old != st.size {
		return http.StatusConflict, []byte(strconv.FormatInt(st.size, 10) + "\n"), "text/x.sumdb.size"
	}
	switch {
	case old == 0:
		if len(pf) != 0 {
			return bad(http.StatusBadRequest, "a proof from size 0")
		}
	case old == cp.Size:
		if cp.Root != st.root {
			return http.StatusConflict, []byte(strconv.FormatInt(st.size, 10) + "\n"), "text/x.sumdb.size"
		}
	default:
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(old), uint64(cp.Size), pf, st.root[:], cp.Root[:]); err != nil {
			return bad(http.StatusUnprocessableEntity, "consistency proof: "+err.Error())
		}
	}
	w.state[cp.Origin] = wtState{cp.Size, cp.Root}
	var signer note.Signer = w
	if w.mode == "stranger" {
		other := newTestWitnessKey(w.t, w.name)
		signer = other
	}
	signed, err := note.Sign(&note.Note{Text: n.Text}, signer)
	if err != nil {
		return bad(http.StatusInternalServerError, err.Error())
	}
	sig := signed[bytes.LastIndex(signed, []byte("\n\n"))+2:]
	if w.mode == "badsig" {
		_, b64, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(string(sig), "— "), "\n"), " ")
		raw, _ := base64.StdEncoding.DecodeString(b64)
		raw[len(raw)-1] ^= 1
		sig = fmt.Appendf(nil, "— %s %s\n", w.name, base64.StdEncoding.EncodeToString(raw))
	}
	return http.StatusOK, sig, "text/plain; charset=utf-8"
}

// newTestWitnessKey is a signer of another key under the same name.
func newTestWitnessKey(t *testing.T, name string) *testWitness {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	w := &testWitness{t: t, name: name, priv: priv}
	w.vkey, w.hash = wtCosignerVKey(name, priv.Public().(ed25519.PublicKey))
	return w
}

// wtCosigners returns the names of the witnesses whose cosignatures in
// the stored checkpoint verify, checked by hand as tlog-cosignature says
// (independently of audit's verifier), after the log's own signature.
func wtCosigners(t *testing.T, s oplog.Store, key *tlog.Key, ws ...*testWitness) (oplog.Checkpoint, []string) {
	t.Helper()
	cp, err := s.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	body, n, err := tlog.OpenCheckpoint(cp.Note, key.Verifier)
	if err != nil || body.Size != cp.Size || body.Root != cp.Root {
		t.Fatalf("stored checkpoint: %+v, %v", body, err)
	}
	var names []string
	sigs := string(cp.Note[len(n.Text)+1:])
	for _, l := range strings.Split(strings.TrimSuffix(sigs, "\n"), "\n") {
		name, b64, _ := strings.Cut(strings.TrimPrefix(l, "— "), " ")
		if name == key.Origin() {
			continue
		}
		if w := wtByName(ws, name); w != nil && w.signer != nil {
			wtCheckMLDSALine(t, w, n.Text, l) // checked by hand there
			names = append(names, name)
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(raw) != 4+8+64 {
			t.Fatalf("cosignature line %q", l)
		}
		for _, w := range ws {
			if w.name != name {
				continue
			}
			if binary.BigEndian.Uint32(raw) != w.KeyHash() {
				t.Fatalf("cosignature line %q: key ID %x, want %x", l, raw[:4], w.KeyHash())
			}
			ts := binary.BigEndian.Uint64(raw[4:12])
			msg := fmt.Sprintf("cosignature/v1\ntime %d\n%s", ts, n.Text)
			if !ed25519.Verify(w.priv.Public().(ed25519.PublicKey), []byte(msg), raw[12:]) {
				t.Fatalf("cosignature line %q does not verify", l)
			}
			names = append(names, name)
		}
	}
	// audit's verifier agrees.
	var vs []note.Verifier
	for _, w := range ws {
		v, err := tlog.NewCosignatureVerifier(w.vkey)
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	if len(names) > 0 {
		n2, err := note.Open(cp.Note, note.VerifierList(vs...))
		if err != nil || len(n2.Sigs) != len(names) {
			t.Fatalf("note.Open with the witnesses' verifiers: %v (%d sigs, want %d)", err, len(n2.Sigs), len(names))
		}
	}
	return cp, names
}

func TestWitnessCosignsEachCheckpoint(t *testing.T) {
	lines := storetest.Corpus(t, 21, 500)
	s, _ := storetest.SQLite(t)
	key := newKey(t, "plc.test")
	w1 := newTestWitness(t, "w1.example/witness", key.VKey)
	w2 := newTestWitness(t, "w2.example/witness", key.VKey)
	aw1, aw2 := w1.witness(t), w2.witness(t)
	var logs storetest.Buffer

	storetest.Load(t, s, lines[:300])
	wtRound(t, s, key, &logs, aw1, aw2)
	cp, names := wtCosigners(t, s, key, w1, w2)
	if cp.Size != 300 || len(names) != 2 {
		t.Fatalf("checkpoint of size %d cosigned by %v, want 300 by both\n%s", cp.Size, names, logs.String())
	}
	for _, w := range []*testWitness{w1, w2} {
		if got := w.reqs(); len(got) != 1 || got[0] != (wtRequest{old: 0, proof: 0, size: 300, status: 200}) {
			t.Fatalf("%s saw %+v", w.name, got)
		}
	}

	// The log grows: each witness is sent a consistency proof from the
	// size it cosigned, which it verifies before cosigning.
	storetest.Load(t, s, lines[300:])
	tl := wtRound(t, s, key, &logs, aw1, aw2)
	cp, names = wtCosigners(t, s, key, w1, w2)
	if cp.Size != 500 || len(names) != 2 {
		t.Fatalf("checkpoint of size %d cosigned by %v, want 500 by both\n%s", cp.Size, names, logs.String())
	}
	for _, w := range []*testWitness{w1, w2} {
		got := w.reqs()
		if len(got) != 2 || got[1].old != 300 || got[1].size != 500 || got[1].proof == 0 || got[1].status != 200 {
			t.Fatalf("%s saw %+v", w.name, got)
		}
	}
	// The cosigned checkpoint is what the log serves.
	srv := httptest.NewServer(tl)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/tlog/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(served, cp.Note) {
		t.Fatalf("served checkpoint:\n%s\nstored:\n%s", served, cp.Note)
	}
}

func TestWitnessConflictIsRetriedFromTheWitnessSize(t *testing.T) {
	lines := storetest.Corpus(t, 21, 500)
	s, _ := storetest.SQLite(t)
	key := newKey(t, "plc.test")
	w := newTestWitness(t, "w.example/witness", key.VKey)
	var logs storetest.Buffer
	storetest.Load(t, s, lines[:200])
	wtRound(t, s, key, &logs, w.witness(t))

	// The log restarts: it no longer knows what the witness cosigned, asks
	// from 0, and is told 200.
	storetest.Load(t, s, lines[200:450])
	wtRound(t, s, key, &logs, w.witness(t))
	got := w.reqs()
	want := []wtRequest{{old: 0, size: 200, status: 200}, {old: 0, size: 450, status: 409}}
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] ||
		got[2].old != 200 || got[2].size != 450 || got[2].proof == 0 || got[2].status != 200 {
		t.Fatalf("the witness saw %+v\n%s", got, logs.String())
	}
	if cp, names := wtCosigners(t, s, key, w); cp.Size != 450 || len(names) != 1 {
		t.Fatalf("checkpoint of size %d cosigned by %v\n%s", cp.Size, names, logs.String())
	}
}

func TestWitnessBadCosignaturesAreNotPublished(t *testing.T) {
	for _, mode := range []string{"badsig", "stranger"} {
		t.Run(mode, func(t *testing.T) {
			s, _ := storetest.SQLite(t)
			key := newKey(t, "plc.test")
			w := newTestWitness(t, "w.example/witness", key.VKey)
			w.mu.Lock()
			w.mode = mode
			w.mu.Unlock()
			good := newTestWitness(t, "good.example/witness", key.VKey)
			var logs storetest.Buffer
			storetest.Load(t, s, storetest.Corpus(t, 21, 50))
			wtRound(t, s, key, &logs, w.witness(t), good.witness(t))
			cp, names := wtCosigners(t, s, key, good)
			if cp.Size != 50 || len(names) != 1 || names[0] != good.name {
				t.Fatalf("checkpoint of size %d cosigned by %v", cp.Size, names)
			}
			if strings.Contains(string(cp.Note), w.name) {
				t.Fatalf("the bad witness's line was published:\n%s", cp.Note)
			}
			if !strings.Contains(logs.String(), "did not cosign") || !strings.Contains(logs.String(), w.name) {
				t.Fatalf("no error logged for the bad witness:\n%s", logs.String())
			}
		})
	}
}

func TestWitnessDownLeavesTheCheckpoint(t *testing.T) {
	s, _ := storetest.SQLite(t)
	key := newKey(t, "plc.test")
	w := newTestWitness(t, "w.example/witness", key.VKey)
	w.srv.Close()
	var logs storetest.Buffer
	storetest.Load(t, s, storetest.Corpus(t, 21, 40))
	wtRound(t, s, key, &logs, w.witness(t))
	cp, names := wtCosigners(t, s, key, w)
	if cp.Size != 40 || len(names) != 0 {
		t.Fatalf("checkpoint of size %d cosigned by %v", cp.Size, names)
	}
	if n, err := note.Open(cp.Note, note.VerifierList(key.Verifier)); err != nil || len(n.Sigs) != 1 || len(n.UnverifiedSigs) != 0 {
		t.Fatalf("the checkpoint changed: %v\n%s", err, cp.Note)
	}
	if l := logs.String(); !strings.Contains(l, "did not cosign") || !strings.Contains(l, "level=ERROR") {
		t.Fatalf("the failure was not logged:\n%s", l)
	}
}

func TestWitnessCosignatureOfAReplacedCheckpointIsDropped(t *testing.T) {
	lines := storetest.Corpus(t, 21, 120)
	s, _ := storetest.SQLite(t)
	key := newKey(t, "plc.test")
	w := newTestWitness(t, "w.example/witness", key.VKey)
	storetest.Load(t, s, lines[:100])
	// While the witness cosigns size 100, the log signs size 120.
	w.mu.Lock()
	w.before = func() {
		storetest.Load(t, s, lines[100:])
		if _, signed, err := tlog.New(s, key, tlog.Options{Interval: time.Nanosecond}).Sign(context.Background()); err != nil || !signed {
			t.Errorf("Sign: %v %v", signed, err)
		}
	}
	w.mu.Unlock()
	var logs storetest.Buffer
	wtRound(t, s, key, &logs, w.witness(t))
	cp, names := wtCosigners(t, s, key, w)
	if cp.Size != 120 || len(names) != 0 {
		t.Fatalf("checkpoint of size %d cosigned by %v\n%s", cp.Size, names, logs.String())
	}
	if !strings.Contains(logs.String(), "replaced") {
		t.Fatalf("the race was not noticed:\n%s", logs.String())
	}
}

func TestParseWitness(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	vkey, _ := wtCosignerVKey("w.example/w1", pub)
	_, ed25519VKey, err := note.GenerateKey(rand.Reader, "w.example/w1")
	if err != nil {
		t.Fatal(err)
	}
	w, err := tlog.ParseWitness("https://user:secret@w.example/prefix/=" + vkey)
	if err != nil {
		t.Fatal(err)
	}
	if w.URL != "https://user:secret@w.example/prefix/" || w.VKey != vkey {
		t.Fatalf("parsed %q %q", w.URL, w.VKey)
	}
	if s := w.String(); strings.Contains(s, "secret") || !strings.Contains(s, "w.example/w1") {
		t.Fatalf("String() = %q", s)
	}
	parts := strings.Split(vkey, "+")
	parts[1] = fmt.Sprintf("%08x", ^binary.BigEndian.Uint32(must(hex.DecodeString(parts[1]))))
	badHash := strings.Join(parts, "+")
	for _, tc := range []struct{ in, want string }{
		{"", "want URL=VKEY"},
		{"https://w.example", "want URL=VKEY"},
		{"=" + vkey, "want URL=VKEY"},
		{"https://w.example=", "want URL=VKEY"},
		{"ftp://w.example=" + vkey, "http:// or https://"},
		{"w.example=" + vkey, "http:// or https://"},
		{"https://w.example/?a=" + vkey, "without query"},
		{"https://w.example=" + ed25519VKey, "plain Ed25519"},
		{"https://w.example=w.example/w1+abcd+xyz", "8 hex digits"},
		{"https://w.example=w.example/w1", "<name>+<hash>+<key>"},
		{"https://w.example=" + badHash, "does not match"},
	} {
		if _, err := tlog.ParseWitness(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseWitness(%q) = %v, want an error saying %q", tc.in, err, tc.want)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
