package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/audit"
	"github.com/plcdir/plc/internal/corpus"
	"github.com/plcdir/plc/validate"
)

// Tests that the verifiers replay one DID's long history in time and
// memory linear in its length: each op of a chain is judged against the
// DID's state as the ops before it left it, without copying or decoding
// that whole state again.

// longChain returns the lines of a generated chain of n ops of one DID
// (a seq-mode export, line i the op with seq i+1).
func longChain(t *testing.T, n int) [][]byte {
	t.Helper()
	return longChainSeed(t, n, 14)
}

func longChainSeed(t *testing.T, n int, seed uint64) [][]byte {
	t.Helper()
	export, st, _ := genCorpus(t, corpus.Config{Ops: n, Shape: corpus.ShapeLongChain, Seed: seed})
	if st.DIDs != 1 || st.Ops != n {
		t.Fatalf("the corpus has %d DIDs and %d ops, want one DID of %d", st.DIDs, st.Ops, n)
	}
	lines := bytes.Split(export, []byte("\n"))
	if len(lines) != n {
		t.Fatalf("%d lines, want %d", len(lines), n)
	}
	return lines
}

// allocated returns the bytes f allocates (all goroutines), f run once.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// checkLinear fails unless replaying chains twice as long allocated at
// most maxRatio times as much: 2 is linear, 4 quadratic.
func checkLinear(t *testing.T, what string, short, long uint64) {
	t.Helper()
	const maxRatio = 2.6
	ratio := float64(long) / float64(short)
	t.Logf("%s: %d bytes for chains of %d ops, %d for chains of %d: ×%.2f", what, short, chainShort, long, chainLong, ratio)
	if ratio > maxRatio {
		t.Errorf("%s allocates %d bytes for chains of %d ops, %d bytes for chains of %d: ×%.2f, more than ×%.1f (the cost of an op grows with the history before it)",
			what, short, chainShort, long, chainLong, ratio, maxRatio)
	}
}

const chainShort, chainLong = 1000, 2000

// TestVerifyExportOfOneLongChainIsLinear: verify-export of one DID with
// many ops allocates in proportion to the ops (it once copied, and
// decoded from its compact store, the DID's whole state for every op: a
// chain of 20,000 ops took 47 s).
func TestVerifyExportOfOneLongChainIsLinear(t *testing.T) {
	lines := longChain(t, chainLong)
	run := func(n int) uint64 {
		export := bytes.Join(lines[:n], []byte("\n"))
		var rep audit.ExportReport
		a := allocated(func() {
			var err error
			rep, err = audit.VerifyExport(context.Background(), bytes.NewReader(export), audit.ExportOptions{Workers: 1})
			if err != nil {
				t.Fatal(err)
			}
		})
		if !rep.OK || rep.Valid != int64(n) || rep.DIDs != 1 {
			t.Fatalf("chain of %d ops: ok %t, %d valid, %d DIDs", n, rep.OK, rep.Valid, rep.DIDs)
		}
		return a
	}
	checkLinear(t, "verify-export", run(chainShort), run(chainLong))
}

// TestVerifyExportOfInterleavedLongChainsIsLinear: the same for two long
// chains whose ops alternate, on one worker (keeping only the last DID's
// state decoded would decode each chain's whole state for every op).
func TestVerifyExportOfInterleavedLongChainsIsLinear(t *testing.T) {
	a, b := longChainSeed(t, chainLong, 15), longChainSeed(t, chainLong, 16)
	seq := regexp.MustCompile(`"seq":[0-9]+}$`)
	run := func(n int) uint64 {
		var lines [][]byte
		for i := range n {
			for _, l := range [][]byte{a[i], b[i]} {
				l = seq.ReplaceAll(l, []byte(`"seq":`+strconv.Itoa(len(lines)+1)+`}`))
				lines = append(lines, l)
			}
		}
		export := bytes.Join(lines, []byte("\n"))
		var rep audit.ExportReport
		al := allocated(func() {
			var err error
			rep, err = audit.VerifyExport(context.Background(), bytes.NewReader(export), audit.ExportOptions{Workers: 1})
			if err != nil {
				t.Fatal(err)
			}
		})
		if !rep.OK || rep.Valid != int64(2*n) || rep.DIDs != 2 {
			t.Fatalf("two chains of %d ops: ok %t, %d valid, %d DIDs", n, rep.OK, rep.Valid, rep.DIDs)
		}
		return al
	}
	checkLinear(t, "verify-export of two alternating chains", run(chainShort), run(chainLong))
}

