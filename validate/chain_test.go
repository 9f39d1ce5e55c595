package validate_test

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/plcdir/plc/validate"
)

// timedOp is an op with its acceptance time.
type timedOp struct {
	op *validate.Op
	at time.Time
}

// replay applies ops in order from the empty state of the first op's DID,
// failing the test if any is rejected.
func replay(t *testing.T, ops ...timedOp) validate.State {
	t.Helper()
	st := emptyState(ops[0].op)
	for _, o := range ops {
		st, _ = mustNext(t, st, o.op, o.at)
	}
	return st
}

func cids(ops ...*validate.Op) []string {
	out := make([]string, len(ops))
	for i, op := range ops {
		out[i] = op.CID()
	}
	return out
}

func stateCIDs(st validate.State) []string {
	out := make([]string, len(st.Ops))
	for i, c := range st.Ops {
		out[i] = c.CID
	}
	return out
}

// forkFixture is a DID with rotation keys [k0, k1, k2] and three ops:
// genesis G (signed by k0) at baseTime, A on G at +1h and B on A at +2h,
// A and B signed by the keys given to newForkFixture.
type forkFixture struct {
	k       []testKey
	g, a, b *validate.Op
	st      validate.State
}

func newForkFixture(t *testing.T, aSigner, bSigner int) forkFixture {
	t.Helper()
	k := k256Keys(t, 4)
	rot := dids(k[0], k[1], k[2])
	g := newGenesis(t, k[0], rot...)
	a := newUpdate(t, g, k[aSigner], rot...)
	b := newUpdate(t, a, k[bSigner], rot...)
	st := replay(t, timedOp{g, at(0)}, timedOp{a, at(time.Hour)}, timedOp{b, at(2 * time.Hour)})
	return forkFixture{k: k, g: g, a: a, b: b, st: st}
}

// chainStep is one application of State.Next and its expected outcome.
type chainStep struct {
	st   validate.State
	op   *validate.Op
	at   time.Time
	want wantErr
	// On success:
	signer     int
	nullified  []string // expected Applied.Nullified (nil means none)
	ops        []string // expected CIDs of the new state's ops
	tombstoned bool
	recordedAt time.Time // the head's CreatedAt, if not at
}

func (s chainStep) run(t *testing.T) {
	t.Helper()
	before := cloneState(s.st)
	next, applied, err := s.st.Next(s.op, s.at)
	if !reflect.DeepEqual(s.st, before) {
		t.Fatalf("Next modified its receiver:\n before %+v\n after  %+v", before, s.st)
	}
	s.want.check(t, err)
	if err != nil {
		if !reflect.DeepEqual(next, validate.State{}) || !reflect.DeepEqual(applied, validate.Applied{}) {
			t.Fatalf("rejected op returned a non-zero state %+v / applied %+v", next, applied)
		}
		return
	}
	if applied.Signer != s.signer {
		t.Errorf("Applied.Signer = %d, want %d", applied.Signer, s.signer)
	}
	if len(applied.Nullified) != 0 || len(s.nullified) != 0 {
		if !slices.Equal(applied.Nullified, s.nullified) {
			t.Errorf("Applied.Nullified =\n %v\nwant\n %v", applied.Nullified, s.nullified)
		}
	}
	if got := stateCIDs(next); !slices.Equal(got, s.ops) {
		t.Errorf("new state ops =\n %v\nwant\n %v", got, s.ops)
	}
	if next.DID != s.st.DID {
		t.Errorf("new state DID = %q, want %q", next.DID, s.st.DID)
	}
	head, ok := next.Head()
	if !ok {
		t.Fatal("new state has no head")
	}
	wantAt := s.at
	if !s.recordedAt.IsZero() {
		wantAt = s.recordedAt
	}
	if head.CID != s.op.CID() || !head.CreatedAt.Equal(wantAt) || head.Signer != s.signer {
		t.Errorf("head = %+v, want CID %s at %s signer %d", head, s.op.CID(), wantAt, s.signer)
	}
	if next.Tombstoned() != s.tombstoned {
		t.Errorf("Tombstoned() = %v, want %v", next.Tombstoned(), s.tombstoned)
	}
}

