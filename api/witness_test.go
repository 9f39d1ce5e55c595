package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
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

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	plctlog "github.com/plcdir/plc/tlog"
)

// fakeWitness is a C2SP tlog-witness of one log: it checks the log's
// signature and the consistency proof from the size it last cosigned,
// answers 409 with that size to another old size, and cosigns
// (cosignature/v1, Ed25519).
type fakeWitness struct {
	name string
	priv ed25519.PrivateKey
	vkey string
	log  note.Verifier
	srv  *httptest.Server

	mu   sync.Mutex
	size int64
	root tlog.Hash
}

func newFakeWitness(t *testing.T, name string, logVerifier note.Verifier) *fakeWitness {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key := append([]byte{0x04}, pub...)
	sum := sha256.Sum256(append([]byte(name+"\n"), key...))
	w := &fakeWitness{name: name, priv: priv, log: logVerifier,
		vkey: fmt.Sprintf("%s+%08x+%s", name, binary.BigEndian.Uint32(sum[:4]), base64.StdEncoding.EncodeToString(key))}
	w.srv = httptest.NewServer(w)
	t.Cleanup(w.srv.Close)
	return w
}

func (w *fakeWitness) witness(t *testing.T) *plctlog.Witness {
	t.Helper()
	pw, err := plctlog.ParseWitness(w.srv.URL + "=" + w.vkey)
	if err != nil {
		t.Fatal(err)
	}
	return pw
}

func (w *fakeWitness) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if r.URL.Path != "/add-checkpoint" || err != nil {
		http.Error(rw, "bad request", http.StatusBadRequest)
		return
	}
	rd := bufio.NewReader(bytes.NewReader(body))
	first, _ := rd.ReadString('\n')
	old, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(first, "old "), "\n"), 10, 64)
	if err != nil {
		http.Error(rw, "no old size", http.StatusBadRequest)
		return
	}
	var proof tlog.TreeProof
	for {
		l, err := rd.ReadString('\n')
		if err != nil {
			http.Error(rw, "no checkpoint", http.StatusBadRequest)
			return
		}
		if l == "\n" {
			break
		}
		var h tlog.Hash
		if b, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(l, "\n")); err != nil || len(b) != len(h) {
			http.Error(rw, "bad proof line", http.StatusBadRequest)
			return
		} else {
			copy(h[:], b)
		}
		proof = append(proof, h)
	}
	msg, _ := io.ReadAll(rd)
	n, err := note.Open(msg, note.VerifierList(w.log))
	if err != nil {
		http.Error(rw, "not the log's checkpoint", http.StatusForbidden)
		return
	}
	cp, err := plc.ParseCheckpointBody(n.Text)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if old != w.size {
		rw.Header().Set("Content-Type", "text/x.tlog.size")
		rw.WriteHeader(http.StatusConflict)
		fmt.Fprintf(rw, "%d\n", w.size)
		return
	}
	switch {
	case old > cp.Size:
		http.Error(rw, "old size beyond the checkpoint", http.StatusBadRequest)
		return
	case old == cp.Size && old > 0 && cp.Root != w.root:
		http.Error(rw, "a fork", http.StatusConflict)
		return
	case old > 0 && old < cp.Size:
		if tlog.CheckTree(proof, cp.Size, cp.Root, old, w.root) != nil {
			http.Error(rw, "bad consistency proof", http.StatusUnprocessableEntity)
			return
		}
	}
	w.size, w.root = cp.Size, cp.Root
	ts := uint64(time.Now().Unix())
	sig := ed25519.Sign(w.priv, fmt.Appendf(nil, "cosignature/v1\ntime %d\n%s", ts, n.Text))
	vk, _ := plctlog.NewCosignatureVerifier(w.vkey)
	raw := binary.BigEndian.AppendUint32(nil, vk.KeyHash())
	raw = binary.BigEndian.AppendUint64(raw, ts)
	fmt.Fprintf(rw, "— %s %s\n", w.name, base64.StdEncoding.EncodeToString(append(raw, sig...)))
}

