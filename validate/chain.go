package validate

import (
	"fmt"
	"time"
)

// RecoveryWindow is how long after an op a higher-priority rotation key may
// still nullify it. A fork exactly RecoveryWindow after the first op it
// nullifies is allowed.
const RecoveryWindow = 72 * time.Hour

// ChainOp is what the chain rules remember of one accepted, non-nullified
// op: enough to judge any later op without re-verifying history.
type ChainOp struct {
	CID       string
	CreatedAt time.Time
	Tombstone bool
	// Signer is the index of the key that signed this op among the rotation
	// keys of its prev (its own rotation keys for a genesis op): the first
	// key, by index, that verifies.
	Signer int
	// RotationKeys are the op's normalised rotation keys (none for a
	// tombstone): the keys allowed to sign the op after it.
	RotationKeys []string
}

// State is the chain state of one DID: its non-nullified ops in log order.
// The zero State with DID set is the state of a DID with no ops.
type State struct {
	DID string
	Ops []ChainOp
}

// Head returns the latest non-nullified op, or false for a DID with no ops.
func (s *State) Head() (ChainOp, bool) {
	if len(s.Ops) == 0 {
		return ChainOp{}, false
	}
	return s.Ops[len(s.Ops)-1], true
}

// Tombstoned reports whether the DID's current head is a tombstone.
func (s *State) Tombstoned() bool {
	h, ok := s.Head()
	return ok && h.Tombstone
}

// Applied describes how an accepted op changes a DID's log.
type Applied struct {
	// Signer is the index of the signing key among the allowed keys (see
	// ChainOp.Signer).
	Signer int
	// Nullified lists the CIDs of the ops this op nullifies, oldest first.
	// Non-empty only for a recovery fork.
	Nullified []string
}

// Next judges op as the next op of the DID in s, accepted at createdAt (the
// server clock for a submission, the recorded time for replayed history).
// On success it returns the DID's new state; s is not modified. The rules
// are those of the did:plc chain (PLC-REFERENCE §2); submission limits are
// separate (CheckSubmission).
func (s *State) Next(op *Op, createdAt time.Time) (State, Applied, error) {
	return s.next(op, createdAt, false)
}

// Apply is Next for the owner of s.Ops's array, who keeps no other state
// that shares it: on success s becomes the new state, built in that array
// (appended to, or overwritten from the first op a fork nullifies) rather
// than in a copy, so that replaying a chain of n ops costs O(n), not
// O(n²). On error s is unchanged. An op that nullifies nothing only
// appends: the state before it is s.Ops[:len(s.Ops)-1].
func (s *State) Apply(op *Op, createdAt time.Time) (Applied, error) {
	next, applied, err := s.next(op, createdAt, true)
	if err == nil {
		*s = next
	}
	return applied, err
}

// next is Next, or Apply when inPlace.
func (s *State) next(op *Op, createdAt time.Time, inPlace bool) (State, Applied, error) {
	createdAt = createdAt.UTC().Truncate(time.Millisecond)
	if err := checkKeys(op); err != nil {
		return State{}, Applied{}, err
	}
	sig, err := op.signature()
	if err != nil {
		return State{}, Applied{}, invalidSignature(op, err.Error())
	}

	if len(s.Ops) == 0 {
		return s.genesis(op, sig, createdAt)
	}
	if op.op.Prev == "" {
		return State{}, Applied{}, errMisordered
	}
	idx := -1
	for i := len(s.Ops) - 1; i >= 0; i-- {
		if s.Ops[i].CID == op.op.Prev {
			idx = i
			break
		}
	}
	if idx < 0 || s.Ops[idx].Tombstone {
		return State{}, Applied{}, errMisordered
	}
	prev := &s.Ops[idx]
	fork := idx < len(s.Ops)-1
	var applied Applied
	if !fork {
		applied.Signer = firstSigner(prev.RotationKeys, op, sig)
		if applied.Signer < 0 {
			return State{}, Applied{}, invalidSignature(op, "no rotation key of the previous op verifies it")
		}
	} else {
		// A fork: only keys of strictly higher priority than the one that
		// signed the first op being nullified may sign it.
		n0 := &s.Ops[idx+1]
		allowed := prev.RotationKeys[:min(n0.Signer, len(prev.RotationKeys))]
		applied.Signer = firstSigner(allowed, op, sig)
		if applied.Signer < 0 {
			return State{}, Applied{}, invalidSignature(op, fmt.Sprintf(
				"fork: no rotation key of higher priority than key %d (the signer of %s) verifies it", n0.Signer, n0.CID))
		}
	}
	// Time moves forward along a chain: an op is accepted strictly after
	// the DID's latest op (its prev, or for a fork the head it replaces),
	// which is also the latest op the DID ever had, nullified or not.
	if latest := &s.Ops[len(s.Ops)-1]; !createdAt.After(latest.CreatedAt) {
		return State{}, Applied{}, notAfter(createdAt, latest, fork)
	}
	if fork {
		n0 := &s.Ops[idx+1]
		if lapsed := createdAt.Sub(n0.CreatedAt); lapsed > RecoveryWindow {
			return State{}, Applied{}, newErr(ErrLateRecovery,
				"Recovery operation occurred outside of the allowed 72 hr recovery window. Time lapsed: %d", lapsed.Milliseconds())
		}
		applied.Nullified = make([]string, 0, len(s.Ops)-idx-1)
		for _, n := range s.Ops[idx+1:] {
			applied.Nullified = append(applied.Nullified, n.CID)
		}
	}
	next := State{DID: s.DID, Ops: s.Ops[:idx+1]}
	if !inPlace {
		next.Ops = make([]ChainOp, idx+1, idx+2)
		copy(next.Ops, s.Ops[:idx+1])
	}
	next.Ops = append(next.Ops, chainOp(op, createdAt, applied.Signer))
	return next, applied, nil
}

