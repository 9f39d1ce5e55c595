// Package sql holds the database schema as numbered golang-migrate
// migrations, one folder per backend, embedded into the binary.
//
// The schema is the same logically on both backends:
//   - operations: the append-only log (seq, the DID as 15 bytes, created_at
//     in unix milliseconds, the op in a lossless compact form that
//     reproduces its exact signed DAG-CBOR, signer index). The database
//     refuses UPDATE, DELETE (and, on PostgreSQL, TRUNCATE).
//   - nullified: which op nullified which; insert-only, derived from the log.
//     A DID's chain state and document are rebuilt from its non-nullified
//     ops; no mutable per-DID table exists.
//   - cursors: how far each source of replayed history (an imported export,
//     an upstream) has been ingested; written in the same transaction as the
//     ops it covers, and never moved back or deleted.
//   - rejected: the lines of replayed history that were not applied, with
//     their exact bytes, the reason and its kind; insert-only.
//   - handles: which DIDs' ops have listed a handle in alsoKnownAs, for the
//     web UI's search; derived from the log, which it follows behind
//     (not written by the append transactions), only ever added to (so it
//     holds stale pairs: readers check the current document), and
//     rebuildable. handles_backfill records the last seq it covers.
//   - webhooks: the callbacks registered for one DID's new ops (plc watch
//     add), each with the cursor of its delivery worker, its failures and
//     whether its attempts ran out; operator state, updated and deleted.
//     webhook_lease names the one process that delivers them.
package sql

import "embed"

// Postgres holds the PostgreSQL migrations under "postgres/".
//
//go:embed postgres/*.sql
var Postgres embed.FS

// SQLite holds the SQLite migrations under "sqlite/".
//
//go:embed sqlite/*.sql
var SQLite embed.FS
