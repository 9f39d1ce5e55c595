package opbuild

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/plcdir/plc/validate"
)

// ErrRefused is the class of every op this package refuses to build or
// pass: one the directory would refuse (the validate verdict is wrapped
// too), a key that may not sign it, a recovery with nothing to nullify or
// outside the window.
var ErrRefused = errors.New("operation refused")

// Changes are what an update or recovery changes of the state it builds
// on. The zero Changes keeps everything.
type Changes struct {
	// Handle, when set, becomes the first at:// entry of alsoKnownAs
	// (replacing the current one; other entries are kept).
	Handle string
	// PDS, when set, becomes the endpoint of the atproto_pds service.
	PDS string
	// SigningKey, when set, becomes the atproto verification method.
	SigningKey string
	// AddRotationKeys are appended to the rotation keys (lowest priority
	// last), RemoveRotationKeys removed; both are did:keys.
	AddRotationKeys    []string
	RemoveRotationKeys []string
}

// Empty reports whether c changes nothing.
func (c Changes) Empty() bool {
	return c.Handle == "" && c.PDS == "" && c.SigningKey == "" && len(c.AddRotationKeys) == 0 && len(c.RemoveRotationKeys) == 0
}

// Result is a signed op that passed every check, with what it does.
type Result struct {
	DID string
	Op  *validate.Op
	// Document is the DID document the op makes current (nil for a
	// tombstone).
	Document []byte
	// Nullifies lists the CIDs of the ops a recovery nullifies, oldest
	// first.
	Nullifies []string
	// At is the time the op was judged at.
	At time.Time
}

// Genesis is what a genesis op states.
type Genesis struct {
	RotationKeys []string // did:keys, highest priority first
	SigningKey   string   // did:key of the atproto verification method; "" for none
	Handle       string   // "" for none
	PDS          string   // "" for none
}

// BuildGenesis builds the genesis op of g, signs it with key (one of its
// rotation keys) and checks it as a directory would at now.
func BuildGenesis(g Genesis, key *Key, now time.Time) (*Result, error) {
	if len(g.RotationKeys) == 0 {
		return nil, fmt.Errorf("%w: a DID needs at least one rotation key", ErrRefused)
	}
	if !slices.Contains(g.RotationKeys, key.DIDKey) {
		return nil, fmt.Errorf("%w: the signing rotation key %s is not one of the DID's rotation keys", ErrRefused, key.DIDKey)
	}
	body := validate.Operation{Type: validate.TypeOperation, RotationKeys: []string{}, VerificationMethods: []validate.VerificationMethod{},
		AlsoKnownAs: []string{}, Services: []validate.Service{}}
	ch := Changes{Handle: g.Handle, PDS: g.PDS, SigningKey: g.SigningKey, AddRotationKeys: g.RotationKeys}
	if err := ch.apply(&body); err != nil {
		return nil, err
	}
	op, err := validate.Sign(body, key)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrRefused, describe(err))
	}
	h := &History{DID: op.GenesisDID()}
	h.State.DID = h.DID
	return h.Check(op, now)
}

// Update builds the op after the DID's current head with ch applied to
// its state, signs it with key (one of the head's rotation keys) and
// checks it as a directory would at now.
func (h *History) Update(ch Changes, key *Key, now time.Time) (*Result, error) {
	head, ok := h.State.Head()
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: %s has no ops (make it with plc op genesis)", ErrRefused, h.DID)
	case head.Tombstone:
		return nil, fmt.Errorf("%w: %s is deactivated (its head %s is a tombstone): only a recovery within 72 hours can undo it (plc op recover)", ErrRefused, h.DID, head.CID)
	case !slices.Contains(head.RotationKeys, key.DIDKey):
		return nil, fmt.Errorf("%w: %s is not a rotation key of %s's current op %s (its rotation keys: %s)",
			ErrRefused, key.DIDKey, h.DID, head.CID, strings.Join(head.RotationKeys, ", "))
	}
	return h.build(head.CID, ch, key, now)
}

