-- Cursors and rejected lines are evidence: the tables are dropped only while
-- they are empty.
-- A refused down leaves the schema marked dirty at version 2, with
-- nothing changed: force the version back to 2.
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM cursors) OR EXISTS (SELECT 1 FROM rejected) THEN
        RAISE EXCEPTION 'cursors or rejected lines are recorded: refusing to drop them';
    END IF;
END $$;
DROP TABLE rejected;
DROP TABLE cursors;
DROP FUNCTION plc_cursor_forward_only();