func cloneState(s validate.State) validate.State {
	c := validate.State{DID: s.DID}
	for _, o := range s.Ops {
		o.RotationKeys = slices.Clone(o.RotationKeys)
		c.Ops = append(c.Ops, o)
	}
	return c
}

var (
	misordered   = wantErr{class: validate.ErrMisordered, msg: "Operations not correctly ordered"}
	badSignature = wantErr{class: validate.ErrInvalidSignature, prefix: "Invalid signature on op: {"}
	lateRecovery = wantErr{class: validate.ErrLateRecovery, prefix: "Recovery operation occurred outside of the allowed 72 hr recovery window"}
)

// exactBadSignature expects the reference's message, which embeds the op.
func exactBadSignature(op *validate.Op) wantErr {
	return wantErr{class: validate.ErrInvalidSignature, msg: "Invalid signature on op: " + string(op.AppendJSON(nil))}
}

func TestNextGenesis(t *testing.T) {
	k := k256Keys(t, 3)
	p := p256Keys(t, 2)
	cases := []struct {
		name  string
		setup func(t *testing.T) chainStep
	}{
		{"signed by first rotation key", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did, k[1].did)
			return chainStep{st: emptyState(g), op: g, at: at(0), signer: 0, ops: cids(g)}
		}},
		{"signed by second rotation key records signer 1", func(t *testing.T) chainStep {
			g := newGenesis(t, k[1], k[0].did, k[1].did)
			return chainStep{st: emptyState(g), op: g, at: at(0), signer: 1, ops: cids(g)}
		}},
		{"P-256 rotation key", func(t *testing.T) chainStep {
			g := newGenesis(t, p[0], k[0].did, p[0].did)
			return chainStep{st: emptyState(g), op: g, at: at(0), signer: 1, ops: cids(g)}
		}},
		{"duplicate rotation keys: first index signs", func(t *testing.T) chainStep {
			g := newGenesis(t, k[1], k[0].did, k[1].did, k[1].did)
			return chainStep{st: emptyState(g), op: g, at: at(0), signer: 1, ops: cids(g)}
		}},
		{"signed by a key not in its rotationKeys", func(t *testing.T) chainStep {
			g := newGenesis(t, k[2], k[0].did, k[1].did)
			return chainStep{st: emptyState(g), op: g, at: at(0), want: exactBadSignature(g)}
		}},
		{"empty rotationKeys cannot be signed", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0])
			return chainStep{st: emptyState(g), op: g, at: at(0), want: badSignature}
		}},
		{"hash does not match the DID", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did)
			other := newGenesis(t, k[1], k[1].did)
			return chainStep{st: emptyState(other), op: g, at: at(0), want: wantErr{
				class: validate.ErrGenesisHash,
				msg:   "Hash of genesis operation does not match DID identifier: " + g.GenesisDID(),
			}}
		}},
		{"hash mismatch message prefix", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did)
			return chainStep{st: validate.State{DID: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}, op: g, at: at(0), want: wantErr{
				class: validate.ErrGenesisHash, prefix: "Hash of genesis operation does not match DID identifier: ",
			}}
		}},
		{"tombstone as genesis", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did)
			ts := newTombstone(t, g, k[0])
			return chainStep{st: emptyState(ts), op: ts, at: at(0), want: wantErr{
				class: validate.ErrGenesisHash,
				msg:   "Improperly formatted operation, expected genesis op to not be tombstone",
			}}
		}},
		{"genesis with non-null prev", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did)
			o := baseOperation([]string{k[0].did})
			o.Prev = g.CID()
			op := signOp(t, o, k[0])
			// The state's DID is the op's own hash, so only prev is wrong.
			return chainStep{st: emptyState(op), op: op, at: at(0), want: wantErr{
				class: validate.ErrGenesisHash,
				msg:   "Improperly formatted operation, expected null prev on create",
			}}
		}},
		{"invalid rotation key", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did, fixedEd25519)
			return chainStep{st: emptyState(g), op: g, at: at(0), want: wantErr{
				class: validate.ErrInvalidKey, msg: "Invalid rotationKey: " + fixedEd25519,
			}}
		}},
		{"badly encoded signature", func(t *testing.T) chainStep {
			o := baseOperation([]string{k[0].did})
			o.Sig = "not base64url!"
			op, err := validate.NewOp(o)
			if err != nil {
				t.Fatal(err)
			}
			return chainStep{st: emptyState(op), op: op, at: at(0), want: badSignature}
		}},
		{"legacy create signed by recovery key", func(t *testing.T) chainStep {
			c := newCreate(t, k[0], k[1].did, k[0].did, "alice.test", "pds.example.com")
			return chainStep{st: emptyState(c), op: c, at: at(0), signer: 0, ops: cids(c)}
		}},
		{"legacy create signed by signing key", func(t *testing.T) chainStep {
			c := newCreate(t, k[1], k[1].did, k[0].did, "alice.test", "pds.example.com")
			return chainStep{st: emptyState(c), op: c, at: at(0), signer: 1, ops: cids(c)}
		}},
		{"legacy create signed by another key", func(t *testing.T) chainStep {
			c := newCreate(t, k[2], k[1].did, k[0].did, "alice.test", "pds.example.com")
			return chainStep{st: emptyState(c), op: c, at: at(0), want: exactBadSignature(c)}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.setup(t).run(t) })
	}
}

