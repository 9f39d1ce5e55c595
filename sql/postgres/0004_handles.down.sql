-- The handle index is derived from the log: dropping it loses nothing.
DROP TABLE handles_backfill;
DROP TABLE handles;
