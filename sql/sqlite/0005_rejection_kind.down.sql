-- Rejections are evidence, their kinds too: the column is dropped only
-- while no rejection is recorded (the CHECK fails otherwise, and the
-- migration with it). A refused down leaves the schema marked dirty at
-- version 5, with nothing changed: force the version back to 5.
CREATE TEMP TABLE plc_down_guard (rows INTEGER CHECK (rows = 0));
INSERT INTO plc_down_guard SELECT COUNT(*) FROM rejected;
DROP TABLE plc_down_guard;
ALTER TABLE rejected DROP COLUMN kind;
