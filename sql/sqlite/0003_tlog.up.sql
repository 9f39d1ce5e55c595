-- The transparency log: an RFC 6962 Merkle tree whose leaf i is the op with
-- seq i+1 (oplog.LeafData).
--
-- tree_hashes: the tree's stored hashes (golang.org/x/mod/sumdb/tlog's
-- numbering) in chunks, one per append transaction, written in the same
-- transaction as the ops: the chunk of ops first_seq…last_seq holds, in
-- order, the stored hashes tlog.StoredHashes gives for each of them, 32
-- bytes each. Insert-only.
CREATE TABLE tree_hashes (
    first_seq INTEGER PRIMARY KEY REFERENCES operations (seq),
    last_seq  INTEGER NOT NULL REFERENCES operations (seq),
    hashes    BLOB    NOT NULL,
    CHECK (last_seq >= first_seq)
);
CREATE TRIGGER tree_hashes_no_update BEFORE UPDATE ON tree_hashes
BEGIN SELECT RAISE(ABORT, 'table tree_hashes is append-only: UPDATE refused'); END;
CREATE TRIGGER tree_hashes_no_delete BEFORE DELETE ON tree_hashes
BEGIN SELECT RAISE(ABORT, 'table tree_hashes is append-only: DELETE refused'); END;
CREATE TRIGGER tree_hashes_no_replace BEFORE INSERT ON tree_hashes
WHEN EXISTS (SELECT 1 FROM tree_hashes WHERE first_seq = NEW.first_seq)
BEGIN SELECT RAISE(ABORT, 'table tree_hashes is append-only: REPLACE refused'); END;

-- checkpoint: the latest signed checkpoint (a C2SP signed note), one row.
-- It is replaced only by compare-and-swap on (size, note), so two processes
-- can never both extend the same checkpoint; a new one must be at least as
-- large (the database refuses a smaller one).
CREATE TABLE checkpoint (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    size       INTEGER NOT NULL CHECK (size >= 0),
    root       BLOB    NOT NULL,
    note       BLOB    NOT NULL, -- the signed note, with any cosignatures
    signed_at  INTEGER NOT NULL  -- unix milliseconds
);
CREATE TRIGGER checkpoint_forward_only BEFORE UPDATE ON checkpoint
WHEN NEW.size < OLD.size OR (NEW.size = OLD.size AND NEW.root <> OLD.root)
BEGIN SELECT RAISE(ABORT, 'table checkpoint: a checkpoint never shrinks or changes its root'); END;
CREATE TRIGGER checkpoint_no_delete BEFORE DELETE ON checkpoint
BEGIN SELECT RAISE(ABORT, 'table checkpoint: DELETE refused'); END;
CREATE TRIGGER checkpoint_no_replace BEFORE INSERT ON checkpoint
WHEN EXISTS (SELECT 1 FROM checkpoint)
BEGIN SELECT RAISE(ABORT, 'table checkpoint: REPLACE refused'); END;
