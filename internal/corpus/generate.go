package corpus

import (
	"bufio"
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plcdir/plc/validate"
)

// Config says what to generate. Exactly one of DIDs and Ops is positive.
type Config struct {
	// DIDs is the number of DIDs to generate.
	DIDs int
	// Ops is the number of valid ops to generate; the last DID is cut short
	// to make it exact. Invalid lines come on top.
	Ops int
	// Seed selects the corpus: the same Config gives the same bytes.
	Seed uint64
	// InvalidRate, in [0, 1], is the probability that an invalid line is
	// mixed in after each valid op that is not a tombstone.
	InvalidRate float64
	// Workers is the number of signing goroutines; 0 means GOMAXPROCS. It
	// changes the speed, never the output.
	Workers int
	// OnInvalid, when set, is called for every invalid line, in log order,
	// from the goroutine that writes.
	OnInvalid func(seq int64, kind InvalidKind)
	// Shape is the corpus's shape (default ShapeDirectory).
	Shape Shape
}

// Shape names a corpus shape.
type Shape string

const (
	// ShapeDirectory: DIDs shaped like the real directory's (see the
	// package doc).
	ShapeDirectory Shape = "directory"
	// ShapeLongChain: one DID whose Ops valid ops are a genesis and a long
	// chain of updates (handle, PDS, key and rotation-key changes, no
	// recovery or tombstone), at strictly increasing times a second or
	// more apart: the history that costs the most per op to replay. It
	// takes Ops, not DIDs.
	ShapeLongChain Shape = "longchain"
	// ShapeLongGap: the directory's DIDs and ops, but a DID's next op
	// comes a median of about 2,800 lines after the one before it, with a
	// long tail (the gap in lines is log-normal), where the directory
	// shape has a median of about 200.
	ShapeLongGap Shape = "longgap"
	// ShapeKeyChurn: the directory's DIDs, but four updates in five
	// replace every rotation key and the atproto key.
	ShapeKeyChurn Shape = "keychurn"
	// ShapeSharedKeys: the directory's DIDs, but every K-256 DID that is
	// not a legacy create has one of a handful of PDS rotation keys first
	// in its rotation keys, then its own; a PDS migration moves it to
	// another of them. Most ops are signed by a shared key.
	ShapeSharedKeys Shape = "sharedkeys"
)

// Shapes lists the shapes Generate knows, the default first.
func Shapes() []Shape {
	return []Shape{ShapeDirectory, ShapeLongChain, ShapeLongGap, ShapeKeyChurn, ShapeSharedKeys}
}

func (c *Config) check() error {
	if (c.DIDs > 0) == (c.Ops > 0) || c.DIDs < 0 || c.Ops < 0 {
		return errors.New("exactly one of DIDs and Ops must be positive")
	}
	if int64(c.DIDs) > math.MaxUint32 || int64(c.Ops) > math.MaxUint32 {
		return fmt.Errorf("at most %d DIDs or ops", uint32(math.MaxUint32))
	}
	if !(c.InvalidRate >= 0 && c.InvalidRate <= 1) {
		return fmt.Errorf("invalid rate %v is not in [0, 1]", c.InvalidRate)
	}
	switch c.Shape {
	case "", ShapeDirectory, ShapeLongGap, ShapeKeyChurn, ShapeSharedKeys:
	case ShapeLongChain:
		if c.Ops <= 0 {
			return errors.New("the longchain shape takes a number of ops, not of DIDs")
		}
	default:
		return fmt.Errorf("unknown shape %q (want one of %v)", c.Shape, Shapes())
	}
	if c.Workers < 0 {
		return errors.New("workers must not be negative")
	}
	return nil
}

// InvalidKind names the kinds of invalid lines.
type InvalidKind uint8

const (
	// InvalidForged: signed by a key that is not among the allowed rotation
	// keys.
	InvalidForged InvalidKind = iota
	// InvalidHighS: a valid signature turned into its malleable twin
	// (s replaced by n−s).
	InvalidHighS
	// InvalidWrongPrev: prev is a CID the DID never had.
	InvalidWrongPrev
	// InvalidLateRecovery: a fork by a higher-priority key, more than 72h
	// after the op it would nullify.
	InvalidLateRecovery

	NumInvalidKinds = 4
)

func (k InvalidKind) String() string {
	switch k {
	case InvalidForged:
		return "forged signature"
	case InvalidHighS:
		return "high-S signature"
	case InvalidWrongPrev:
		return "wrong prev"
	case InvalidLateRecovery:
		return "late recovery"
	}
	return "InvalidKind(" + strconv.Itoa(int(k)) + ")"
}

