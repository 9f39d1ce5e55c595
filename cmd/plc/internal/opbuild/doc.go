// Package opbuild builds, signs and checks the operations a DID's owner
// submits: a genesis op from key files, an update on the DID's current
// head, and a recovery fork that nullifies ops signed by a rotation key of
// lower priority within the recovery window. It is what `plc op` and the
// did:plc key types of `plc keygen` are made of.
//
// Its contract:
//
//   - Every op it returns has been signed and then judged by the validate
//     package exactly as a directory judges a submission: the submission
//     limits (validate.CheckSubmission), the chain rules against the DID's
//     history replayed from its audit log (validate.State.Next) at the
//     time the caller gives, dated at least 1 ms after the DID's latest op
//     as a directory dates it, and the per-DID rate limit for ops that
//     nullify nothing. An op that fails is an error, never a result.
//   - History is trusted for nothing but acceptance times: every CID,
//     signature and chain rule of a fetched audit log is recomputed, and a
//     log whose nullified flags differ from the recomputed ones is refused.
//   - Private keys live in files (the multibase form goat and indigo use:
//     "z" and base58btc of the multicodec secp256k1-priv or p256-priv
//     prefix and the 32-byte scalar), written with mode 0600 and never
//     overwritten; a key file readable by other users is refused.
//
// It does no network I/O and reads no clock.
package opbuild
