package corpus

import (
	"cmp"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// The plan: a cheap, sequential, deterministic pass that decides every
// line of the corpus (which DID, which kind of op, signed by which rotation
// key, at what time) before any key is drawn or anything is signed.

// kind is what a planned line does.
type kind uint8

const (
	kGenesis          kind = iota // plc_operation genesis
	kGenesisLegacy                // legacy create genesis (K-256 only)
	kHandle                       // new alsoKnownAs
	kPDS                          // PDS migration: new endpoint and new atproto key
	kVM                           // new atproto verification method key
	kRotation                     // rotation keys: replace key 1, or prepend a new key 0
	kHostile                      // signed by rotation key 1: hands the DID to an attacker key
	kAttacker                     // the attacker's follow-up, signed by the attacker key
	kTombstoneHostile             // a tombstone by rotation key 1, to be nullified
	kRecover                      // fork from the op before kHostile/kTombstoneHostile, by key 0
	kTombstone                    // final tombstone
	kChurn                        // new atproto key and every rotation key replaced (ShapeKeyChurn)

	// Invalid lines: the validator must reject them; they change nothing.
	kForged       // signed by a key that is not allowed
	kHighS        // a valid signature made malleable (s → n−s)
	kWrongPrev    // prev is a CID the DID never had
	kLateRecovery // a fork more than 72h after the op it would nullify
)

func (k kind) invalid() bool   { return k >= kForged }
func (k kind) tombstone() bool { return k == kTombstone || k == kTombstoneHostile }

// planOp is one planned line: 16 bytes, so the plan of a large corpus stays
// small.
type planOp struct {
	t    int64  // createdAt, ms since the Unix epoch
	did  uint32 // index of the DID, in plan order
	kind kind
	aux  uint8 // auxSigner bits, auxP256, auxLast
}

const (
	auxSigner = 0x0f // index, among the previous op's rotation keys, of the signer
	auxP256   = 0x10 // on a genesis op: the DID's keys are P-256
	auxLast   = 0x80 // the DID's last line: its state can be dropped
)

// Shape of the simulated directory.
var (
	epoch = time.Date(2022, 11, 16, 0, 0, 0, 0, time.UTC).UnixMilli()
	span  = (3 * 365 * 24 * time.Hour).Milliseconds()
)

const (
	maxNormalOps   = 60   // cap of the per-DID op count draw
	zipfExponent   = 2.5  // P(n) ∝ n^-2.5: 75% of DIDs have one op, 13% two, 5% three
	shareLegacy    = 0.03 // legacy create genesis
	shareP256      = 0.15 // DIDs whose keys are P-256 (of all DIDs; legacy ones are K-256)
	shareRecovered = 0.01 // hostile update by key 1, recovered by key 0 within 72h
	shareTombstone = 0.005
	// Of the tombstoned DIDs, the share whose tombstone (signed by key 1) is
	// nullified by key 0 within 72h.
	shareTombstoneNullified = 0.25
	shareSignerKey1         = 0.15 // regular updates signed by rotation key 1

	// ShapeLongGap: the gap between a DID's ops, in lines, is drawn
	// log-normal with this median and log-deviation; times are derived from
	// the corpus's expected line density where the op falls. Drawn gaps
	// land among other DIDs' lines unevenly (and runs past the span are
	// compressed), so the measured median is about 2,800 for a draw of
	// 4,000 (TestLongGapMedian).
	longGapMedian = 4000
	longGapSigma  = 1.2
	// ShapeKeyChurn: the share of updates that replace every key.
	shareChurn = 0.8

	ms     = int64(1)
	second = 1000 * ms
	minute = 60 * second
	hour   = 60 * minute
	day    = 24 * hour
)

// planner draws the plan. Valid lines come from rng; invalid ones from a
// separate stream, so the valid part of a corpus does not depend on
// --invalid-rate.
type planner struct {
	cfg     Config
	rng     *rand.Rand
	bad     *rand.Rand
	zipfCDF [maxNormalOps]float64
	lines   float64 // expected valid lines, for ShapeLongGap's densities
	ops     []planOp
	stats   Stats
	// scratch
	ts      []int64
	entries []entry
}

type entry struct {
	t      int64
	kind   kind
	signer uint8
}

// didPlan is one DID's valid lines, before invalid ones are mixed in.
type didPlan struct {
	entries []entry
	legacy  bool
	p256    bool
}

func seedFor(seed uint64, domain string, a, b uint32, c byte) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[0:], seed)
	binary.LittleEndian.PutUint32(s[8:], a)
	binary.LittleEndian.PutUint32(s[12:], b)
	s[16] = c
	copy(s[24:], domain)
	return s
}