// Class is the validate error class the line must be rejected with.
func (k InvalidKind) Class() error {
	switch k {
	case InvalidForged, InvalidHighS:
		return validate.ErrInvalidSignature
	case InvalidWrongPrev:
		return validate.ErrMisordered
	case InvalidLateRecovery:
		return validate.ErrLateRecovery
	}
	return nil
}

// Stats describes a generated corpus. Everything but Elapsed is known from
// the plan, before signing.
type Stats struct {
	DIDs  int
	Ops   int // valid ops
	Lines int // all lines: Ops plus the invalid ones
	// MaxOpsPerDID counts a DID's valid ops, nullified ones included.
	MaxOpsPerDID int
	// Nullified is the number of valid ops a later recovery nullifies.
	Nullified int
	// Recovered is the number of DIDs recovered from a hostile update.
	Recovered int
	// Tombstoned is the number of DIDs with a tombstone;
	// TombstonesNullified of those tombstones are nullified by a recovery.
	Tombstoned, TombstonesNullified int
	// Legacy is the number of DIDs created by a legacy create op.
	Legacy int
	// P256DIDs have P-256 keys; P256Ops are the valid ops signed by one.
	P256DIDs, P256Ops int
	Invalid           [NumInvalidKinds]int
	// First and Last are the createdAt of the first and last lines.
	First, Last time.Time
	Elapsed     time.Duration
}

// InvalidTotal is the number of invalid lines.
func (s *Stats) InvalidTotal() int {
	n := 0
	for _, c := range s.Invalid {
		n += c
	}
	return n
}

// chunkSize is the number of lines signed between two writes: it bounds
// the signed lines held in memory (two chunks: one being written, one
// being signed).
const chunkSize = 1 << 14

// Generate writes the corpus cfg describes to w and returns its
// statistics. Lines are separated by "\n", with none after the last, as
// GET /export writes them.
func Generate(ctx context.Context, w io.Writer, cfg Config) (Stats, error) {
	if err := cfg.check(); err != nil {
		return Stats{}, err
	}
	cfg.Workers = cmp.Or(cfg.Workers, runtime.GOMAXPROCS(0))
	begin := time.Now()
	var err error
	pl := newPlanner(cfg)
	ops := pl.plan()
	g := &generator{seed: cfg.Seed, states: make([]*didState, pl.stats.DIDs)}
	if cfg.Shape == ShapeSharedKeys {
		if g.pdsKeys, err = sharedKeys(cfg.Seed); err != nil {
			return Stats{}, err
		}
	}

	type chunk struct {
		base  int
		lines [][]byte
	}
	chunks := make(chan chunk, 1)
	werr := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(w, 1<<20)
		var err error
		for c := range chunks {
			if err != nil {
				continue // drain
			}
			for i, line := range c.lines {
				seq := c.base + i + 1
				if seq > 1 {
					bw.WriteByte('\n')
				}
				if _, err = bw.Write(line); err != nil {
					break
				}
				if k := ops[seq-1].kind; k.invalid() && cfg.OnInvalid != nil {
					cfg.OnInvalid(int64(seq), InvalidKind(k-kForged))
				}
			}
		}
		if err == nil {
			err = bw.Flush()
		}
		werr <- err
	}()

	for base := 0; base < len(ops) && err == nil; base += chunkSize {
		if err = ctx.Err(); err != nil {
			break
		}
		part := ops[base:min(base+chunkSize, len(ops))]
		lines := make([][]byte, len(part))
		if err = g.signChunk(part, base, lines, cfg.Workers); err == nil {
			chunks <- chunk{base: base, lines: lines}
		}
	}
	close(chunks)
	if e := <-werr; err == nil && e != nil {
		err = fmt.Errorf("write: %w", e)
	}
	pl.stats.Elapsed = time.Since(begin)
	return pl.stats, err
}

// generator signs planned lines. Each DID's state is touched by one worker
// at a time: within a chunk a DID belongs to one worker, and chunks are
// signed one after the other.
type generator struct {
	seed   uint64
	states []*didState // by DID index; nil before genesis and after the last line
	// pdsKeys are ShapeSharedKeys's PDS rotation keys, shared by DIDs.
	pdsKeys []*key
}

// numPDSKeys is the number of PDS rotation keys of ShapeSharedKeys.
const numPDSKeys = 6

