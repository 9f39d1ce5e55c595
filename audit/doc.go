// Package audit holds the independent verifiers behind `plc audit`.
//
// The transparency log (TLog) signs checkpoints of the Merkle tree the
// oplog stores beside the ops, serves C2SP tlog-tiles and proofs, asks
// witnesses to cosign, and refuses to start on a database whose ops no
// longer hash to its stored tree or its latest signed checkpoint.
//
// The verifiers trust nothing they are given but acceptance times: every
// CID, DID, signature and chain rule is recomputed by the validate package.
// They read a directory through package client.
//   - VerifyLog replays one DID's audit log (/:did/log/audit), optionally
//     checking each entry's inclusion proof (VerifyProofs).
//   - VerifyExport replays a whole export (a file, or a directory's
//     /export paged to its end) on all cores and recomputes nullification.
//   - Compare sets two directories' audit logs and documents side by side.
//   - Monitor follows a directory's transparency log: checkpoint
//     signatures, consistency with the last checkpoint seen, and every new
//     entry, writing an evidence file when the log is not what it signed.
package audit
