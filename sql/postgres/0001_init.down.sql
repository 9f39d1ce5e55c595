-- The log is append-only: there is no way down from its first version.
DO $$ BEGIN RAISE EXCEPTION 'the initial schema cannot be migrated down'; END $$;
