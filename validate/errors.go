package validate

import (
	"errors"
	"fmt"
)

// Error classes. Every error returned by this package wraps exactly one of
// them (test with errors.Is) inside an *Error that carries the message a
// client is shown.
var (
	// ErrMalformed: the bytes are not a well-formed operation of a known type
	// (bad JSON or DAG-CBOR, unknown or duplicate keys, wrong types, missing
	// fields, an unparsable prev).
	ErrMalformed = errors.New("malformed operation")
	// ErrInvalidKey: a rotation key or verification method is not an
	// acceptable did:key.
	ErrInvalidKey = errors.New("invalid key")
	// ErrInvalidSignature: the signature is badly encoded or verifies against
	// none of the allowed keys.
	ErrInvalidSignature = errors.New("invalid signature")
	// ErrMisordered: prev names no usable op (missing, nullified, a
	// tombstone), a genesis op arrives for an existing DID, or the op is not
	// strictly later than the DID's latest op (its prev, or for a fork the
	// head it replaces).
	ErrMisordered = errors.New("operations not correctly ordered")
	// ErrLateRecovery: a fork outside the 72-hour recovery window.
	ErrLateRecovery = errors.New("late recovery")
	// ErrGenesisHash: the genesis op does not hash to the DID, or is not a
	// valid genesis op.
	ErrGenesisHash = errors.New("genesis does not match DID")
	// ErrLimit: a submission limit (size, entry counts, lengths, legacy ops).
	// Never raised for replayed history.
	ErrLimit = errors.New("submission limit")
	// ErrRateLimit: the per-DID operation rate limit.
	ErrRateLimit = errors.New("rate limit")
)

// Error is a verdict against an operation. Message is the text the reference
// implementation sends to clients for the same condition; Class is one of the
// Err* sentinels above.
type Error struct {
	Class   error
	Message string
	// Reason, when set, is a short explanation for operators and auditors
	// (Message may embed the whole op, as the reference's does).
	Reason string
}

func (e *Error) Error() string { return e.Message }

// Short returns Reason if set, else Message.
func (e *Error) Short() string {
	if e.Reason != "" {
		return e.Reason
	}
	return e.Message
}
func (e *Error) Unwrap() error { return e.Class }

func newErr(class error, format string, args ...any) *Error {
	return &Error{Class: class, Message: fmt.Sprintf(format, args...)}
}

func malformed(format string, args ...any) *Error {
	return &Error{Class: ErrMalformed, Message: "Not a valid operation: " + fmt.Sprintf(format, args...)}
}

var errMisordered = &Error{Class: ErrMisordered, Message: "Operations not correctly ordered"}
