-- The operation log. did is the 15 bytes a DID's 24 base32 characters
-- encode; op is the op's compact form (validate.AppendCompact), which
-- reproduces the exact signed DAG-CBOR, and so the CID, on read. A DID's
-- chain state and document are rebuilt from its non-nullified ops.
CREATE TABLE operations (
    seq        INTEGER PRIMARY KEY,
    did        BLOB    NOT NULL,
    created_at INTEGER NOT NULL, -- unix milliseconds
    op         BLOB    NOT NULL,
    signer     INTEGER NOT NULL  -- index of the signing rotation key
);
CREATE INDEX operations_did_seq ON operations (did, seq);
CREATE INDEX operations_created_at ON operations (created_at);

CREATE TABLE nullified (
    seq    INTEGER PRIMARY KEY REFERENCES operations (seq),
    by_seq INTEGER NOT NULL REFERENCES operations (seq)
);

CREATE TRIGGER operations_no_update BEFORE UPDATE ON operations
BEGIN SELECT RAISE(ABORT, 'table operations is append-only: UPDATE refused'); END;
CREATE TRIGGER operations_no_delete BEFORE DELETE ON operations
BEGIN SELECT RAISE(ABORT, 'table operations is append-only: DELETE refused'); END;
CREATE TRIGGER nullified_no_update BEFORE UPDATE ON nullified
BEGIN SELECT RAISE(ABORT, 'table nullified is append-only: UPDATE refused'); END;
CREATE TRIGGER nullified_no_delete BEFORE DELETE ON nullified
BEGIN SELECT RAISE(ABORT, 'table nullified is append-only: DELETE refused'); END;
-- REPLACE (INSERT OR REPLACE, REPLACE INTO) deletes the row in its way
-- without firing DELETE triggers (unless the connection turned
-- recursive_triggers on), so the triggers above alone would let it rewrite
-- history: refuse any insert whose key is taken.
CREATE TRIGGER operations_no_replace BEFORE INSERT ON operations
WHEN EXISTS (SELECT 1 FROM operations WHERE seq = NEW.seq)
BEGIN SELECT RAISE(ABORT, 'table operations is append-only: REPLACE refused'); END;
CREATE TRIGGER nullified_no_replace BEFORE INSERT ON nullified
WHEN EXISTS (SELECT 1 FROM nullified WHERE seq = NEW.seq)
BEGIN SELECT RAISE(ABORT, 'table nullified is append-only: REPLACE refused'); END;
