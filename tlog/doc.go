// Package tlog is a directory's transparency log: an RFC 6962 tree over the
// op log (leaf i is the op with seq i+1, package plc's Leaf), whose hashes
// oplog stores with the ops. TLog signs checkpoints of it, only once the
// tree is proved to extend the latest one, by compare-and-swap (processes
// sharing a store never sign a fork); sends every checkpoint it publishes,
// whoever signed it, to its witnesses (C2SP tlog-witness), a witness that
// fails costing only its cosignature, and lets a request wait, bounded,
// for the witness quorum's cosignatures;
// serves checkpoint, tiles, entry bundles and proofs (C2SP tlog-tiles);
// and at startup refuses a store whose ops do not hash to its tree and
// checkpoint or that holds ops it never wrote. OpenKey never creates a
// key for a log that has signed. Package audit's verifiers share only its
// checkpoint opening, tile geometry and hash encoding.
package tlog