func newPlanner(cfg Config) *planner {
	p := &planner{
		cfg: cfg,
		rng: rand.New(rand.NewChaCha8(seedFor(cfg.Seed, "plan", 0, 0, 0))),
		bad: rand.New(rand.NewChaCha8(seedFor(cfg.Seed, "invalid", 0, 0, 0))),
	}
	sum := 0.0
	for n := 1; n <= maxNormalOps; n++ {
		sum += math.Pow(float64(n), -zipfExponent)
		p.zipfCDF[n-1] = sum
	}
	mean := 0.0
	for i := range p.zipfCDF {
		p.zipfCDF[i] /= sum
		mean += float64(i+1) * math.Pow(float64(i+1), -zipfExponent) / sum
	}
	p.lines = float64(cfg.Ops)
	if cfg.DIDs > 0 {
		p.lines = float64(cfg.DIDs) * mean
	}
	return p
}

// plan draws the whole corpus: DIDs until cfg.DIDs of them or cfg.Ops valid
// ops, then every line in createdAt order with strictly increasing times.
func (p *planner) plan() []planOp {
	if p.cfg.Shape == ShapeLongChain {
		p.commit(0, p.drawDID(p.cfg.Ops))
	}
	for did := uint32(0); p.cfg.Shape != ShapeLongChain; did++ {
		if p.cfg.DIDs > 0 && p.stats.DIDs == p.cfg.DIDs {
			break
		}
		if p.cfg.Ops > 0 && p.stats.Ops == p.cfg.Ops {
			break
		}
		d := p.drawDID(0)
		if p.cfg.Ops > 0 && p.stats.Ops+len(d.entries) > p.cfg.Ops {
			// The last DID takes exactly the ops that are left, plainly.
			d = p.drawDID(p.cfg.Ops - p.stats.Ops)
		}
		p.commit(did, d)
	}
	slices.SortFunc(p.ops, func(a, b planOp) int {
		if c := cmp.Compare(a.t, b.t); c != 0 {
			return c
		}
		return cmp.Compare(a.did, b.did)
	})
	// Strictly increasing createdAt along seq. Within a DID the planned
	// times are already strictly increasing, so the order is kept; the
	// shifts are milliseconds against windows planned with hours of margin.
	for i := 1; i < len(p.ops); i++ {
		if p.ops[i].t <= p.ops[i-1].t {
			p.ops[i].t = p.ops[i-1].t + 1
		}
	}
	if len(p.ops) > 0 {
		p.stats.First = time.UnixMilli(p.ops[0].t).UTC()
		p.stats.Last = time.UnixMilli(p.ops[len(p.ops)-1].t).UTC()
	}
	p.stats.Lines = len(p.ops)
	return p.ops
}

func (p *planner) uniform(lo, hi int64) int64 { return lo + p.rng.Int64N(hi-lo+1) }

