// Package tlog is a directory's transparency log: an RFC 6962 Merkle tree
// over the op log, leaf i being the op with seq i+1 (package plc's Leaf).
//
// The tree's hashes are written by oplog, in the same transaction as the
// ops they cover; this package builds everything else on them:
//   - TLog signs checkpoints (C2SP signed-note checkpoints, with a Key) of
//     the stored tree whenever it grew, by compare-and-swap in the store,
//     so that two processes never sign a fork, and never before proving
//     that the new tree extends the last checkpoint.
//   - Check is the startup check: it refuses a database whose ops no
//     longer hash to the stored tree or to the latest signed checkpoint,
//     or that holds ops the log did not write (a *StartupError).
//   - OpenKey is the key policy: it never creates a new log by accident
//     (no new key for a store that already holds a checkpoint).
//   - Witnesses (C2SP tlog-witness) are asked to cosign each checkpoint;
//     their verified cosignatures are added to the stored note.
//   - ServeHTTP serves /tlog/: the checkpoint, hash tiles and entry
//     bundles (C2SP tlog-tiles), consistency proofs; InclusionProofs
//     gives the proofs the API attaches to audit logs.
//
// The verifiers that check a log from outside (package audit) use its
// OpenCheckpoint, tile geometry and paths, hash encoding and cosignature
// verifier; they trust nothing else of it.
package tlog
