// Package interop holds the tests that drive published third-party tools
// against a running plc serve, so that the suite fails when plc stops being
// compatible with them:
//
//   - litewitness (filippo.io/torchwood), a C2SP tlog-witness, cosigns the
//     log's checkpoints, following it with plc's consistency proofs;
//   - fsck (github.com/transparency-dev/tessera), a C2SP tlog-tiles client,
//     recomputes the whole tree from the entry bundles and hash tiles, full
//     and partial, and checks it against the signed checkpoint;
//   - torchwood's tile client (tools/tileclient is a thin command around
//     it) reads every entry, authenticated against the checkpoint's tree;
//   - goat (github.com/bluesky-social/indigo), the atproto CLI, reads the
//     DIDs the test creates and updates, and shares key files with plc
//     keygen and plc op.
//
// The tools' versions are pinned in tools/go.mod, a module of its own so
// that the project's dependency graph does not grow by theirs; the tests
// build them once per run with the go command (the build cache keeps
// them). Without the Go module proxy the tests skip, unless
// PLC_REQUIRE_INTEROP is set; with -short they skip.
package interop
