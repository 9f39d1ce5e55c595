package oplog_test

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// Test helpers: keys, signed ops, a settable clock, and a minimal
// sequencer for driving Store.Append directly. Nothing here reads the
// wall clock or sleeps: every time is derived from t0.

// t0 is the origin of every timestamp in the tests.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// testKey is a private key and its did:key; it is a validate.Signer.
type testKey struct {
	priv atcrypto.PrivateKey
	did  string
}

func (k testKey) HashAndSign(b []byte) ([]byte, error) { return k.priv.HashAndSign(b) }

var (
	keyOnce sync.Once
	keyPool []testKey
	keyErr  error
)

// keys returns n distinct K-256 keys, generated once per test binary.
func keys(tb testing.TB, n int) []testKey {
	tb.Helper()
	const size = 4
	keyOnce.Do(func() {
		for range size {
			priv, err := atcrypto.GeneratePrivateKeyK256()
			if err != nil {
				keyErr = err
				return
			}
			pub, err := priv.PublicKey()
			if err != nil {
				keyErr = err
				return
			}
			keyPool = append(keyPool, testKey{priv: priv, did: pub.DIDKey()})
		}
	})
	if keyErr != nil {
		tb.Fatalf("generating keys: %v", keyErr)
	}
	if n > size {
		tb.Fatalf("keys: at most %d", size)
	}
	return keyPool[:n]
}

// body is a typical plc_operation body with the given handle and rotation
// keys.
func body(handle string, rotation ...testKey) validate.Operation {
	ks := make([]string, len(rotation))
	for i, k := range rotation {
		ks[i] = k.did
	}
	return validate.Operation{
		Type:                validate.TypeOperation,
		RotationKeys:        ks,
		VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: rotation[0].did}},
		AlsoKnownAs:         []string{"at://" + handle},
		Services: []validate.Service{{
			ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://pds.example.com",
		}},
	}
}

func sign(tb testing.TB, o validate.Operation, k testKey) *validate.Op {
	tb.Helper()
	op, err := validate.Sign(o, k)
	if err != nil {
		tb.Fatalf("Sign: %v", err)
	}
	return op
}

// genesis returns a genesis op for handle with rotation keys rot, signed
// by rot[0].
func genesis(tb testing.TB, handle string, rot ...testKey) *validate.Op {
	tb.Helper()
	return sign(tb, body(handle, rot...), rot[0])
}

// update returns a plc_operation after prev that sets handle (keeping the
// rotation keys rot), signed by signer.
func update(tb testing.TB, prev *validate.Op, signer testKey, handle string, rot ...testKey) *validate.Op {
	tb.Helper()
	o := body(handle, rot...)
	o.Prev = prev.CID()
	return sign(tb, o, signer)
}

func tombstone(tb testing.TB, prev *validate.Op, signer testKey) *validate.Op {
	tb.Helper()
	return sign(tb, validate.Operation{Type: validate.TypeTombstone, Prev: prev.CID()}, signer)
}

// item is one op for appendOps, accepted at the given time.
type item struct {
	did string
	op  *validate.Op
	at  time.Time
}

func gen(op *validate.Op, t time.Time) item { return item{did: op.GenesisDID(), op: op, at: t} }

func next(did string, op *validate.Op, t time.Time) item { return item{did: did, op: op, at: t} }

// buildWrite builds the Write of op for did at seq, after the DID's record
// rec (nil for a new DID), as the sequencer does.
func buildWrite(did string, seq int64, t time.Time, op *validate.Op, rec *oplog.DIDRecord) (oplog.Write, error) {
	st, prevSeqs := validate.State{DID: did}, []int64(nil)
	if rec != nil {
		st, prevSeqs = rec.State, rec.Seqs
	}
	nextState, applied, err := st.Next(op, t)
	if err != nil {
		return oplog.Write{}, err
	}
	kept := len(nextState.Ops) - 1
	seqs := append(slices.Clone(prevSeqs[:kept]), seq)
	r := oplog.DIDRecord{DID: did, HeadSeq: seq, State: nextState, Seqs: seqs, Head: op}
	return oplog.Write{
		Entry:     oplog.Entry{Seq: seq, DID: did, CID: op.CID(), CreatedAt: t, Op: op.SignedCBOR()},
		Type:      op.Type(),
		Signer:    applied.Signer,
		Nullifies: slices.Clone(prevSeqs[kept:]),
		Record:    &r,
	}, nil
}

// appendOps appends items in one Append transaction and returns their
// entries.
func appendOps(tb testing.TB, s oplog.Store, items ...item) []oplog.Entry {
	tb.Helper()
	dids := make([]string, len(items))
	for i, it := range items {
		dids[i] = it.did
	}
	var out []oplog.Entry
	err := s.Append(context.Background(), "", dids, func(v oplog.View) (oplog.Batch, error) {
		out = nil
		recs := maps.Clone(v.Records)
		var ws []oplog.Write
		for i, it := range items {
			w, err := buildWrite(it.did, v.LastSeq+1+int64(i), it.at, it.op, recs[it.did])
			if err != nil {
				return oplog.Batch{}, err
			}
			recs[it.did] = w.Record
			ws = append(ws, w)
			out = append(out, w.Entry)
		}
		return oplog.Batch{Writes: ws}, nil
	})
	if err != nil {
		tb.Fatalf("Append: %v", err)
	}
	return out
}

// checkEntries fails unless got and want hold the same entries.
func checkEntries(tb testing.TB, what string, got, want []oplog.Entry) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("%s: got %d entries %v, want %d %v", what, len(got), seqsOf(got), len(want), seqsOf(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.DID != w.DID || g.CID != w.CID || !g.CreatedAt.Equal(w.CreatedAt) ||
			!bytes.Equal(g.Op, w.Op) || g.Nullified != w.Nullified {
			tb.Fatalf("%s: entry %d:\n got  seq=%d did=%s cid=%s at=%s nullified=%v (%d bytes)\n want seq=%d did=%s cid=%s at=%s nullified=%v (%d bytes)",
				what, i, g.Seq, g.DID, g.CID, g.CreatedAt, g.Nullified, len(g.Op), w.Seq, w.DID, w.CID, w.CreatedAt, w.Nullified, len(w.Op))
		}
	}
}

func seqsOf(es []oplog.Entry) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

// nullified returns es with Nullified set on the entries whose seq is in
// seqs.
func nullified(es []oplog.Entry, seqs ...int64) []oplog.Entry {
	out := slices.Clone(es)
	for i := range out {
		out[i].Nullified = slices.Contains(seqs, out[i].Seq)
	}
	return out
}

// checkState fails unless got and want are the same chain state.
func checkState(tb testing.TB, got, want validate.State) {
	tb.Helper()
	if got.DID != want.DID || len(got.Ops) != len(want.Ops) {
		tb.Fatalf("state: got %s with %d ops, want %s with %d", got.DID, len(got.Ops), want.DID, len(want.Ops))
	}
	for i := range got.Ops {
		g, w := got.Ops[i], want.Ops[i]
		if g.CID != w.CID || !g.CreatedAt.Equal(w.CreatedAt) || g.Tombstone != w.Tombstone ||
			g.Signer != w.Signer || !slices.Equal(g.RotationKeys, w.RotationKeys) {
			tb.Fatalf("state op %d:\n got  %v\n want %v", i, g, w)
		}
	}
}