// Recover builds a recovery fork signed by key, restoring the state of
// the op it forks from with ch applied, and checks it as a directory
// would at now.
//
// With from empty, the ops it nullifies are the latest ones, back to the
// latest op not signed by a key of lower priority than key (one listed
// after key in the rotation keys of its prev, or in keys that do not list
// key at all) — of them, those accepted within validate.RecoveryWindow of
// now, the only ones a fork may still nullify. With from set (a CID), the
// fork nullifies that op and every non-nullified op after it.
//
// Either way the fork must be allowed — key listed in its prev's rotation
// keys before the key that signed the first op it nullifies, that op
// accepted at most validate.RecoveryWindow before now — or it is refused
// with the reason.
func (h *History) Recover(ch Changes, key *Key, from string, now time.Time) (*Result, error) {
	ops := h.State.Ops
	at := h.judgeTime(now)
	if len(ops) < 2 {
		return nil, fmt.Errorf("%w: %s has no op after its genesis to nullify", ErrRefused, h.DID)
	}
	var idx int // the fork's prev
	if from != "" {
		j := slices.IndexFunc(ops, func(o validate.ChainOp) bool { return o.CID == from })
		switch {
		case j < 0:
			return nil, fmt.Errorf("%w: %s is not a non-nullified op of %s", ErrRefused, from, h.DID)
		case j == 0:
			return nil, fmt.Errorf("%w: %s is the genesis op: a DID's genesis cannot be nullified", ErrRefused, from)
		}
		idx = j - 1
	} else {
		idx = len(ops) - 1
		for ; idx > 0; idx-- {
			k := slices.Index(ops[idx-1].RotationKeys, key.DIDKey)
			if k >= 0 && ops[idx].Signer <= k {
				break // signed by key or one of higher priority: kept
			}
		}
		if idx == len(ops)-1 {
			return nil, fmt.Errorf("%w: %s may nullify no op of %s: its latest op %s was signed by a key of the same or higher priority (signers: %s)",
				ErrRefused, key.DIDKey, h.DID, ops[idx].CID, h.signers())
		}
		// Of those, only the ops still within the window.
		last := ops[len(ops)-1]
		for idx < len(ops)-1 && at.Sub(ops[idx+1].CreatedAt) > validate.RecoveryWindow {
			idx++
		}
		if idx == len(ops)-1 {
			return nil, tooLate(key, last, at)
		}
	}
	prev, n0 := ops[idx], ops[idx+1]
	if k := slices.Index(prev.RotationKeys, key.DIDKey); prev.Tombstone || k < 0 || k >= n0.Signer {
		return nil, fmt.Errorf("%w: %s may not nullify %s: a fork from %s must be signed by one of its rotation keys listed before the key that signed %s (signers: %s)",
			ErrRefused, key.DIDKey, n0.CID, prev.CID, n0.CID, h.signers())
	}
	if at.Sub(n0.CreatedAt) > validate.RecoveryWindow {
		return nil, tooLate(key, n0, at)
	}
	return h.build(prev.CID, ch, key, now)
}

// tooLate is the refusal of a recovery of op at "at", past the window.
func tooLate(key *Key, op validate.ChainOp, at time.Time) error {
	return fmt.Errorf("%w: too late: %s, the op %s would have to nullify, was accepted at %s, %s ago; a recovery must come within %s of it (the window closed at %s)",
		ErrRefused, op.CID, key.DIDKey, stamp(op.CreatedAt), at.Sub(op.CreatedAt).Round(time.Second), validate.RecoveryWindow,
		stamp(op.CreatedAt.Add(validate.RecoveryWindow)))
}

// signers describes who signed each non-nullified op after the genesis.
func (h *History) signers() string {
	var b strings.Builder
	ops := h.State.Ops
	for i := 1; i < len(ops); i++ {
		if i > 1 {
			b.WriteString("; ")
		}
		keys := ops[i-1].RotationKeys
		signer := "?"
		if s := ops[i].Signer; s >= 0 && s < len(keys) {
			signer = fmt.Sprintf("key %d %s", s, keys[s])
		}
		fmt.Fprintf(&b, "%s by %s", ops[i].CID, signer)
	}
	return b.String()
}

// build builds the op after prevCID with ch applied to that op's state.
func (h *History) build(prevCID string, ch Changes, key *Key, now time.Time) (*Result, error) {
	prev := h.op(prevCID)
	data, ok := prev.Data()
	if !ok {
		return nil, fmt.Errorf("%w: %s is a tombstone", ErrRefused, prevCID)
	}
	body := validate.Operation{
		Type:                validate.TypeOperation,
		RotationKeys:        slices.Clone(data.RotationKeys),
		VerificationMethods: slices.Clone(data.VerificationMethods),
		AlsoKnownAs:         slices.Clone(data.AlsoKnownAs),
		Services:            slices.Clone(data.Services),
		Prev:                prevCID,
	}
	if err := ch.apply(&body); err != nil {
		return nil, err
	}
	op, err := validate.Sign(body, key)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrRefused, describe(err))
	}
	return h.Check(op, now)
}

