-- 15-state.sql: the ordering state of record ops (sluice_record_state, see
-- "Ordering state" in 00-base.sql): which of the batch's ops win.

-- One row per record URI ever seen: the ordering key of the last applied
-- operation, tombstones included. `pair` and `record` are kept only for
-- the collections with a second unique key (likes, reposts, follows,
-- blocks, list items): the pair is the text of that key, and `record`
-- what the row needs beyond the pair (sluice_pair_record()), so that a
-- duplicate can take the row over when its owner is deleted.
CREATE TABLE IF NOT EXISTS sluice_record_state (
    uri text PRIMARY KEY,
    collection text NOT NULL,
    did text NOT NULL,
    ord_ms bigint NOT NULL,
    ord_seq bigint NOT NULL,
    op_idx int NOT NULL,
    deleted boolean NOT NULL,
    cid text,
    pair text,
    record jsonb,
    created_at timestamp,
    commit_time timestamp,
    commit_seq text,
    commit_rev text
);
-- The live records of a pair, smallest URI first. (A hash index of the
-- pair alone, a tenth of the size, was tried: without the URI in it the
-- planner's estimate of a pair's rows made it scan the whole table for
-- the owner once the table had grown, twice the batch time at 200,000
-- events.)
CREATE INDEX IF NOT EXISTS sluice_record_state_pair ON sluice_record_state (collection, pair, uri)
    WHERE pair IS NOT NULL;

-- sluice_record_state_advance(): keep, of the staged record ops, only the
-- last one per URI and only those newer than the URI's state, and store
-- their keys as the new state (removing the others from sluice_stage).
-- Returns `renewed`: the URIs whose state row was there before, which
-- sluice_op_retracts() takes. The first row lock a batch takes after its
-- keys, in URI order.
CREATE OR REPLACE FUNCTION sluice_record_state_advance() RETURNS text[]
LANGUAGE plpgsql AS $fn$
DECLARE
    renewed text[];
BEGIN
    -- Record ops: keep only the last op per URI within the batch ...
    DELETE FROM sluice_stage s USING sluice_stage t
     WHERE s.kind IN ('create', 'update', 'delete')
       AND t.kind IN ('create', 'update', 'delete')
       AND t.uri = s.uri
       AND (t.ord_ms, t.ord_seq, t.op_idx, t.ctid) > (s.ord_ms, s.ord_seq, s.op_idx, s.ctid);

    -- ... and only those newer than the stored state. A create whose URI
    -- had no state before is fresh: the appview's rows for it, if any, are
    -- the same record written by someone else (an old worker), so there is
    -- nothing to retract. A delete or an update is never fresh: it
    -- retracts whatever the appview's tables hold for the URI, whoever
    -- wrote it. `renewed` lists the URIs whose state row was there before
    -- (few: updates, deletes, creates after a delete), so a staged op is
    -- fresh when it is a create whose URI is not in it. (An array, not a
    -- column of the stage set by an UPDATE: that rewrote every staged row,
    -- and the join was planned as a nested loop, 500 x 500 rows a batch.)
    WITH up AS (
        INSERT INTO sluice_record_state AS r
               (uri, collection, did, ord_ms, ord_seq, op_idx, deleted, cid,
                pair, record, created_at, commit_time, commit_seq, commit_rev)
        SELECT uri, collection, did, ord_ms, ord_seq, op_idx, kind = 'delete', cid,
               sluice_pair_key(collection, did, record),
               sluice_pair_record(collection, record),
               created_at, commit_time, commit_seq, commit_rev
          FROM sluice_stage WHERE kind IN ('create', 'update', 'delete')
         ORDER BY uri
        ON CONFLICT (uri) DO UPDATE
           SET ord_ms = excluded.ord_ms, ord_seq = excluded.ord_seq,
               op_idx = excluded.op_idx, deleted = excluded.deleted,
               cid = excluded.cid, pair = excluded.pair, record = excluded.record,
               created_at = excluded.created_at, commit_time = excluded.commit_time,
               commit_seq = excluded.commit_seq, commit_rev = excluded.commit_rev
         WHERE (excluded.ord_ms, excluded.ord_seq, excluded.op_idx)
             > (r.ord_ms, r.ord_seq, r.op_idx)
        RETURNING r.uri, (r.xmax = 0) AS fresh),
    lost AS (
        DELETE FROM sluice_stage s
         WHERE s.kind IN ('create', 'update', 'delete')
           AND NOT EXISTS (SELECT 1 FROM up WHERE up.uri = s.uri))
    SELECT coalesce(array_agg(uri) FILTER (WHERE NOT fresh), '{}') INTO renewed FROM up;
    RETURN renewed;
END
$fn$;