// TestEveryServedCheckpointCarriesTheQuorum: with two witnesses (quorum:
// both), POSTs and proof and checkpoint requests racing; every checkpoint
// served, alone or with proofs, carries both witnesses' cosignatures, and
// every proof verifies against it. The quorum wait never times out here
// (its timer is held until the test ends), so an answer without the
// quorum is a failure, not a timeout.
func TestEveryServedCheckpointCarriesTheQuorum(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		skey, _, err := plctlog.GenerateKey("plc.test")
		if err != nil {
			t.Fatal(err)
		}
		key, err := plctlog.ParseKey(skey)
		if err != nil {
			t.Fatal(err)
		}
		w1 := newFakeWitness(t, "w1.example/witness", key.Verifier)
		w2 := newFakeWitness(t, "w2.example/witness", key.Verifier)
		held := make(chan struct{})
		t.Cleanup(func() { close(held) })
		var (
			tl   *plctlog.TLog
			logs storetest.Buffer
		)
		env := newAPIEnv(t, b, envOptions{noRateLimit: true, config: func(c *Config) {
			tl = plctlog.New(c.Log.Store(), key, plctlog.Options{
				Logger:        slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
				Interval:      time.Nanosecond,
				QuorumTimeout: time.Hour,
				Witnesses:     []*plctlog.Witness{w1.witness(t), w2.witness(t)},
				// Run's rounds and the quorum timer both wait until the
				// test ends: signing happens on the request path.
				Wait: func(ctx context.Context, d time.Duration) error {
					select {
					case <-held:
						return context.Canceled
					case <-ctx.Done():
						return ctx.Err()
					}
				},
			})
			c.TLog = tl
		}})
		ctx, cancel := context.WithCancel(context.Background())
		runDone := make(chan struct{})
		go func() { defer close(runDone); tl.Run(ctx, env.log.Changed) }()
		t.Cleanup(func() { cancel(); <-runDone })
		v1, _ := plctlog.NewCosignatureVerifier(w1.vkey)
		v2, _ := plctlog.NewCosignatureVerifier(w2.vkey)
		verifiers := note.VerifierList(key.Verifier, v1, v2)

		ks := keys(t, 1)
		const writers, perWriter, readers, perReader = 4, 8, 4, 8
		var (
			mu   sync.Mutex
			dids []string
		)
		post := func(handle string) {
			op := genesisOp(t, handle, ks[0], ks[0])
			resp, err := http.Post(env.http.URL+"/"+op.GenesisDID(), "application/json", bytes.NewReader(op.AppendJSON(nil)))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("POST: %d", resp.StatusCode)
				return
			}
			mu.Lock()
			dids = append(dids, op.GenesisDID())
			mu.Unlock()
		}
		get := func(path string) (http.Header, []byte) {
			resp, err := http.Get(env.http.URL + path)
			if err != nil {
				t.Error(err)
				return nil, nil
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
				return nil, nil
			}
			return resp.Header, body
		}
		// checkNote checks a served checkpoint: the log's signature and
		// both cosignatures verify, and the headers say so.
		checkNote := func(what string, h http.Header, msg []byte) (plc.CheckpointBody, bool) {
			n, err := note.Open(msg, verifiers)
			if err != nil || len(n.Sigs) != 3 || len(n.UnverifiedSigs) != 0 {
				t.Errorf("%s: the checkpoint does not carry the log's signature and both cosignatures (%v):\n%s", what, err, msg)
				return plc.CheckpointBody{}, false
			}
			if q, c := h.Get(plctlog.HeaderWitnessQuorum), h.Get(plctlog.HeaderWitnessCosignatures); q != "met" || c != "2/2" {
				t.Errorf("%s: headers say %q %q, want met 2/2", what, q, c)
			}
			body, err := plc.ParseCheckpointBody(n.Text)
			if err != nil || body.Origin != "plc.test" {
				t.Errorf("%s: checkpoint body %+v, %v", what, body, err)
				return body, false
			}
			return body, true
		}
		type proved struct {
			seq   int64
			size  int64
			root  tlog.Hash
			proof []tlog.Hash
		}
		var (
			pmu    sync.Mutex
			proofs []proved
		)
		post("first.test")

		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				for j := range perWriter {
					post(fmt.Sprintf("w%d-%d.test", i, j))
				}
			})
		}
		for i := range readers {
			wg.Go(func() {
				for j := range perReader {
					if j%2 == 1 {
						h, msg := get("/tlog/checkpoint")
						if msg != nil {
							checkNote("GET /tlog/checkpoint", h, msg)
						}
						continue
					}
					mu.Lock()
					did := dids[(i*perReader+j)%len(dids)]
					mu.Unlock()
					h, body := get("/" + did + "/log/audit?proof=true")
					if body == nil {
						continue
					}
					var entries []struct {
						Seq   int64 `json:"seq"`
						Proof *struct {
							TreeSize   int64    `json:"treeSize"`
							LeafIndex  int64    `json:"leafIndex"`
							Hashes     []string `json:"hashes"`
							Checkpoint string   `json:"checkpoint"`
						} `json:"proof"`
					}
					if err := json.Unmarshal(body, &entries); err != nil || len(entries) != 1 || entries[0].Proof == nil {
						t.Errorf("audit log of %s: %v: %s", did, err, body)
						continue
					}
					e := entries[0]
					cb, ok := checkNote("the proof of "+did, h, []byte(e.Proof.Checkpoint))
					if !ok {
						continue
					}
					hs, err := plctlog.DecodeHashes(e.Proof.Hashes)
					if err != nil || cb.Size != e.Proof.TreeSize || e.Proof.LeafIndex != e.Seq-1 {
						t.Errorf("proof of %s: %+v against %+v, %v", did, e.Proof, cb, err)
						continue
					}
					pmu.Lock()
					proofs = append(proofs, proved{e.Seq, cb.Size, cb.Root, hs})
					pmu.Unlock()
				}
			})
		}
		wg.Wait()

		// Every inclusion proof verifies, against the leaf the store holds.
		es, err := env.store.Export(context.Background(), 0, 1000)
		if err != nil || len(es) != 1+writers*perWriter {
			t.Fatalf("export: %d ops, %v", len(es), err)
		}
		if len(proofs) != readers*perReader/2 {
			t.Fatalf("%d proofs checked, want %d", len(proofs), readers*perReader/2)
		}
		for _, p := range proofs {
			leaf := tlog.RecordHash(oplog.LeafData(&es[p.seq-1]))
			if err := tlog.CheckRecord(p.proof, p.size, p.root, p.seq-1, leaf); err != nil {
				t.Errorf("inclusion proof of seq %d in the tree of size %d: %v", p.seq, p.size, err)
			}
		}

		// The answers match openapi.yaml (headers included), and /_health
		// shows each witness.
		if r := env.get("/" + dids[0] + "/log/audit?proof=true"); r.header.Get(plctlog.HeaderWitnessQuorum) != "met" {
			t.Errorf("audit log with proofs: %d %s", r.status, r.header)
		}
		env.get("/tlog/checkpoint")
		r := env.get("/_health")
		var health struct {
			Witnesses  []plctlog.WitnessStatus `json:"witnesses"`
			Checkpoint struct {
				Size, Cosignatures, Quorum int64
			} `json:"checkpoint"`
		}
		latest, err := env.store.Checkpoint(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(r.body, &health); err != nil || len(health.Witnesses) != 2 ||
			health.Checkpoint.Cosignatures != 2 || health.Checkpoint.Quorum != 2 || health.Checkpoint.Size != latest.Size {
			t.Fatalf("health: %v %s", err, r.body)
		}
		for _, w := range health.Witnesses {
			if w.CosignedSize != latest.Size || w.LastSuccess == nil || w.FailuresTotal != 0 {
				t.Errorf("health of witness %+v\n%s", w, logs.String())
			}
		}
	})
}
