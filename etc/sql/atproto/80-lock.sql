-- 80-lock.sql: the batch's lock keys (see "One lock order" in 00-base.sql),
-- all in one place: which rows two batches can both write is a property of
-- the whole batch, not of one record type.

-- sluice_lock_keys(keys): take the transaction-scoped advisory lock of
-- each key (see "One lock order"), in ascending order of their 64-bit
-- hashes, waiting for the sessions that hold them; a key already held is
-- taken again at once. NULLs are skipped. Returns the number of keys.
CREATE OR REPLACE FUNCTION sluice_lock_keys(keys text[]) RETURNS bigint
LANGUAGE sql AS $$
    SELECT count(*) FROM (SELECT pg_advisory_xact_lock(k) FROM (
        SELECT DISTINCT hashtextextended(key, 0) AS k FROM unnest(keys) key
         WHERE key IS NOT NULL ORDER BY 1 OFFSET 0) sorted) locked
$$;

-- sluice_lock_batch_keys(): take the advisory lock of every key of the
-- staged batch (see "One lock order" above), in ascending order of the
-- keys' hashes, waiting for the sessions that hold them. Called first in a
-- batch's transaction; the locks last until its end. Returns the number
-- of keys. Takes one lock per key in PostgreSQL's shared lock table: with
-- batches of 500 about 700 in a real mix, at most twice the batch size.
CREATE OR REPLACE FUNCTION sluice_lock_batch_keys() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    keys bigint;
BEGIN
    WITH ops AS (
        -- each record op with the pair it writes and, for an update or a
        -- delete, the pair its current row (or state) holds
        -- (the state as a subquery: one index lookup per update or
        -- delete, where a join was planned as a scan of the whole table)
        SELECT s.kind, s.did, s.collection, s.uri, s.record,
               sluice_pair_key(s.collection, s.did, s.record) AS pair,
               coalesce((SELECT r.pair FROM sluice_record_state r
                          WHERE s.kind <> 'create' AND r.uri = s.uri), c.pair) AS old_pair
          FROM sluice_stage s
          LEFT JOIN sluice_current_pairs('{}') c ON c.uri = s.uri
         WHERE s.kind IN ('create', 'update', 'delete')
           AND sluice_is_pair_collection(s.collection)),
    liked AS (
        SELECT o.did, substr(p, length(o.did) + 2) AS subject
          FROM ops o, unnest(ARRAY[o.pair, o.old_pair]) p
         WHERE o.collection = 'app.bsky.feed.like' AND p IS NOT NULL)
    SELECT sluice_lock_keys(array_agg(key)) INTO keys FROM (
            -- the pairs (a like and a repost of one post by one user share
            -- theirs: both write the user's viewer state of the post)
            SELECT 'pair ' || p AS key FROM ops, unnest(ARRAY[pair, old_pair]) p
            UNION ALL
            -- a post's rows, written by the post, its gates and likes
            SELECT 'post ' || uri FROM sluice_stage WHERE collection = 'app.bsky.feed.post'
            UNION ALL
            SELECT 'post ' || sluice_gate_post(uri) FROM sluice_stage
             WHERE collection IN ('app.bsky.feed.threadgate', 'app.bsky.feed.postgate')
            UNION ALL
            -- a like that may give its subject a thread context: the
            -- subject is not in posts yet, or is a reply to the liker
            SELECT 'post ' || l.subject FROM liked l
             WHERE NOT EXISTS (SELECT FROM sluice_like_context_ruled_out(l.did, l.subject))
            UNION ALL
            -- a reply written over a post already there: the root
            -- author's like of it may now give it a thread context
            SELECT 'pair ' || split_part(s.record->'reply'->'root'->>'uri', '/', 3) || ' ' || s.uri
              FROM sluice_stage s
             WHERE s.collection = 'app.bsky.feed.post' AND s.record ? 'reply'
               AND EXISTS (SELECT 1 FROM posts p WHERE p.uri = s.uri)
            UNION ALL
            -- a users row, written by the profile, identity and account,
            -- and inserted for the subject of a follow, block or list item
            SELECT 'did ' || did FROM sluice_stage
             WHERE kind IN ('identity', 'account') OR collection = 'app.bsky.actor.profile'
            UNION ALL
            SELECT 'did ' || (s.record->>'subject') FROM sluice_stage s
             WHERE s.collection IN ('app.bsky.graph.follow', 'app.bsky.graph.block',
                                    'app.bsky.graph.listitem')
               AND s.kind IN ('create', 'update') AND s.record->>'subject' LIKE 'did:%'
               AND NOT EXISTS (SELECT 1 FROM users u WHERE u.did = s.record->>'subject')
            UNION ALL
            -- the rows sluice_fold_counters() recounts
            SELECT 'uri ' || uri FROM sluice_stage
             WHERE collection IN ('app.bsky.feed.generator', 'app.bsky.labeler.service')
        ) batch_keys;
    RETURN keys;
END
$fn$;

-- sluice_lock_retracted_pairs(): the second pass, after the state
-- upsert; raises serialization_failure (40001) when a key it needs is held.
CREATE OR REPLACE FUNCTION sluice_lock_retracted_pairs() RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    taken boolean;
BEGIN
    -- The pairs the current rows of the updated and deleted URIs hold, and
    -- the posts those likes are of, once more: the first pass read them
    -- before it waited, and a batch that was creating one of these URIs
    -- then has committed since (this batch now holds every state row of
    -- its URIs, so the rows can't change any more). A key held already is
    -- taken again at once; one the first pass missed is taken only if it
    -- is free, as waiting for it here, out of the order, could deadlock:
    -- otherwise the batch fails with a serialization failure and the
    -- worker retries it, its first pass then seeing the pairs.
    WITH c AS (SELECT * FROM sluice_current_pairs('{}'))
    SELECT bool_and(pg_try_advisory_xact_lock(hashtextextended(key, 0))) INTO taken FROM (
        SELECT 'pair ' || c.pair AS key FROM c
        UNION ALL
        SELECT 'post ' || split_part(c.pair, ' ', 2) FROM c
         WHERE c.collection = 'app.bsky.feed.like'
           AND NOT EXISTS (SELECT FROM sluice_like_context_ruled_out(split_part(c.pair, ' ', 1),
                                                                     split_part(c.pair, ' ', 2)))) k
     WHERE key IS NOT NULL;
    IF NOT coalesce(taken, true) THEN
        RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
            MESSAGE = 'a pair this batch retracts is being written by another batch: retrying';
    END IF;
END
$fn$;
