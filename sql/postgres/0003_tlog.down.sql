-- The tree is derived from the log and can be recomputed; the checkpoint is
-- not: the tables are dropped only while no checkpoint was signed.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM checkpoint) THEN
        RAISE EXCEPTION 'a signed checkpoint exists: refusing to drop the transparency log';
    END IF;
END
$$;
DROP TABLE checkpoint;
DROP FUNCTION plc_checkpoint_forward_only();
DROP TABLE tree_hashes;