// notAfter is the verdict against an op accepted at createdAt, not
// strictly after latest, the DID's latest op.
func notAfter(createdAt time.Time, latest *ChainOp, fork bool) *Error {
	which := "its prev"
	if fork {
		which = "the latest op"
	}
	return &Error{
		Class:   ErrMisordered,
		Message: errMisordered.Message,
		Reason: fmt.Sprintf("invalid operation timestamp order: createdAt %s is not after %s (%s, at %s)",
			AppendTimestamp(nil, createdAt), which, latest.CID, AppendTimestamp(nil, latest.CreatedAt)),
	}
}

func (s *State) genesis(op *Op, sig *Signature, createdAt time.Time) (State, Applied, error) {
	if op.op.Type == TypeTombstone {
		return State{}, Applied{}, newErr(ErrGenesisHash, "Improperly formatted operation, expected genesis op to not be tombstone")
	}
	signer := firstSigner(op.rotationKeys(), op, sig)
	if signer < 0 {
		return State{}, Applied{}, invalidSignature(op, "no rotation key of the genesis op verifies it")
	}
	if did := op.GenesisDID(); did != s.DID {
		return State{}, Applied{}, newErr(ErrGenesisHash, "Hash of genesis operation does not match DID identifier: %s", did)
	}
	if op.op.Prev != "" {
		return State{}, Applied{}, newErr(ErrGenesisHash, "Improperly formatted operation, expected null prev on create")
	}
	return State{DID: s.DID, Ops: []ChainOp{chainOp(op, createdAt, signer)}}, Applied{Signer: signer}, nil
}

// ChainOpOf is what the chain rules remember of op, accepted at createdAt
// and signed by key index signer: for stores that rebuild a State from
// the ops they hold.
func ChainOpOf(op *Op, createdAt time.Time, signer int) ChainOp {
	return chainOp(op, createdAt.UTC().Truncate(time.Millisecond), signer)
}

func chainOp(op *Op, createdAt time.Time, signer int) ChainOp {
	return ChainOp{
		CID:          op.cid,
		CreatedAt:    createdAt,
		Tombstone:    op.op.Type == TypeTombstone,
		Signer:       signer,
		RotationKeys: op.rotationKeys(),
	}
}

// firstSigner returns the lowest index of a key in keys whose signature over
// op verifies, or -1. Keys that do not parse never verify.
func firstSigner(keys []string, op *Op, sig *Signature) int {
	for i, k := range keys {
		ok := op.verifiedBy(k, func() bool {
			pk, err := ParseDIDKey(k)
			return err == nil && pk.Verify(&op.unsignedHash, sig)
		})
		if ok {
			return i
		}
	}
	return -1
}

// VerifySignature reports whether op's signature verifies against key, a
// did:key rotation key.
func VerifySignature(op *Op, key string) bool {
	sig, err := op.signature()
	if err != nil {
		return false
	}
	return firstSigner([]string{key}, op, sig) == 0
}

func invalidSignature(op *Op, reason string) *Error {
	return &Error{
		Class:   ErrInvalidSignature,
		Message: "Invalid signature on op: " + string(op.AppendJSON(nil)),
		Reason:  "invalid signature: " + reason,
	}
}

// checkKeys applies the key rules every op must meet, in history too:
// rotation keys have the form of K-256 or P-256 did:keys (the point is
// decompressed, and so fully checked, when a key is used to verify);
// verification methods are base58btc did:keys of any type. New
// submissions are held to full parsing by CheckSubmission.
func checkKeys(op *Op) error {
	o := &op.op
	switch o.Type {
	case TypeOperation:
		for _, k := range o.RotationKeys {
			if err := CheckRotationKeyForm(k); err != nil {
				return newErr(ErrInvalidKey, "Invalid rotationKey: %s", k)
			}
		}
		for _, vm := range o.VerificationMethods {
			if err := CheckVerificationMethodKey(vm.Key); err != nil {
				return newErr(ErrInvalidKey, "Invalid verificationMethod key: %s", vm.Key)
			}
		}
	case TypeCreate:
		for _, k := range [...]string{o.RecoveryKey, o.SigningKey} {
			if err := CheckRotationKeyForm(k); err != nil {
				return newErr(ErrInvalidKey, "Invalid rotationKey: %s", k)
			}
		}
	}
	return nil
}

func (c ChainOp) String() string {
	return fmt.Sprintf("%s@%s", c.CID, c.CreatedAt.Format(time.RFC3339Nano))
}
