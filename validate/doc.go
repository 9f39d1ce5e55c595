// Package validate implements the rules of the did:plc method: parsing,
// canonical encoding, identifiers, keys, signatures, the chain rules with
// nullification, submission limits and DID-document rendering.
//
// The package is pure: bytes, prior state and a time go in; a verdict or a
// typed error comes out. It does no I/O, reads no clock and logs nothing.
//
// # Contract
//
//   - ParseJSON and ParseCBOR accept an op only if it is exactly one of the
//     three op types with exactly its fields and types. Unknown keys,
//     duplicate keys, invalid UTF-8, NUL characters and a prev that is not a
//     dag-cbor sha2-256 CIDv1 in base32 are rejected with ErrMalformed.
//   - For every *Op, SignedCBOR is canonical DAG-CBOR; ParseCBOR(SignedCBOR)
//     yields an equal op; CID is computed from SignedCBOR; the signature is
//     checked over UnsignedCBOR.
//   - State.Next applies the chain rules to one op at a given acceptance
//     time. The State it needs holds, per non-nullified op, only its CID,
//     time, signer index and rotation keys, so a store can apply ops one at a
//     time without re-verifying a DID's history.
//   - Signatures are 64-byte r‖s, low-S, unpadded base64url; DER, high-S,
//     padding and stray characters are rejected on both curves.
//   - CheckSubmission holds new submissions to the directory's limits;
//     replayed history is never held to them.
//   - Every error wraps one of the Err* classes in an *Error whose Message is
//     what the reference implementation tells clients.
package validate