// judgeTime is the time a directory whose clock reads now dates the DID's
// next op: at least 1 ms after its latest op.
func (h *History) judgeTime(now time.Time) time.Time {
	now = now.UTC().Truncate(time.Millisecond)
	if head, ok := h.State.Head(); ok && !now.After(head.CreatedAt) {
		return head.CreatedAt.Add(time.Millisecond)
	}
	return now
}

// Check judges op as the DID's next op as a directory would at now: the
// submission limits, the chain rules, and the rate limit for an op that
// nullifies nothing.
func (h *History) Check(op *validate.Op, now time.Time) (*Result, error) {
	if err := validate.CheckSubmission(op); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrRefused, describe(err), err)
	}
	at := h.judgeTime(now)
	next, applied, err := h.State.Next(op, at)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrRefused, describe(err), err)
	}
	if len(applied.Nullified) == 0 {
		if err := validate.CheckRateLimit(&h.State, at); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrRefused, describe(err), err)
		}
	}
	r := &Result{DID: h.DID, Op: op, Nullifies: applied.Nullified, At: at}
	if data, ok := op.Data(); ok && !next.Tombstoned() {
		r.Document = validate.AppendDocumentJSON(nil, h.DID, data)
	}
	return r, nil
}

// apply applies c to body, a plc_operation.
func (c Changes) apply(body *validate.Operation) error {
	if c.Handle != "" {
		h, err := syntax.ParseHandle(strings.TrimPrefix(c.Handle, "at://"))
		if err != nil {
			return fmt.Errorf("%w: handle %q: %v", ErrRefused, c.Handle, err)
		}
		aka := "at://" + h.Normalize().String()
		if i := slices.IndexFunc(body.AlsoKnownAs, func(s string) bool { return strings.HasPrefix(s, "at://") }); i >= 0 {
			body.AlsoKnownAs[i] = aka
		} else {
			body.AlsoKnownAs = slices.Insert(body.AlsoKnownAs, 0, aka)
		}
	}
	if c.PDS != "" {
		u, err := url.Parse(c.PDS)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			return fmt.Errorf("%w: PDS %q: want an http:// or https:// URL of a host", ErrRefused, c.PDS)
		}
		svc := validate.Service{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: c.PDS}
		if i := slices.IndexFunc(body.Services, func(s validate.Service) bool { return s.ID == "atproto_pds" }); i >= 0 {
			body.Services[i] = svc
		} else {
			body.Services = append(body.Services, svc)
		}
	}
	if c.SigningKey != "" {
		if err := validate.CheckVerificationMethodKey(c.SigningKey); err != nil {
			return fmt.Errorf("%w: signing key %q: %v", ErrRefused, c.SigningKey, err)
		}
		vm := validate.VerificationMethod{ID: "atproto", Key: c.SigningKey}
		if i := slices.IndexFunc(body.VerificationMethods, func(v validate.VerificationMethod) bool { return v.ID == "atproto" }); i >= 0 {
			body.VerificationMethods[i] = vm
		} else {
			body.VerificationMethods = append(body.VerificationMethods, vm)
		}
	}
	for _, k := range c.RemoveRotationKeys {
		if !slices.Contains(body.RotationKeys, k) {
			return fmt.Errorf("%w: cannot remove rotation key %s: it is not one of the keys (%s)", ErrRefused, k, strings.Join(body.RotationKeys, ", "))
		}
		body.RotationKeys = slices.DeleteFunc(body.RotationKeys, func(s string) bool { return s == k })
	}
	for _, k := range c.AddRotationKeys {
		if _, err := validate.ParseDIDKey(k); err != nil {
			return fmt.Errorf("%w: rotation key %q: %v", ErrRefused, k, err)
		}
		if slices.Contains(body.RotationKeys, k) {
			return fmt.Errorf("%w: rotation key %s is already one of the keys", ErrRefused, k)
		}
		body.RotationKeys = append(body.RotationKeys, k)
	}
	if len(c.RemoveRotationKeys) > 0 && len(body.RotationKeys) == 0 {
		return fmt.Errorf("%w: removing every rotation key would lock the DID for good", ErrRefused)
	}
	return nil
}

func stamp(t time.Time) string { return string(validate.AppendTimestamp(nil, t)) }
