// Package audit holds the independent verifiers behind `plc audit`.
//
// They trust nothing they are given but acceptance times: every CID, DID,
// signature and chain rule is recomputed by the validate package, and
// every transparency-log proof is checked against a checkpoint signed by
// the key they were given (package tlog opens checkpoints and names
// tiles; this package checks what a directory serves against them).
//   - VerifyLog replays one DID's audit log (/:did/log/audit), optionally
//     checking each entry's inclusion proof (VerifyProofs).
//   - VerifyExport replays a whole export (a file, or a directory's
//     /export paged to its end) on all cores and recomputes nullification.
//   - Compare sets two directories' audit logs and documents side by side.
//   - Monitor follows a directory's transparency log: checkpoint
//     signatures, consistency with the last checkpoint seen, and every new
//     entry, writing an evidence file when the log is not what it signed.
package audit