// drawDID draws one DID's valid lines. forceN > 0 asks for exactly that
// many, with no hostile update or tombstone.
func (p *planner) drawDID(forceN int) didPlan {
	r := p.rng
	n := forceN
	if n == 0 {
		u := r.Float64()
		n, _ = slices.BinarySearch(p.zipfCDF[:], u)
		n = min(n+1, maxNormalOps)
	}
	var d didPlan
	d.legacy = r.Float64() < shareLegacy
	d.p256 = !d.legacy && r.Float64() < shareP256/(1-shareLegacy)
	scenario := r.Float64()
	nullifyTomb := r.Float64() < shareTombstoneNullified
	if forceN > 0 {
		scenario = 1
	}

	// Creation time: legacy creates only in the first months; the rest
	// with a density growing linearly over the span.
	var created int64
	if d.legacy {
		created = epoch + p.uniform(0, 150*day)
	} else {
		created = epoch + int64(math.Sqrt(r.Float64())*float64(span))
	}

	// Normal op times: often a handle change right after signing up, the
	// rest spread over a lifetime drawn log-uniformly from a day to two
	// years.
	ts := append(p.ts[:0], created)
	if n >= 2 && p.cfg.Shape == ShapeLongGap {
		ts = p.longGapTimes(ts, n)
	} else if n >= 2 {
		if r.IntN(2) == 0 {
			ts = append(ts, created+p.uniform(10*second, 30*minute))
		}
		life := int64(math.Exp(math.Log(float64(day)) + r.Float64()*math.Log(730)))
		life = min(life, max(epoch+span-created, day))
		first := len(ts)
		for len(ts) < n {
			ts = append(ts, created+p.uniform(0, life))
		}
		slices.Sort(ts[first:])
		for i := 1; i < len(ts); i++ {
			ts[i] = max(ts[i], ts[i-1]+second)
		}
	}
	p.ts = ts

	es := p.entries[:0]
	genesis := entry{t: created, kind: kGenesis}
	if d.legacy {
		genesis.kind, genesis.signer = kGenesisLegacy, 1 // legacy creates were signed by the signing key
	}
	es = append(es, genesis)
	for i := 1; i < n; i++ {
		e := entry{t: ts[i]}
		switch k := r.IntN(100); {
		case p.cfg.Shape == ShapeKeyChurn && r.Float64() < shareChurn:
			e.kind = kChurn
		case k < 45:
			e.kind = kHandle
		case k < 70:
			e.kind = kPDS
		case k < 82:
			e.kind = kVM
		default:
			e.kind = kRotation
		}
		if r.Float64() < shareSignerKey1 {
			e.signer = 1
		}
		es = append(es, e)
	}

	switch {
	case scenario < shareRecovered || scenario < shareRecovered+shareTombstone && nullifyTomb:
		// After normal op j: a hostile update (or tombstone) by key 1, maybe
		// an attacker follow-up, and within 48h a fork by key 0 from op j.
		// Every later op moves after the fork.
		j := r.IntN(n)
		t0 := es[j].t + p.uniform(10*minute, 7*day)
		var sc []entry
		if scenario < shareRecovered {
			sc = append(sc, entry{t: t0, kind: kHostile, signer: 1})
			if r.IntN(2) == 0 {
				sc = append(sc, entry{t: t0 + p.uniform(minute, 6*hour), kind: kAttacker})
			}
			sc = append(sc, entry{t: t0 + p.uniform(7*hour, 48*hour), kind: kRecover})
		} else {
			sc = append(sc, entry{t: t0, kind: kTombstoneHostile, signer: 1})
			sc = append(sc, entry{t: t0 + p.uniform(hour, 48*hour), kind: kRecover})
		}
		shift := sc[len(sc)-1].t - es[j].t + p.uniform(10*minute, day)
		for i := j + 1; i < len(es); i++ {
			es[i].t += shift
		}
		es = slices.Insert(es, j+1, sc...)
	case scenario < shareRecovered+shareTombstone:
		e := entry{t: es[len(es)-1].t + p.uniform(hour, 180*day), kind: kTombstone}
		if r.IntN(5) == 0 {
			e.signer = 1
		}
		es = append(es, e)
	}
	p.entries = es
	d.entries = es
	return d
}