func TestNextGenesisChainOp(t *testing.T) {
	k := k256Keys(t, 2)
	g := newGenesis(t, k[1], k[0].did, k[1].did)
	// Sub-millisecond precision is dropped: the log keeps milliseconds.
	st, _ := mustNext(t, emptyState(g), g, at(1500*time.Microsecond))
	want := validate.ChainOp{CID: g.CID(), CreatedAt: at(time.Millisecond), Signer: 1, RotationKeys: []string{k[0].did, k[1].did}}
	if len(st.Ops) != 1 || !reflect.DeepEqual(st.Ops[0], want) {
		t.Fatalf("state after genesis = %+v, want [%+v]", st.Ops, want)
	}
}

func TestNextUpdates(t *testing.T) {
	k := k256Keys(t, 4)
	p := p256Keys(t, 2)
	cases := []struct {
		name  string
		setup func(t *testing.T) chainStep
	}{
		{"signed by a key of prev's rotationKeys", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did, k[1].did)
			u := newUpdate(t, g, k[1], k[2].did)
			st := replay(t, timedOp{g, at(0)})
			return chainStep{st: st, op: u, at: at(time.Minute), signer: 1, ops: cids(g, u)}
		}},
		{"signed by a key only in its own new rotationKeys", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did, k[1].did)
			u := newUpdate(t, g, k[2], k[2].did)
			st := replay(t, timedOp{g, at(0)})
			return chainStep{st: st, op: u, at: at(time.Minute), want: exactBadSignature(u)}
		}},
		{"next update is judged by the new rotationKeys", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did)
			u1 := newUpdate(t, g, k[0], k[1].did)
			u2 := newUpdate(t, u1, k[0], k[0].did)
			st := replay(t, timedOp{g, at(0)}, timedOp{u1, at(time.Minute)})
			return chainStep{st: st, op: u2, at: at(2 * time.Minute), want: badSignature}
		}},
		{"prev null on an existing DID", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did)
			g2 := newGenesis(t, k[0], k[0].did, k[1].did)
			st := replay(t, timedOp{g, at(0)})
			return chainStep{st: st, op: g2, at: at(time.Minute), want: misordered}
		}},
		{"same genesis again", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did)
			st := replay(t, timedOp{g, at(0)})
			return chainStep{st: st, op: g, at: at(time.Minute), want: misordered}
		}},
		{"legacy create on an existing DID", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did)
			c := newCreate(t, k[0], k[0].did, k[0].did, "alice.test", "pds.example.com")
			st := replay(t, timedOp{g, at(0)})
			return chainStep{st: st, op: c, at: at(time.Minute), want: misordered}
		}},
		{"prev unknown", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did)
			elsewhere := newGenesis(t, k[1], k[1].did)
			u := newUpdate(t, elsewhere, k[0], k[0].did)
			st := replay(t, timedOp{g, at(0)})
			return chainStep{st: st, op: u, at: at(time.Minute), want: misordered}
		}},
		{"prev is a tombstone", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did)
			ts := newTombstone(t, g, k[0])
			u := newUpdate(t, ts, k[0], k[0].did)
			st := replay(t, timedOp{g, at(0)}, timedOp{ts, at(time.Minute)})
			if !st.Tombstoned() {
				t.Fatal("state not tombstoned after a tombstone")
			}
			return chainStep{st: st, op: u, at: at(2 * time.Minute), want: misordered}
		}},
		{"tombstone on head", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did, k[1].did)
			ts := newTombstone(t, g, k[1])
			st := replay(t, timedOp{g, at(0)})
			return chainStep{st: st, op: ts, at: at(time.Minute), signer: 1, ops: cids(g, ts), tombstoned: true}
		}},
		{"tombstone signed by a foreign key", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did)
			ts := newTombstone(t, g, k[1])
			st := replay(t, timedOp{g, at(0)})
			return chainStep{st: st, op: ts, at: at(time.Minute), want: exactBadSignature(ts)}
		}},
		{"tombstone on a tombstone", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did)
			ts := newTombstone(t, g, k[0])
			ts2 := newTombstone(t, ts, k[0])
			st := replay(t, timedOp{g, at(0)}, timedOp{ts, at(time.Minute)})
			return chainStep{st: st, op: ts2, at: at(2 * time.Minute), want: misordered}
		}},
		{"invalid verification method key", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did)
			o := baseOperation([]string{k[0].did})
			o.Prev = g.CID()
			o.VerificationMethods = []validate.VerificationMethod{{ID: "atproto", Key: "did:key:abc"}}
			u := signOp(t, o, k[0])
			st := replay(t, timedOp{g, at(0)})
			return chainStep{st: st, op: u, at: at(time.Minute), want: wantErr{
				class: validate.ErrInvalidKey, msg: "Invalid verificationMethod key: did:key:abc",
			}}
		}},
		{"ed25519 verification method is fine", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did)
			o := baseOperation([]string{k[0].did})
			o.Prev = g.CID()
			o.VerificationMethods = []validate.VerificationMethod{{ID: "atproto", Key: fixedEd25519}}
			u := signOp(t, o, k[0])
			st := replay(t, timedOp{g, at(0)})
			return chainStep{st: st, op: u, at: at(time.Minute), signer: 0, ops: cids(g, u)}
		}},

		// Legacy create genesis, then a plc_operation: the create's
		// rotationKeys normalise to [recoveryKey, signingKey].
		{"after legacy create: signed by recovery key", func(t *testing.T) chainStep {
			c := newCreate(t, k[1], k[1].did, k[0].did, "alice.test", "pds.example.com")
			u := newUpdate(t, c, k[0], k[0].did, k[1].did)
			st := replay(t, timedOp{c, at(0)})
			return chainStep{st: st, op: u, at: at(time.Minute), signer: 0, ops: cids(c, u)}
		}},
		{"after legacy create: signed by signing key", func(t *testing.T) chainStep {
			c := newCreate(t, k[0], k[1].did, k[0].did, "alice.test", "pds.example.com")
			u := newUpdate(t, c, k[1], k[0].did)
			st := replay(t, timedOp{c, at(0)})
			return chainStep{st: st, op: u, at: at(time.Minute), signer: 1, ops: cids(c, u)}
		}},
		{"after legacy create: signed by another key", func(t *testing.T) chainStep {
			c := newCreate(t, k[0], k[1].did, k[0].did, "alice.test", "pds.example.com")
			u := newUpdate(t, c, k[2], k[2].did)
			st := replay(t, timedOp{c, at(0)})
			return chainStep{st: st, op: u, at: at(time.Minute), want: exactBadSignature(u)}
		}},
		{"legacy create after genesis is not an update", func(t *testing.T) chainStep {
			c := newCreate(t, k[0], k[1].did, k[0].did, "alice.test", "pds.example.com")
			st := replay(t, timedOp{c, at(0)})
			c2 := newCreate(t, k[0], k[1].did, k[0].did, "bob.test", "pds.example.com")
			return chainStep{st: st, op: c2, at: at(time.Minute), want: misordered}
		}},

		// Curves.
		{"P-256 chain", func(t *testing.T) chainStep {
			g := newGenesis(t, p[0], p[0].did, p[1].did)
			u := newUpdate(t, g, p[1], p[0].did)
			st := replay(t, timedOp{g, at(0)})
			return chainStep{st: st, op: u, at: at(time.Minute), signer: 1, ops: cids(g, u)}
		}},
		{"mixed curves: K-256 signs after P-256 genesis", func(t *testing.T) chainStep {
			g := newGenesis(t, p[0], p[0].did, k[0].did)
			u := newUpdate(t, g, k[0], k[0].did, p[0].did)
			st := replay(t, timedOp{g, at(0)})
			return chainStep{st: st, op: u, at: at(time.Minute), signer: 1, ops: cids(g, u)}
		}},
		{"mixed curves: P-256 signs after K-256 update", func(t *testing.T) chainStep {
			g := newGenesis(t, p[0], p[0].did, k[0].did)
			u := newUpdate(t, g, k[0], k[0].did, p[0].did)
			u2 := newUpdate(t, u, p[0], p[0].did)
			st := replay(t, timedOp{g, at(0)}, timedOp{u, at(time.Minute)})
			return chainStep{st: st, op: u2, at: at(2 * time.Minute), signer: 1, ops: cids(g, u, u2)}
		}},

		// Duplicate rotation keys are allowed; the signer is the first
		// index holding the key.
		{"duplicate rotation keys: signer is the first index", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[1].did, k[0].did, k[0].did, k[2].did)
			u := newUpdate(t, g, k[0], k[0].did)
			st := replay(t, timedOp{g, at(0)})
			return chainStep{st: st, op: u, at: at(time.Minute), signer: 1, ops: cids(g, u)}
		}},
		{"duplicate rotation keys: key after duplicates", func(t *testing.T) chainStep {
			g := newGenesis(t, k[0], k[0].did, k[0].did, k[2].did)
			u := newUpdate(t, g, k[2], k[2].did, k[2].did)
			st := replay(t, timedOp{g, at(0)})
			return chainStep{st: st, op: u, at: at(time.Minute), signer: 2, ops: cids(g, u)}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.setup(t).run(t) })
	}
}