// sharedKeys draws ShapeSharedKeys's PDS rotation keys (K-256, as the real
// PDSes' are).
func sharedKeys(seed uint64) ([]*key, error) {
	keys := make([]*key, numPDSKeys)
	for i := range keys {
		k, err := newKey(rand.NewChaCha8(seedFor(seed, "pdskey", uint32(i), 0, 0)), false)
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	return keys, nil
}

// pdsKey picks a shared PDS rotation key: the first one for most DIDs, as
// one large PDS holds most accounts.
func (g *generator) pdsKey(r *rand.Rand) *key {
	if r.IntN(2) == 0 {
		return g.pdsKeys[0]
	}
	return g.pdsKeys[r.IntN(len(g.pdsKeys))]
}

// shared reports whether k is one of the shared PDS rotation keys.
func (g *generator) shared(k *key) bool {
	return slices.Contains(g.pdsKeys, k)
}

// signChunk renders part (the lines from seq base+1 on) into lines, the
// ops of each DID in order, different DIDs in parallel.
func (g *generator) signChunk(part []planOp, base int, lines [][]byte, workers int) error {
	order := make([]int32, len(part))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(a, b int32) int { return cmp.Compare(part[a].did, part[b].did) })
	var groups []int32 // start of each DID's run in order
	for i := range order {
		if i == 0 || part[order[i]].did != part[order[i-1]].did {
			groups = append(groups, int32(i))
		}
	}
	groups = append(groups, int32(len(order)))

	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	for range min(workers, len(groups)-1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				gi := int(next.Add(1) - 1)
				if gi >= len(groups)-1 {
					return
				}
				for _, i := range order[groups[gi]:groups[gi+1]] {
					line, err := g.line(&part[i], int64(base)+int64(i)+1)
					if err != nil {
						errOnce.Do(func() { first = err })
						next.Store(int64(len(groups)))
						return
					}
					lines[i] = line
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// content is the identity data of a DID's head, with the private keys of
// its rotation keys.
type content struct {
	rot    []*key // never modified in place: replaced on change
	vm     string
	handle string // an alsoKnownAs entry
	pds    string
}

func (c *content) operation(prev string) validate.Operation {
	rk := make([]string, len(c.rot))
	for i, k := range c.rot {
		rk[i] = k.didKey
	}
	return validate.Operation{
		Type:                validate.TypeOperation,
		RotationKeys:        rk,
		VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: c.vm}},
		AlsoKnownAs:         []string{c.handle},
		Services:            []validate.Service{{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: c.pds}},
		Prev:                prev,
	}
}

// didState is what the generator remembers of a DID between its lines.
type didState struct {
	did  string
	p256 bool
	n    uint32 // valid ops so far: keys the per-op random stream

	cur      content // the head's data (the data before it, if the head is a tombstone)
	head     string  // CID of the head
	prevHead string  // CID of the op before the head, "" if the head is the genesis

	// Saved by kHostile and kTombstoneHostile for the kRecover that follows.
	anchor    content
	anchorCID string
}

// line signs and renders one planned line.
func (g *generator) line(p *planOp, seq int64) ([]byte, error) {
	st := g.states[p.did]
	var n uint32
	if st != nil {
		n = st.n
	}
	inv := byte(0)
	if p.kind.invalid() {
		inv = 1
	}
	src := rand.NewChaCha8(seedFor(g.seed, "op", p.did, n, inv))
	r := rand.New(src)
	op, err := g.apply(&st, p, src, r)
	if err != nil {
		return nil, fmt.Errorf("line %d (DID %d, kind %d): %w", seq, p.did, p.kind, err)
	}
	if !p.kind.invalid() {
		st.n++
	}
	g.states[p.did] = st
	if p.aux&auxLast != 0 {
		g.states[p.did] = nil
	}
	return appendLine(make([]byte, 0, 768), st.did, op, p.t, seq), nil
}

// apply builds and signs the op p plans and, for a valid op, advances the
// DID's state (*stp is nil before the genesis op).
func (g *generator) apply(stp **didState, p *planOp, src *rand.ChaCha8, r *rand.Rand) (*validate.Op, error) {
	st := *stp
	signer := int(p.aux & auxSigner)
	switch p.kind {
	case kGenesis:
		p256 := p.aux&auxP256 != 0
		keys, err := newKeys(src, p256, 3)
		if err != nil {
			return nil, err
		}
		c := content{rot: keys[:2], vm: keys[2].didKey, handle: newHandle(r), pds: newPDS(r, p.t)}
		if g.pdsKeys != nil && !p256 {
			c.rot = []*key{g.pdsKey(r), keys[1]}
		}
		op, err := validate.Sign(c.operation(""), c.rot[signer])
		if err != nil {
			return nil, err
		}
		*stp = &didState{did: op.GenesisDID(), p256: p256, cur: c, head: op.CID()}
		return op, nil

	case kGenesisLegacy:
		keys, err := newKeys(src, false, 2)
		if err != nil {
			return nil, err
		}
		rec, sgn := keys[0], keys[1]
		h := legacyHandle(r)
		op, err := validate.Sign(validate.Operation{
			Type:        validate.TypeCreate,
			SigningKey:  sgn.didKey,
			RecoveryKey: rec.didKey,
			Handle:      h,
			Service:     "https://bsky.social",
		}, keys[signer])
		if err != nil {
			return nil, err
		}
		// The normalised data (PLC-REFERENCE §1).
		c := content{rot: keys, vm: sgn.didKey, handle: "at://" + h, pds: "https://bsky.social"}
		*stp = &didState{did: op.GenesisDID(), cur: c, head: op.CID()}
		return op, nil

	case kHandle, kPDS, kVM, kRotation, kHostile, kAttacker, kChurn:
		next := st.cur
		switch p.kind {
		case kHandle:
			next.handle = newHandle(r)
		case kPDS, kVM:
			k, err := newKey(src, st.p256)
			if err != nil {
				return nil, err
			}
			next.vm = k.didKey
			if p.kind == kPDS {
				next.pds = newPDS(r, p.t)
				if g.pdsKeys != nil && g.shared(next.rot[0]) {
					// The new PDS's rotation key replaces the old one's.
					next.rot = slices.Clone(next.rot)
					next.rot[0] = g.pdsKey(r)
				}
			}
		case kChurn:
			keys, err := newKeys(src, st.p256, len(st.cur.rot)+1)
			if err != nil {
				return nil, err
			}
			next.rot, next.vm = keys[1:], keys[0].didKey
		case kRotation:
			k, err := newKey(src, st.p256)
			if err != nil {
				return nil, err
			}
			if len(st.cur.rot) < 4 && r.IntN(10) < 4 {
				next.rot = append([]*key{k}, st.cur.rot...) // a new recovery key on top
			} else {
				next.rot = slices.Clone(st.cur.rot)
				next.rot[1] = k
			}
		case kHostile:
			k, err := newKey(src, false)
			if err != nil {
				return nil, err
			}
			next = content{rot: []*key{k}, vm: st.cur.vm, handle: newHandle(r), pds: hostilePDS(r)}
			st.anchor, st.anchorCID = st.cur, st.head
		case kAttacker:
			next.handle = newHandle(r)
		}
		op, err := validate.Sign(next.operation(st.head), st.cur.rot[signer])
		if err != nil {
			return nil, err
		}
		st.cur, st.prevHead, st.head = next, st.head, op.CID()
		return op, nil

	case kTombstone, kTombstoneHostile:
		op, err := validate.Sign(validate.Operation{Type: validate.TypeTombstone, Prev: st.head}, st.cur.rot[signer])
		if err != nil {
			return nil, err
		}
		if p.kind == kTombstoneHostile {
			st.anchor, st.anchorCID = st.cur, st.head
		}
		st.prevHead, st.head = st.head, op.CID()
		return op, nil

	case kRecover:
		// Fork from the anchor with its key 0, replacing the key 1 that
		// signed the hostile op.
		k, err := newKey(src, st.p256)
		if err != nil {
			return nil, err
		}
		next := st.anchor
		next.rot = slices.Clone(next.rot)
		next.rot[1] = k
		op, err := validate.Sign(next.operation(st.anchorCID), st.anchor.rot[0])
		if err != nil {
			return nil, err
		}
		st.cur, st.prevHead, st.head = next, st.anchorCID, op.CID()
		st.anchor, st.anchorCID = content{}, ""
		return op, nil

	case kForged, kHighS, kWrongPrev, kLateRecovery:
		// Invalid lines leave the state as it is.
		next := st.cur
		next.handle = newHandle(r)
		prev, by := st.head, st.cur.rot[0]
		switch p.kind {
		case kForged:
			k, err := newKey(src, st.p256)
			if err != nil {
				return nil, err
			}
			by = k
		case kWrongPrev:
			var b [32]byte
			src.Read(b[:])
			prev = validate.CIDForCBOR(b[:])
		case kLateRecovery:
			// The head was signed by key 1 and kept its prev's rotation
			// keys (the plan sees to it): key 0 may fork from the prev,
			// but too late.
			prev = st.prevHead
		}
		op, err := validate.Sign(next.operation(prev), by)
		if err != nil || p.kind != kHighS {
			return op, err
		}
		o := op.Operation()
		sig, err := base64.RawURLEncoding.DecodeString(o.Sig)
		if err != nil {
			return nil, err
		}
		o.Sig = base64.RawURLEncoding.EncodeToString(by.highS(sig))
		return validate.NewOp(o)
	}
	return nil, fmt.Errorf("unknown kind %d", p.kind)
}

func newKeys(src *rand.ChaCha8, p256 bool, n int) ([]*key, error) {
	keys := make([]*key, n)
	for i := range keys {
		k, err := newKey(src, p256)
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	return keys, nil
}

// appendLine appends a seq-mode export line, as GET /export and
// /export/stream render it.
func appendLine(dst []byte, did string, op *validate.Op, createdAt int64, seq int64) []byte {
	return validate.AppendSequencedJSON(dst, did, op, time.UnixMilli(createdAt).UTC(), seq)
}
