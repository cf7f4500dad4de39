-- 95-counters.sql: the counters (post_aggregations; the like counts of
-- feed generators and labelers). A batch collects its deltas in the temp
-- table sluice_delta and appends their sums to sluice_counter_delta;
-- sluice_fold_counters() folds them, one session at a time.

-- sluice_note_referenced_posts(): a zero delta for every post URI any
-- staged op refers to.
CREATE OR REPLACE FUNCTION sluice_note_referenced_posts() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    -- Every post URI any staged op refers to gets an aggregation row,
    -- whether or not the op wins (so the rows don't depend on order).
    INSERT INTO sluice_delta (uri)
    SELECT DISTINCT u FROM (
        SELECT uri AS u FROM sluice_stage WHERE collection = 'app.bsky.feed.post'
        UNION ALL
        SELECT record->'reply'->'parent'->>'uri' FROM sluice_stage
         WHERE collection = 'app.bsky.feed.post' AND record ? 'reply'
        UNION ALL
        SELECT CASE record->'embed'->>'$type'
                 WHEN 'app.bsky.embed.record' THEN record->'embed'->'record'->>'uri'
                 WHEN 'app.bsky.embed.recordWithMedia' THEN record->'embed'->'record'->'record'->>'uri'
               END
          FROM sluice_stage WHERE collection = 'app.bsky.feed.post' AND record ? 'embed'
        UNION ALL
        SELECT record->'subject'->>'uri' FROM sluice_stage
         WHERE collection IN ('app.bsky.feed.like', 'app.bsky.feed.repost') AND record IS NOT NULL
    ) x WHERE split_part(u, '/', 4) = 'app.bsky.feed.post';
END
$fn$;

-- sluice_counters_append(): the batch's deltas, summed per URI, are
-- appended for sluice_fold_counters() (zeros too: a referenced post gets
-- its row).
CREATE OR REPLACE FUNCTION sluice_counters_append() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO sluice_counter_delta (uri, likes, reposts, replies, quotes)
    SELECT uri, sum(likes), sum(reposts), sum(replies), sum(quotes)
      FROM sluice_delta
     WHERE split_part(uri, '/', 4) = 'app.bsky.feed.post'
        OR (split_part(uri, '/', 4) IN ('app.bsky.feed.generator', 'app.bsky.labeler.service')
            AND likes <> 0)
     GROUP BY uri;
END
$fn$;

-- sluice_fold_counters(wait): fold the committed counter deltas into
-- post_aggregations and into the like counts of feed generators and
-- labelers, in one transaction of its own (the caller's, autocommit).
-- One session folds at a time: with wait false a call that finds another
-- one folding returns -1 at once, with wait true it waits for it. Returns
-- the number of URIs folded, or -1 when it did not fold.
--
-- A post's counters move by the sum of its deltas (every delta is a row
-- really inserted or removed, so the counts stay equal to the rows; never
-- below 0 against rows an old worker counted wrong). A feed generator's or
-- labeler's like_count is recounted from likes instead: its row counts
-- the likes already there when it is written, and a recount can't count
-- one of them twice. Locks: post_aggregations rows in URI order, then
-- feed_generators and labeler_services rows in URI order; batches never
-- lock post_aggregations rows, so the fold and the workers don't wait for
-- each other there.
CREATE OR REPLACE FUNCTION sluice_fold_counters(wait boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    folded bigint;
    negative text[];
BEGIN
    IF wait THEN
        PERFORM pg_advisory_xact_lock(1936486755, 1);   -- 'sluc', the fold
    ELSIF NOT pg_try_advisory_xact_lock(1936486755, 1) THEN
        RETURN -1;
    END IF;
    -- Batches append under ROW EXCLUSIVE, which this does not wait for;
    -- a session holding a stronger lock on the table (an operator's
    -- LOCK TABLE, ALTER TABLE) makes the fold give up rather than queue.
    BEGIN
        LOCK TABLE sluice_counter_delta IN ROW EXCLUSIVE MODE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RETURN -1;
    END;
    IF to_regclass('pg_temp.sluice_fold') IS NULL THEN
        CREATE TEMP TABLE sluice_fold (
            uri text NOT NULL,
            likes int NOT NULL,
            reposts int NOT NULL,
            replies int NOT NULL,
            quotes int NOT NULL
        ) ON COMMIT DELETE ROWS;
    END IF;
    WITH d AS (DELETE FROM sluice_counter_delta RETURNING *)
    INSERT INTO sluice_fold
    SELECT uri, sum(likes), sum(reposts), sum(replies), sum(quotes) FROM d GROUP BY uri;
    GET DIAGNOSTICS folded = ROW_COUNT;
    IF folded = 0 THEN
        RETURN 0;
    END IF;

    WITH up AS (
        INSERT INTO post_aggregations AS x (post_uri, like_count, repost_count, reply_count, quote_count)
        SELECT uri, likes, reposts, replies, quotes
          FROM sluice_fold WHERE split_part(uri, '/', 4) = 'app.bsky.feed.post'
         ORDER BY uri
        ON CONFLICT (post_uri) DO UPDATE
           SET like_count = greatest(0, x.like_count + excluded.like_count),
               repost_count = greatest(0, x.repost_count + excluded.repost_count),
               reply_count = greatest(0, x.reply_count + excluded.reply_count),
               quote_count = greatest(0, x.quote_count + excluded.quote_count),
               updated_at = now() AT TIME ZONE 'UTC'
         WHERE excluded.like_count <> 0 OR excluded.repost_count <> 0
            OR excluded.reply_count <> 0 OR excluded.quote_count <> 0
        RETURNING x.post_uri, least(x.like_count, x.repost_count, x.reply_count, x.quote_count) < 0 AS below)
    SELECT array_agg(post_uri ORDER BY post_uri) FILTER (WHERE below) INTO negative FROM up;
    -- a new row below 0: rows removed that an old worker never counted
    IF negative IS NOT NULL THEN
        UPDATE post_aggregations
           SET like_count = greatest(0, like_count), repost_count = greatest(0, repost_count),
               reply_count = greatest(0, reply_count), quote_count = greatest(0, quote_count)
         WHERE post_uri = ANY (negative);
    END IF;

    -- the batches' keys of the rows recounted below (see "One lock order")
    PERFORM sluice_lock_keys(array_agg('uri ' || uri)) FROM sluice_fold
     WHERE split_part(uri, '/', 4) IN ('app.bsky.feed.generator', 'app.bsky.labeler.service');
    PERFORM 1 FROM feed_generators x JOIN sluice_fold f ON f.uri = x.uri
     ORDER BY x.uri FOR UPDATE OF x;
    UPDATE feed_generators x SET like_count = (SELECT count(*) FROM likes l WHERE l.post_uri = x.uri)
      FROM sluice_fold f WHERE f.uri = x.uri;
    PERFORM 1 FROM labeler_services x JOIN sluice_fold f ON f.uri = x.uri
     ORDER BY x.uri FOR UPDATE OF x;
    UPDATE labeler_services x SET like_count = (SELECT count(*) FROM likes l WHERE l.post_uri = x.uri)
      FROM sluice_fold f WHERE f.uri = x.uri;
    DELETE FROM sluice_fold;
    RETURN folded;
END
$fn$;
