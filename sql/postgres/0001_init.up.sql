CREATE TABLE operations (
    seq        BIGINT   PRIMARY KEY,
    did        TEXT     NOT NULL,
    cid        TEXT     NOT NULL,
    created_at BIGINT   NOT NULL, -- unix milliseconds
    op         BYTEA    NOT NULL, -- exact signed DAG-CBOR
    type       SMALLINT NOT NULL, -- 1 plc_operation, 2 plc_tombstone, 3 create
    signer     SMALLINT NOT NULL  -- index of the signing rotation key
);
CREATE INDEX operations_did_seq ON operations (did, seq);
CREATE INDEX operations_created_at_cid ON operations (created_at, cid);

CREATE TABLE nullified (
    seq    BIGINT PRIMARY KEY REFERENCES operations (seq),
    by_seq BIGINT NOT NULL REFERENCES operations (seq)
);

CREATE TABLE dids (
    did      TEXT   PRIMARY KEY,
    head_seq BIGINT NOT NULL,
    state    BYTEA  NOT NULL,
    doc      BYTEA,           -- NULL when tombstoned
    data     BYTEA
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