// longGapTimes appends the times of a DID's n-1 normal ops after its
// creation time ts[0]: each gap is drawn in lines and turned into
// milliseconds at the line density the corpus is expected to have at that
// time (the density grows linearly with time, as creations do; a floor keeps
// the first weeks from stretching gaps over years). A DID's ops end within
// 60 days of the simulated span: a run that would go past it is compressed.
func (p *planner) longGapTimes(ts []int64, n int) []int64 {
	r := p.rng
	created := ts[0]
	t := created
	for len(ts) < n {
		lines := longGapMedian * math.Exp(longGapSigma*r.NormFloat64())
		at := float64(min(max(t-epoch, span/10), span))
		density := 2 * max(p.lines, 1) * at / (float64(span) * float64(span)) // lines per ms
		t += max(int64(lines/density), second)
		ts = append(ts, t)
	}
	if limit := epoch + span + 60*day; t > limit {
		f := float64(max(limit-created, day)) / float64(t-created)
		for i := 1; i < n; i++ {
			ts[i] = created + int64(float64(ts[i]-created)*f)
		}
	}
	for i := 1; i < n; i++ {
		ts[i] = max(ts[i], ts[i-1]+second)
	}
	return ts
}

// commit appends a DID's lines to the plan, mixing in invalid lines at
// cfg.InvalidRate, and counts them.
func (p *planner) commit(did uint32, d didPlan) {
	s := &p.stats
	s.DIDs++
	s.Ops += len(d.entries)
	s.MaxOpsPerDID = max(s.MaxOpsPerDID, len(d.entries))
	if d.legacy {
		s.Legacy++
	}
	if d.p256 {
		s.P256DIDs++
	}
	for i, e := range d.entries {
		aux := e.signer
		if i == 0 && d.p256 {
			aux |= auxP256
		}
		p.ops = append(p.ops, planOp{t: e.t, did: did, kind: e.kind, aux: aux})
		switch e.kind {
		case kHostile:
			s.Recovered++
			s.Nullified++
		case kAttacker:
			s.Nullified++
		case kTombstoneHostile:
			s.Tombstoned++
			s.TombstonesNullified++
			s.Nullified++
		case kTombstone:
			s.Tombstoned++
		}
		if d.p256 && e.kind != kAttacker {
			s.P256Ops++
		}
		if p.cfg.InvalidRate > 0 && !e.kind.tombstone() {
			end := e.t + 30*day
			if i+1 < len(d.entries) {
				end = d.entries[i+1].t
			}
			p.invalid(did, e, end)
		}
	}
	p.ops[len(p.ops)-1].aux |= auxLast
}

// invalid maybe adds one invalid line for did strictly between e (the
// DID's head) and end (its next op).
func (p *planner) invalid(did uint32, e entry, end int64) {
	r := p.bad
	if r.Float64() >= p.cfg.InvalidRate || end-e.t < 10*ms {
		return
	}
	// A late recovery needs a head signed by key 1 that kept its prev's
	// rotation keys, and room for a fork more than 72h after it.
	// (A PDS migration of ShapeSharedKeys replaces the shared key 0.)
	keptKeys := e.kind == kHandle || e.kind == kVM || e.kind == kPDS && p.cfg.Shape != ShapeSharedKeys
	lateOK := e.signer == 1 && keptKeys && end-e.t > 72*hour+3*hour
	var k kind
	if lateOK && r.IntN(2) == 0 {
		k = kLateRecovery
	} else {
		k = kForged + kind(r.IntN(3))
	}
	var t int64
	if k == kLateRecovery {
		lo := e.t + 73*hour
		t = lo + r.Int64N(min(end-hour-lo, 30*day))
	} else {
		t = e.t + 1 + r.Int64N(end-e.t-1)
	}
	p.ops = append(p.ops, planOp{t: t, did: did, kind: k})
	p.stats.Invalid[k-kForged]++
}
