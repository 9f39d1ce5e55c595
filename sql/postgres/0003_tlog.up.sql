-- The transparency log: an RFC 6962 Merkle tree whose leaf i is the op with
-- seq i+1 (oplog.LeafData).
--
-- tree_hashes: the tree's stored hashes (golang.org/x/mod/sumdb/tlog's
-- numbering) in chunks, one per append transaction, written in the same
-- transaction as the ops: the chunk of ops first_seq…last_seq holds, in
-- order, the stored hashes tlog.StoredHashes gives for each of them, 32
-- bytes each. Insert-only.
CREATE TABLE tree_hashes (
    first_seq BIGINT PRIMARY KEY REFERENCES operations (seq),
    last_seq  BIGINT NOT NULL REFERENCES operations (seq),
    hashes    BYTEA  NOT NULL,
    CHECK (last_seq >= first_seq)
);
-- Hashes do not compress: keep PostgreSQL from trying.
ALTER TABLE tree_hashes ALTER COLUMN hashes SET STORAGE EXTERNAL;

CREATE TRIGGER tree_hashes_append_only BEFORE UPDATE OR DELETE ON tree_hashes
    FOR EACH ROW EXECUTE FUNCTION plc_append_only();
CREATE TRIGGER tree_hashes_no_truncate BEFORE TRUNCATE ON tree_hashes
    FOR EACH STATEMENT EXECUTE FUNCTION plc_append_only();

-- checkpoint: the latest signed checkpoint (a C2SP signed note), one row.
-- It is replaced only by compare-and-swap on (size, note), so two processes
-- can never both extend the same checkpoint; a new one must be at least as
-- large (the database refuses a smaller one).
CREATE TABLE checkpoint (
    id         SMALLINT PRIMARY KEY CHECK (id = 1),
    size       BIGINT   NOT NULL CHECK (size >= 0),
    root       BYTEA    NOT NULL,
    note       BYTEA    NOT NULL, -- the signed note, with any cosignatures
    signed_at  BIGINT   NOT NULL  -- unix milliseconds
);

CREATE FUNCTION plc_checkpoint_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.size < OLD.size OR (NEW.size = OLD.size AND NEW.root <> OLD.root) THEN
        RAISE EXCEPTION 'table checkpoint: a checkpoint never shrinks or changes its root';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER checkpoint_forward_only BEFORE UPDATE ON checkpoint
    FOR EACH ROW EXECUTE FUNCTION plc_checkpoint_forward_only();
CREATE TRIGGER checkpoint_no_delete BEFORE DELETE ON checkpoint
    FOR EACH ROW EXECUTE FUNCTION plc_append_only();
CREATE TRIGGER checkpoint_no_truncate BEFORE TRUNCATE ON checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION plc_append_only();
