-- Cursors and rejected lines are evidence: the tables are dropped only while
-- they are empty (the CHECK fails otherwise, and the migration with it).
-- A refused down leaves the schema marked dirty at version 2, with
-- nothing changed: force the version back to 2.
CREATE TEMP TABLE plc_down_guard (rows INTEGER CHECK (rows = 0));
INSERT INTO plc_down_guard SELECT (SELECT COUNT(*) FROM cursors) + (SELECT COUNT(*) FROM rejected);
DROP TABLE plc_down_guard;
DROP TABLE rejected;
DROP TABLE cursors;
