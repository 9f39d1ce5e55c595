// Package corpus generates signed, synthetic did:plc export corpora shaped
// like the real directory, for benchmarks and import tests.
//
// # Contract
//
//   - Output is a seq-mode export exactly as GET /export?after= and
//     /export/stream render it: one {"type":"sequenced_op","did",
//     "operation","cid","createdAt","seq"} object per line, the operation
//     in the reference's key order, lines joined by "\n" with no newline
//     after the last. seq is dense from 1; createdAt is strictly increasing
//     along seq (milliseconds, UTC); DIDs are created over three simulated
//     years from November 2022 (their later ops run some months past),
//     and the ops of different DIDs interleave.
//   - Every valid line is a correctly signed op whose cid is its CID, and
//     each DID's valid lines, replayed in order with
//     (*validate.State).Next at their createdAt, are all accepted. Some of
//     them are nullified by later recoveries; a mirror must find that out
//     by replaying, as the export carries no nullified flag.
//   - With Config.InvalidRate > 0, invalid lines are mixed in (see
//     InvalidKind). Each is rejected by the validator with InvalidKind.Class
//     and changes nothing: the DID's next valid op builds on its last valid
//     one. The valid lines do not depend on the rate except for their seq
//     (and createdAt shifts of a few milliseconds at most).
//   - Deterministic: the same Config (Seed, DIDs or Ops, InvalidRate, Shape) gives
//     byte-identical output whatever Workers is. Private keys come from
//     seeded ChaCha8 streams; K-256 and P-256 signatures use RFC 6979
//     nonces and are normalised to low-S r‖s.
//   - Generation is planned first (a sequential pass over every line's DID,
//     kind, signer and time, 16 bytes per line), then signed in chunks on
//     Workers goroutines, DIDs in parallel, and written in order. Memory
//     is the plan, the state of the DIDs that still have lines to come,
//     and two chunks of rendered lines.
//
// # Shape
//
// The default shape, ShapeDirectory, is the real directory's, below; the
// numbers are the package's constants; Stats reports what a given corpus
// holds. ShapeLongChain makes one DID of Config.Ops ops instead (a chain
// of updates, no recovery or tombstone). Three shapes keep the directory's
// DIDs and change one thing each, to find what a corpus that was not used
// to tune the log costs it:
//
//   - ShapeLongGap: a DID's next op comes a median of about 2,800 lines
//     after its previous one, with a long tail, against about 200 in the
//     directory shape (both at 186,000 ops).
//   - ShapeKeyChurn: four updates in five replace every rotation key and
//     the atproto key.
//   - ShapeSharedKeys: as in the real directory, where a few PDS rotation
//     keys sign for millions of DIDs, every K-256 DID that is not a legacy
//     create has one of six shared keys first in its rotation keys (most
//     of them the first), then its own; a PDS migration moves it to
//     another shared key.
//
// The directory shape's numbers:
//
//   - Ops per DID: P(n) ∝ n^-2.5 capped at 60 (about 75% one op, 13% two,
//     5% three; the tail reaches dozens).
//   - Genesis: 3% legacy create ops (K-256 keys, bsky.social, first five
//     months only); otherwise a plc_operation with two rotation keys, an
//     atproto verification method, one at:// handle and one PDS, like the
//     bsky.app fixture. 15% of DIDs have P-256 keys, the rest K-256.
//   - Updates: handle changes (45%), PDS migrations with a new atproto key
//     (25%), atproto key rotations (12%), rotation-key changes (18%); 15%
//     of them signed by rotation key 1, the rest by key 0.
//   - 1% of DIDs suffer a hostile update signed by rotation key 1 (maybe
//     followed by an attacker op) and recover within 48h by a fork signed
//     by key 0 that nullifies it. 0.5% of DIDs are tombstoned; a quarter
//     of those tombstones (signed by key 1) are nullified the same way.
//   - Keys are never shared between DIDs (but in ShapeSharedKeys), which
//     is harsher on a validator's key cache than the real directory, where
//     PDS rotation keys sign for many DIDs.
package corpus
