-- The log is append-only: there is no way down from its first version.
SELECT RAISE(ABORT, 'the initial schema cannot be migrated down');
