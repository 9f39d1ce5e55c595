-- Rejections are evidence, their kinds too: the column is dropped only
-- while no rejection is recorded. A refused down leaves the schema marked
-- dirty at version 5, with nothing changed: force the version back to 5.
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM rejected) THEN
        RAISE EXCEPTION 'rejections are recorded: refusing to drop their kinds';
    END IF;
END $$;
ALTER TABLE rejected DROP COLUMN kind;
