-- The operation log. did is the 15 bytes a DID's 24 base32 characters
-- encode; op is the op's compact form (validate.AppendCompact), which
-- reproduces the exact signed DAG-CBOR, and so the CID, on read. A DID's
-- chain state and document are rebuilt from its non-nullified ops.
CREATE TABLE operations (
    seq        BIGINT   PRIMARY KEY,
    did        BYTEA    NOT NULL,
    created_at BIGINT   NOT NULL, -- unix milliseconds
    op         BYTEA    NOT NULL,
    signer     SMALLINT NOT NULL  -- index of the signing rotation key
);
CREATE INDEX operations_did_seq ON operations (did, seq);
CREATE INDEX operations_created_at ON operations (created_at);

CREATE TABLE nullified (
    seq    BIGINT PRIMARY KEY REFERENCES operations (seq),
    by_seq BIGINT NOT NULL REFERENCES operations (seq)
);

CREATE FUNCTION plc_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only: % refused', TG_TABLE_NAME, TG_OP;
END
$$;

CREATE TRIGGER operations_append_only BEFORE UPDATE OR DELETE ON operations
    FOR EACH ROW EXECUTE FUNCTION plc_append_only();
CREATE TRIGGER operations_no_truncate BEFORE TRUNCATE ON operations
    FOR EACH STATEMENT EXECUTE FUNCTION plc_append_only();
CREATE TRIGGER nullified_append_only BEFORE UPDATE OR DELETE ON nullified
    FOR EACH ROW EXECUTE FUNCTION plc_append_only();
CREATE TRIGGER nullified_no_truncate BEFORE TRUNCATE ON nullified
    FOR EACH STATEMENT EXECUTE FUNCTION plc_append_only();