func TestNextForks(t *testing.T) {
	const window = validate.RecoveryWindow
	cases := []struct {
		name  string
		setup func(t *testing.T) chainStep
	}{
		{"higher-priority key nullifies within 72h", func(t *testing.T) chainStep {
			f := newForkFixture(t, 2, 2)
			fork := newUpdate(t, f.g, f.k[1], dids(f.k[0], f.k[1])...)
			return chainStep{st: f.st, op: fork, at: at(3 * time.Hour), signer: 1,
				nullified: cids(f.a, f.b), ops: cids(f.g, fork)}
		}},
		{"highest-priority key nullifies", func(t *testing.T) chainStep {
			f := newForkFixture(t, 2, 2)
			fork := newUpdate(t, f.g, f.k[0], f.k[0].did)
			return chainStep{st: f.st, op: fork, at: at(3 * time.Hour), signer: 0,
				nullified: cids(f.a, f.b), ops: cids(f.g, fork)}
		}},
		{"fork on A nullifies only B", func(t *testing.T) chainStep {
			f := newForkFixture(t, 2, 2)
			fork := newUpdate(t, f.a, f.k[1], f.k[1].did)
			return chainStep{st: f.st, op: fork, at: at(3 * time.Hour), signer: 1,
				nullified: cids(f.b), ops: cids(f.g, f.a, fork)}
		}},
		{"priority is judged against the first nullified op only", func(t *testing.T) chainStep {
			// A by k2, B by k1: a k1 fork on G outranks A's signer.
			f := newForkFixture(t, 2, 1)
			fork := newUpdate(t, f.g, f.k[1], f.k[1].did)
			return chainStep{st: f.st, op: fork, at: at(3 * time.Hour), signer: 1,
				nullified: cids(f.a, f.b), ops: cids(f.g, fork)}
		}},
		{"same-priority key", func(t *testing.T) chainStep {
			f := newForkFixture(t, 1, 1)
			fork := newUpdate(t, f.g, f.k[1], f.k[1].did)
			return chainStep{st: f.st, op: fork, at: at(3 * time.Hour), want: badSignature}
		}},
		{"lower-priority key", func(t *testing.T) chainStep {
			f := newForkFixture(t, 1, 1)
			fork := newUpdate(t, f.g, f.k[2], f.k[2].did)
			return chainStep{st: f.st, op: fork, at: at(3 * time.Hour), want: exactBadSignature(fork)}
		}},
		{"first nullified op signed by key 0: nothing outranks it", func(t *testing.T) chainStep {
			f := newForkFixture(t, 0, 2)
			fork := newUpdate(t, f.g, f.k[0], f.k[0].did)
			return chainStep{st: f.st, op: fork, at: at(3 * time.Hour), want: badSignature}
		}},
		{"key outside prev's rotationKeys", func(t *testing.T) chainStep {
			f := newForkFixture(t, 2, 2)
			fork := newUpdate(t, f.g, f.k[3], f.k[3].did)
			return chainStep{st: f.st, op: fork, at: at(3 * time.Hour), want: badSignature}
		}},
		{"exactly 72h after the first nullified op", func(t *testing.T) chainStep {
			f := newForkFixture(t, 2, 2)
			fork := newUpdate(t, f.g, f.k[1], f.k[1].did)
			return chainStep{st: f.st, op: fork, at: at(time.Hour + window), signer: 1,
				nullified: cids(f.a, f.b), ops: cids(f.g, fork)}
		}},
		{"72h+1ms after the first nullified op", func(t *testing.T) chainStep {
			f := newForkFixture(t, 2, 2)
			fork := newUpdate(t, f.g, f.k[1], f.k[1].did)
			return chainStep{st: f.st, op: fork, at: at(time.Hour + window + time.Millisecond), want: wantErr{
				class: validate.ErrLateRecovery,
				msg:   "Recovery operation occurred outside of the allowed 72 hr recovery window. Time lapsed: 259200001",
			}}
		}},
		{"72h+1ms message prefix", func(t *testing.T) chainStep {
			f := newForkFixture(t, 2, 2)
			fork := newUpdate(t, f.g, f.k[0], f.k[0].did)
			return chainStep{st: f.st, op: fork, at: at(time.Hour + 2*window), want: lateRecovery}
		}},
		{"window counts from the first nullified op, not the last", func(t *testing.T) chainStep {
			// Within 72h of B but not of A.
			f := newForkFixture(t, 2, 2)
			fork := newUpdate(t, f.g, f.k[1], f.k[1].did)
			return chainStep{st: f.st, op: fork, at: at(time.Hour + window + time.Minute), want: lateRecovery}
		}},
		{"sub-millisecond excess is truncated away", func(t *testing.T) chainStep {
			// Acceptance times have millisecond precision, as in the log.
			f := newForkFixture(t, 2, 2)
			fork := newUpdate(t, f.g, f.k[1], f.k[1].did)
			return chainStep{st: f.st, op: fork, at: at(time.Hour + window + 999*time.Microsecond), signer: 1,
				nullified: cids(f.a, f.b), ops: cids(f.g, fork), recordedAt: at(time.Hour + window)}
		}},
		{"fork at the latest op's time", func(t *testing.T) chainStep {
			f := newForkFixture(t, 2, 2)
			fork := newUpdate(t, f.g, f.k[1], f.k[1].did)
			return chainStep{st: f.st, op: fork, at: at(2 * time.Hour), want: misordered}
		}},
		{"fork before the latest op", func(t *testing.T) chainStep {
			f := newForkFixture(t, 2, 2)
			fork := newUpdate(t, f.g, f.k[1], f.k[1].did)
			return chainStep{st: f.st, op: fork, at: at(90 * time.Minute), want: misordered}
		}},
		{"fork 1ms after the latest op", func(t *testing.T) chainStep {
			f := newForkFixture(t, 2, 2)
			fork := newUpdate(t, f.g, f.k[1], f.k[1].did)
			return chainStep{st: f.st, op: fork, at: at(2*time.Hour + time.Millisecond), signer: 1,
				nullified: cids(f.a, f.b), ops: cids(f.g, fork)}
		}},
		{"fork onto the prev of the head", func(t *testing.T) chainStep {
			f := newForkFixture(t, 2, 2)
			fork := newUpdate(t, f.a, f.k[2], f.k[2].did)
			return chainStep{st: f.st, op: fork, at: at(3 * time.Hour), want: badSignature}
		}},
		{"building on a nullified op", func(t *testing.T) chainStep {
			f := newForkFixture(t, 2, 2)
			fork := newUpdate(t, f.g, f.k[1], f.k[1].did)
			st, _ := mustNext(t, f.st, fork, at(3*time.Hour))
			onB := newUpdate(t, f.b, f.k[0], f.k[0].did)
			return chainStep{st: st, op: onB, at: at(4 * time.Hour), want: misordered}
		}},
		{"building on the first nullified op", func(t *testing.T) chainStep {
			f := newForkFixture(t, 2, 2)
			fork := newUpdate(t, f.g, f.k[1], dids(f.k[0], f.k[1], f.k[2])...)
			st, _ := mustNext(t, f.st, fork, at(3*time.Hour))
			onA := newUpdate(t, f.a, f.k[0], f.k[0].did)
			return chainStep{st: st, op: onA, at: at(4 * time.Hour), want: misordered}
		}},
		{"replaying a nullified op", func(t *testing.T) chainStep {
			f := newForkFixture(t, 2, 2)
			fork := newUpdate(t, f.g, f.k[1], dids(f.k[0], f.k[1], f.k[2])...)
			st, _ := mustNext(t, f.st, fork, at(3*time.Hour))
			// A's prev is G, which is not the head: A is now a fork by a
			// lower-priority key than fork's signer.
			return chainStep{st: st, op: f.a, at: at(4 * time.Hour), want: badSignature}
		}},
		{"tombstone nullified by a higher-priority key", func(t *testing.T) chainStep {
			k := k256Keys(t, 2)
			g := newGenesis(t, k[0], k[0].did, k[1].did)
			ts := newTombstone(t, g, k[1])
			st := replay(t, timedOp{g, at(0)}, timedOp{ts, at(time.Hour)})
			if !st.Tombstoned() {
				t.Fatal("state not tombstoned")
			}
			fork := newUpdate(t, g, k[0], k[0].did)
			return chainStep{st: st, op: fork, at: at(time.Hour + window), signer: 0,
				nullified: cids(ts), ops: cids(g, fork), tombstoned: false}
		}},
		{"tombstone nullified too late", func(t *testing.T) chainStep {
			k := k256Keys(t, 2)
			g := newGenesis(t, k[0], k[0].did, k[1].did)
			ts := newTombstone(t, g, k[1])
			st := replay(t, timedOp{g, at(0)}, timedOp{ts, at(time.Hour)})
			fork := newUpdate(t, g, k[0], k[0].did)
			return chainStep{st: st, op: fork, at: at(time.Hour + window + time.Millisecond), want: lateRecovery}
		}},
		{"tombstone replaced by a tombstone from a higher-priority key", func(t *testing.T) chainStep {
			k := k256Keys(t, 2)
			g := newGenesis(t, k[0], k[0].did, k[1].did)
			u := newUpdate(t, g, k[1], k[0].did, k[1].did)
			st := replay(t, timedOp{g, at(0)}, timedOp{u, at(time.Hour)})
			ts := newTombstone(t, g, k[0])
			return chainStep{st: st, op: ts, at: at(2 * time.Hour), signer: 0,
				nullified: cids(u), ops: cids(g, ts), tombstoned: true}
		}},
		{"fork after legacy create by the recovery key", func(t *testing.T) chainStep {
			k := k256Keys(t, 2)
			c := newCreate(t, k[0], k[1].did, k[0].did, "alice.test", "pds.example.com")
			u := newUpdate(t, c, k[1], k[1].did) // signed by signingKey: index 1
			st := replay(t, timedOp{c, at(0)}, timedOp{u, at(time.Hour)})
			fork := newUpdate(t, c, k[0], k[0].did) // recoveryKey: index 0
			return chainStep{st: st, op: fork, at: at(2 * time.Hour), signer: 0,
				nullified: cids(u), ops: cids(c, fork)}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.setup(t).run(t) })
	}
}

