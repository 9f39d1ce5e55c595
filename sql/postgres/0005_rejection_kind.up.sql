-- rejected.kind: what a rejection is evidence of (oplog.RejectionKind), set
-- by the writer instead of read back from its reason. The reason keeps its
-- text as it was written (a mirror's divergence records still start with
-- their kind).
ALTER TABLE rejected ADD COLUMN kind TEXT NOT NULL DEFAULT 'invalid_op'
    CHECK (kind IN ('invalid_op', 'reordered', 'history_rewrite', 'nullification_mismatch', 'bad_response'));

-- The rows written before it get the kind their reason names, as the mirror
-- read it back: a kind's prefix, else 'out of order' anywhere means
-- reordered, else invalid_op. The table refuses UPDATE: its trigger is
-- dropped and made again within this migration's transaction.
DROP TRIGGER rejected_append_only ON rejected;
UPDATE rejected SET kind = CASE
        WHEN substr(reason, 1, 11) = 'reordered: ' THEN 'reordered'
        WHEN substr(reason, 1, 17) = 'history_rewrite: ' THEN 'history_rewrite'
        WHEN substr(reason, 1, 24) = 'nullification_mismatch: ' THEN 'nullification_mismatch'
        WHEN substr(reason, 1, 14) = 'bad_response: ' THEN 'bad_response'
        WHEN substr(reason, 1, 12) = 'invalid_op: ' THEN 'invalid_op'
        WHEN strpos(reason, 'out of order') > 0 THEN 'reordered'
        ELSE 'invalid_op'
    END
    WHERE substr(reason, 1, 11) = 'reordered: ' OR substr(reason, 1, 17) = 'history_rewrite: '
        OR substr(reason, 1, 24) = 'nullification_mismatch: ' OR substr(reason, 1, 14) = 'bad_response: '
        OR strpos(reason, 'out of order') > 0;
CREATE TRIGGER rejected_append_only BEFORE UPDATE OR DELETE ON rejected
    FOR EACH ROW EXECUTE FUNCTION plc_append_only();
