// Package bundle is the directory's own bulk format: the log cut into
// fixed-size bundles of consecutive seqs that anyone may host (a CDN, a
// torrent, a USB stick), each checked against a checkpoint the log signed
// before a reader trusts its order; and the plain export of the log as
// seq-mode lines.
//
// # The format
//
// A bundle folder holds one index, IndexName, and the bundle files it
// lists. Bundle n (from 1) holds the ops with seqs (n-1)·S+1 … n·S, where S
// is the index's bundleSize; its file is FileName(n) ("%06d.jsonl.zst"):
// a zstd stream (any framing) of the ops' seq-mode export lines, exactly as
// GET /export?after=… serves them (validate.AppendSequencedJSON), each
// followed by a newline, in seq order. Only full bundles are written.
//
// The index is a JSON object (see Index): the format name FormatName, the
// log's origin, the bundle size, the signed checkpoint note as the log
// stores it (the log's signature and any witness cosignatures) and, per
// bundle: its number, file name, first and last seq, op count, the size
// and lowercase-hex SHA-256 of the file and of its uncompressed content,
// and a consistency proof (base64 hashes, RFC 6962 / C2SP) from the tree of
// size lastSeq to the checkpoint's tree.
//
// # What a reader checks
//
// The transparency log's leaf i is the op with seq i+1 (plc.Leaf, its
// record hash tlog.RecordHash of plc.AppendLeaf). A reader that knows the
// log's verifier key:
//  1. opens the checkpoint with the key (and, if it has one, checks the
//     witness policy's cosignatures and quorum);
//  2. takes the bundles in order, each only after the one before it was
//     checked: the file's size and SHA-256, its content's, one line per
//     op with seqs firstSeq … lastSeq following the bundle before it;
//  3. hashes each line's leaf into the running RFC 6962 tree of leaves
//     0 … lastSeq-1 (a compact range: one hash per set bit of the size), and
//     checks the bundle's proof that this tree is a prefix of the
//     checkpoint's.
//
// Only then are the bundle's lines used (plc import, plc mirror
// --bootstrap hand them to oplog.Replay, which verifies every op as
// always). The index is not signed: its hashes only name what was
// damaged; what proves the bundles are the log's own history, in its
// order, is step 3. An op changed, dropped, added or moved, a bundle from
// another log, a checkpoint another key signed: each fails one of these
// checks, named by bundle. A writer rerun adds the new full bundles and a
// new index (with a newer checkpoint and new proofs); bundle files are
// never rewritten.
package bundle