// TestNextNestedForks: G [k0 k1 k2] ← U1 (k2) ← U2 (k2); F1 on U1 by k1
// nullifies U2; then F2 on G by k0 nullifies U1 and F1 (U2 stays
// nullified). Each step is checked.
func TestNextNestedForks(t *testing.T) {
	k := k256Keys(t, 3)
	rot := dids(k[0], k[1], k[2])
	g := newGenesis(t, k[0], rot...)
	u1 := newUpdate(t, g, k[2], rot...)
	u2 := newUpdate(t, u1, k[2], rot...)
	f1 := newUpdate(t, u1, k[1], rot...)
	f1again := newUpdate(t, u1, k[1], rot...)
	f2 := newUpdate(t, g, k[0], rot...)
	f2late := newUpdate(t, g, k[0], k[0].did)

	st := replay(t, timedOp{g, at(0)}, timedOp{u1, at(time.Hour)}, timedOp{u2, at(2 * time.Hour)})
	steps := []struct {
		name string
		step chainStep
	}{
		{"F1 nullifies U2", chainStep{op: f1, at: at(3 * time.Hour), signer: 1,
			nullified: cids(u2), ops: cids(g, u1, f1)}},
		{"same key cannot re-fork F1", chainStep{op: f1again, at: at(4 * time.Hour), want: badSignature}},
		{"U2 cannot come back", chainStep{op: newUpdate(t, u2, k[0], rot...), at: at(4 * time.Hour), want: misordered}},
		{"F2 too late for U1", chainStep{op: f2late, at: at(time.Hour + validate.RecoveryWindow + time.Millisecond), want: lateRecovery}},
		{"F2 nullifies U1 and F1", chainStep{op: f2, at: at(5 * time.Hour), signer: 0,
			nullified: cids(u1, f1), ops: cids(g, f2)}},
		{"F1 cannot be built on", chainStep{op: newUpdate(t, f1, k[0], rot...), at: at(6 * time.Hour), want: misordered}},
		{"U1 cannot be built on", chainStep{op: newUpdate(t, u1, k[0], rot...), at: at(6 * time.Hour), want: misordered}},
	}
	for _, s := range steps {
		s.step.st = st
		ok := t.Run(s.name, func(t *testing.T) { s.step.run(t) })
		if !ok {
			t.FailNow()
		}
		if s.step.want.class == nil {
			st, _ = mustNext(t, st, s.step.op, s.step.at)
		}
	}
}

