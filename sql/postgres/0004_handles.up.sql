-- The handle index: which DIDs have listed a handle in alsoKnownAs. It is
-- derived from the log and can be rebuilt from it (empty both tables, then
-- insert the row of handles_backfill again as below); nothing but the web
-- UI's search reads it.
--
-- handles: a pair for every handle any op ever listed as at://<handle>
-- (the handle lower-cased, without at://; only strings that are handles
-- by the atproto syntax) and the DID (its 15 stored bytes, as in
-- operations). Pairs are only ever added, so a DID that changed its handle keeps its old pair:
-- readers check the DID's current document. Handles are lower-case ASCII:
-- the C collation orders them bytewise, and fastest.
CREATE TABLE handles (
    handle TEXT  COLLATE "C" NOT NULL,
    did    BYTEA NOT NULL,
    PRIMARY KEY (handle, did)
);

-- handles_backfill: the index follows the log behind it: done is the last
-- seq it covers. An indexer (oplog.CatchUpHandles) beside plc serve and
-- plc mirror, and the UI's search before it reads, index the ops after
-- done in batches, each in one transaction with the new done. No append
-- transaction writes the index, so writes do not pay for it.
CREATE TABLE handles_backfill (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    done BIGINT NOT NULL CHECK (done >= 0)
);
INSERT INTO handles_backfill (id, done) VALUES (1, 0);