type signer struct{ atcrypto.PrivateKey }

// forkingChain returns the lines of one DID of n ops (n odd) whose
// updates, signed by its second rotation key, are each nullified by a
// fork from its first: genesis, then update, fork of it, update, fork of
// it, and so on, a second apart. n/2 ops are nullified, n/2+1 stay.
func forkingChain(t *testing.T, n int) [][]byte {
	t.Helper()
	var keys [2]signer
	var dids []string
	for i := range keys {
		priv, err := atcrypto.GeneratePrivateKeyK256()
		if err != nil {
			t.Fatal(err)
		}
		pub, err := priv.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[i], dids = signer{priv}, append(dids, pub.DIDKey())
	}
	body := func(handle, prev string) validate.Operation {
		return validate.Operation{
			Type:                validate.TypeOperation,
			RotationKeys:        dids,
			VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: dids[0]}},
			AlsoKnownAs:         []string{"at://" + handle},
			Services:            []validate.Service{{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://pds.example.com"}},
			Prev:                prev,
		}
	}
	sign := func(o validate.Operation, k signer) *validate.Op {
		op, err := validate.Sign(o, k)
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	head := sign(body("genesis.example.com", ""), keys[0])
	did := head.GenesisDID()
	lines := [][]byte{validate.AppendSequencedJSON(nil, did, head, t0, 1)}
	for i := 1; len(lines) < n; i += 2 {
		update := sign(body("u"+strconv.Itoa(i)+".example.com", head.CID()), keys[1])
		fork := sign(body("f"+strconv.Itoa(i)+".example.com", head.CID()), keys[0])
		lines = append(lines,
			validate.AppendSequencedJSON(nil, did, update, t0.Add(time.Duration(i)*time.Second), int64(i+1)),
			validate.AppendSequencedJSON(nil, did, fork, t0.Add(time.Duration(i+1)*time.Second), int64(i+2)))
		head = fork
	}
	return lines[:n]
}

// TestVerifyExportOfForkingLongChainIsLinear: the same for one DID whose
// every other op is a recovery fork, nullifying the op before it: a fork
// rewrites the DID's state from the op it nullifies, not from the start
// (writing the whole state again per fork was quadratic in time and in
// memory, every rewrite taking new room in the compact store).
func TestVerifyExportOfForkingLongChainIsLinear(t *testing.T) {
	lines := forkingChain(t, chainLong+1)
	run := func(n int) uint64 {
		export := bytes.Join(lines[:n+1], []byte("\n"))
		var rep audit.ExportReport
		a := allocated(func() {
			var err error
			rep, err = audit.VerifyExport(context.Background(), bytes.NewReader(export), audit.ExportOptions{Workers: 1})
			if err != nil {
				t.Fatal(err)
			}
		})
		if !rep.OK || rep.Valid != int64(n+1) || rep.DIDs != 1 || rep.Nullified != int64(n/2) {
			t.Fatalf("chain of %d ops: ok %t, %d valid, %d DIDs, %d nullified (want %d)", n+1, rep.OK, rep.Valid, rep.DIDs, rep.Nullified, n/2)
		}
		return a
	}
	checkLinear(t, "verify-export of a forking chain", run(chainShort), run(chainLong))
}

// TestVerifyLogOfOneLongChainIsLinear: the same for an audit log
// (verify-log, GET /:did/log/audit).
func TestVerifyLogOfOneLongChainIsLinear(t *testing.T) {
	lines := longChain(t, chainLong)
	entries := make([]plc.AuditEntry, len(lines))
	for i, l := range lines {
		if err := json.Unmarshal(l, &entries[i]); err != nil {
			t.Fatal(err)
		}
	}
	run := func(n int) uint64 {
		var res audit.LogResult
		a := allocated(func() { res = audit.VerifyLog(entries[:n]) })
		if res.Failure != nil || res.Ops != n {
			t.Fatalf("chain of %d ops: %d ops, failure %v", n, res.Ops, res.Failure)
		}
		return a
	}
	checkLinear(t, "verify-log", run(chainShort), run(chainLong))
}