// TestNextDoesNotModifyReceiver checks the receiver is untouched by an
// accepted update, an accepted fork and a rejected op, and that the new
// state does not share its op slice with the old one.
func TestNextDoesNotModifyReceiver(t *testing.T) {
	f := newForkFixture(t, 2, 2)
	before := cloneState(f.st)
	for _, tc := range []struct {
		name string
		op   *validate.Op
		at   time.Time
		ok   bool
	}{
		{"update", newUpdate(t, f.b, f.k[0], f.k[0].did), at(3 * time.Hour), true},
		{"fork", newUpdate(t, f.g, f.k[0], f.k[0].did), at(3 * time.Hour), true},
		{"rejected", newUpdate(t, f.g, f.k[2], f.k[2].did), at(3 * time.Hour), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next, _, err := f.st.Next(tc.op, tc.at)
			if (err == nil) != tc.ok {
				t.Fatalf("Next err = %v, want ok=%v", err, tc.ok)
			}
			if !reflect.DeepEqual(f.st, before) {
				t.Fatalf("receiver modified:\n before %+v\n after  %+v", before, f.st)
			}
			if !tc.ok {
				return
			}
			// Writing through the new state must not reach the old one.
			for i := range next.Ops {
				next.Ops[i].CID = "clobbered"
				next.Ops[i].CreatedAt = time.Time{}
			}
			next.Ops = append(next.Ops, validate.ChainOp{CID: "extra"})
			if !reflect.DeepEqual(f.st, before) {
				t.Fatalf("new state aliases the receiver:\n before %+v\n after  %+v", before, f.st)
			}
		})
	}
}
