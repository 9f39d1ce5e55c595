// Package watch tells the owners of DIDs about their new ops, within the
// 72-hour window in which a higher-priority rotation key can still undo a
// hostile change.
//
// Every new op of a watched DID becomes an Event: the op as a seq-mode
// export line, and what it changed relative to the state it builds on (the
// op its prev names): the rotation keys, the atproto signing key, the
// handles (alsoKnownAs), the PDS, a tombstone, and the earlier ops it
// nullified, when it is a recovery. Describe computes it from the DID's
// log alone.
//
// A Hub follows the log after its commits (oplog.Log.Changed, plus a poll
// ticker for the commits of other processes sharing the database), reads
// each new op once, and fans the Events of watched DIDs out to its
// Watches. A Watch that starts after a seq first receives the Events of
// its DIDs up to the Hub's position, read from the store, then the live
// ones: seq is dense, so the seam has neither a gap nor a duplicate. A
// Watch whose buffer overflows is ended with ErrTooSlow; it never slows
// the Hub or the other Watches. The Hub reads only after commits: it
// never holds up the write path.
//
// Webhooks (a Worker) are Watches of one DID each, resumed from a cursor
// kept in the database (oplog.WebhookStore): each Event is POSTed as JSON,
// signed with an Ed25519 key (Signer), retried with exponential backoff,
// and the cursor moves past an op only once its receiver took it. Of the
// processes sharing a database, the one holding a lease in it delivers.
package watch
