-- Ingest of replayed history (plc import, mirrors).
--
-- cursors: how far each source has been ingested, written in the same
-- transaction as the ops it covers. A cursor only moves forward and is never
-- deleted: a re-run resumes after it and never applies a line twice.
CREATE TABLE cursors (
    source     TEXT    PRIMARY KEY,
    line       INTEGER NOT NULL, -- the last line done (1-based; 0: none)
    seq        INTEGER NOT NULL, -- the upstream seq of the last seq-mode line done (0: none)
    updated_at INTEGER NOT NULL  -- unix milliseconds
) WITHOUT ROWID;

CREATE TRIGGER cursors_forward_only BEFORE UPDATE ON cursors
WHEN NEW.source <> OLD.source OR NEW.line < OLD.line OR NEW.seq < OLD.seq
BEGIN SELECT RAISE(ABORT, 'table cursors: a cursor never moves back'); END;
CREATE TRIGGER cursors_no_delete BEFORE DELETE ON cursors
BEGIN SELECT RAISE(ABORT, 'table cursors: DELETE refused'); END;
-- REPLACE deletes the row in its way without firing DELETE triggers.
CREATE TRIGGER cursors_no_replace BEFORE INSERT ON cursors
WHEN EXISTS (SELECT 1 FROM cursors WHERE source = NEW.source)
BEGIN SELECT RAISE(ABORT, 'table cursors: REPLACE refused'); END;

-- rejected: the lines of replayed history that were not applied (bad JSON,
-- an op that does not parse, a CID mismatch, a chain-rule violation), with
-- the exact bytes read and the reason: evidence, insert-only.
CREATE TABLE rejected (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    source     TEXT    NOT NULL,
    line       INTEGER NOT NULL, -- 1-based line of the source
    did        TEXT    NOT NULL, -- as the line states ('' when unknown)
    cid        TEXT    NOT NULL, -- as the line states ('' when unknown)
    raw        BLOB    NOT NULL, -- the line as read
    reason     TEXT    NOT NULL,
    created_at INTEGER NOT NULL  -- when it was rejected, unix milliseconds
);
CREATE INDEX rejected_source_line ON rejected (source, line);

CREATE TRIGGER rejected_no_update BEFORE UPDATE ON rejected
BEGIN SELECT RAISE(ABORT, 'table rejected is append-only: UPDATE refused'); END;
CREATE TRIGGER rejected_no_delete BEFORE DELETE ON rejected
BEGIN SELECT RAISE(ABORT, 'table rejected is append-only: DELETE refused'); END;
CREATE TRIGGER rejected_no_replace BEFORE INSERT ON rejected
WHEN EXISTS (SELECT 1 FROM rejected WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'table rejected is append-only: REPLACE refused'); END;
