-- Ingest of replayed history (plc import, mirrors).
--
-- cursors: how far each source has been ingested, written in the same
-- transaction as the ops it covers. A cursor only moves forward and is never
-- deleted: a re-run resumes after it and never applies a line twice.
CREATE TABLE cursors (
    source     TEXT   PRIMARY KEY,
    line       BIGINT NOT NULL, -- the last line done (1-based; 0: none)
    seq        BIGINT NOT NULL, -- the upstream seq of the last seq-mode line done (0: none)
    updated_at BIGINT NOT NULL  -- unix milliseconds
);

CREATE FUNCTION plc_cursor_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.source <> OLD.source OR NEW.line < OLD.line OR NEW.seq < OLD.seq THEN
        RAISE EXCEPTION 'table cursors: a cursor never moves back';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER cursors_forward_only BEFORE UPDATE ON cursors
    FOR EACH ROW EXECUTE FUNCTION plc_cursor_forward_only();
CREATE TRIGGER cursors_no_delete BEFORE DELETE ON cursors
    FOR EACH ROW EXECUTE FUNCTION plc_append_only();
CREATE TRIGGER cursors_no_truncate BEFORE TRUNCATE ON cursors
    FOR EACH STATEMENT EXECUTE FUNCTION plc_append_only();

-- rejected: the lines of replayed history that were not applied (bad JSON,
-- an op that does not parse, a CID mismatch, a chain-rule violation), with
-- the exact bytes read and the reason: evidence, insert-only.
CREATE TABLE rejected (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source     TEXT   NOT NULL,
    line       BIGINT NOT NULL, -- 1-based line of the source
    did        TEXT   NOT NULL, -- as the line states ('' when unknown)
    cid        TEXT   NOT NULL, -- as the line states ('' when unknown)
    raw        BYTEA  NOT NULL, -- the line as read
    reason     TEXT   NOT NULL,
    created_at BIGINT NOT NULL  -- when it was rejected, unix milliseconds
);
CREATE INDEX rejected_source_line ON rejected (source, line);

CREATE TRIGGER rejected_append_only BEFORE UPDATE OR DELETE ON rejected
    FOR EACH ROW EXECUTE FUNCTION plc_append_only();
CREATE TRIGGER rejected_no_truncate BEFORE TRUNCATE ON rejected
    FOR EACH STATEMENT EXECUTE FUNCTION plc_append_only();
