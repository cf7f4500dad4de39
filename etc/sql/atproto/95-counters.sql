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

-- sluice_recount_posts(after, chunk): set the counters of the next chunk
-- post URIs after `after` (in URI order) from the rows, for `sluiced
-- --recount`; the caller calls it again with the last URI it returns
-- until that is NULL, each call a transaction of its own. The URIs are
-- those of post_aggregations, posts and every counted subject (a like's
-- or repost's subject, a reply's parent, a quoted post), so a post
-- missing its aggregation row gets one. A counter becomes the number of
-- its rows less the deltas committed and not folded yet (the fold adds
-- them afterwards), counted in one statement, so in one snapshot; the
-- fold's lock keeps the fold out meanwhile, and the rows are written in
-- URI order, as the fold writes them (batches never lock them). Returns
-- the last URI looked at (NULL past the end), the post URIs recounted,
-- the rows changed and created, and up to 5 examples of a change
-- ('<uri> likes 1->2 reposts 0->0 ...', or '<uri> (new row) likes 2 ...').
CREATE OR REPLACE FUNCTION sluice_recount_posts(after text, chunk int)
RETURNS TABLE (last_uri text, recounted bigint, changed bigint, created bigint, examples text[])
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(1936486755, 1);   -- the fold's
    RETURN QUERY
    WITH cand AS (
        SELECT u FROM (
            (SELECT post_uri::text AS u FROM post_aggregations WHERE post_uri > after
              ORDER BY 1 LIMIT chunk)
            UNION (SELECT uri::text FROM posts WHERE uri > after ORDER BY 1 LIMIT chunk)
            UNION (SELECT DISTINCT post_uri::text FROM likes WHERE post_uri > after
                    ORDER BY 1 LIMIT chunk)
            UNION (SELECT DISTINCT post_uri::text FROM reposts WHERE post_uri > after
                    ORDER BY 1 LIMIT chunk)
            UNION (SELECT DISTINCT parent_uri::text FROM posts WHERE parent_uri > after
                    ORDER BY 1 LIMIT chunk)
            UNION (SELECT DISTINCT quoted_uri::text FROM quotes WHERE quoted_uri > after
                    ORDER BY 1 LIMIT chunk)
        ) x ORDER BY 1 LIMIT chunk),
    pending AS (
        SELECT d.uri, sum(d.likes) AS likes, sum(d.reposts) AS reposts,
               sum(d.replies) AS replies, sum(d.quotes) AS quotes
          FROM sluice_counter_delta d WHERE d.uri IN (SELECT u FROM cand)
         GROUP BY d.uri),
    counted AS (
        SELECT c.u AS uri,
               (SELECT count(*) FROM likes l WHERE l.post_uri = c.u) - coalesce(p.likes, 0) AS likes,
               (SELECT count(*) FROM reposts r WHERE r.post_uri = c.u) - coalesce(p.reposts, 0) AS reposts,
               (SELECT count(*) FROM posts r WHERE r.parent_uri = c.u) - coalesce(p.replies, 0) AS replies,
               (SELECT count(*) FROM quotes q WHERE q.quoted_uri = c.u) - coalesce(p.quotes, 0) AS quotes
          FROM cand c LEFT JOIN pending p ON p.uri = c.u
         WHERE split_part(c.u, '/', 4) = 'app.bsky.feed.post'),
    old AS (
        SELECT a.post_uri::text AS uri, a.like_count, a.repost_count, a.reply_count, a.quote_count
          FROM post_aggregations a WHERE a.post_uri IN (SELECT uri FROM counted)),
    up AS (
        INSERT INTO post_aggregations AS x (post_uri, like_count, repost_count, reply_count, quote_count)
        SELECT uri, likes, reposts, replies, quotes FROM counted ORDER BY uri
        ON CONFLICT (post_uri) DO UPDATE
           SET like_count = excluded.like_count, repost_count = excluded.repost_count,
               reply_count = excluded.reply_count, quote_count = excluded.quote_count,
               updated_at = now() AT TIME ZONE 'UTC'
         WHERE (x.like_count, x.repost_count, x.reply_count, x.quote_count)
               IS DISTINCT FROM (excluded.like_count, excluded.repost_count,
                                 excluded.reply_count, excluded.quote_count)
        RETURNING x.post_uri::text AS uri, (x.xmax = 0) AS fresh, x.like_count, x.repost_count,
                  x.reply_count, x.quote_count)
    SELECT (SELECT max(u) FROM cand),
           (SELECT count(*) FROM counted),
           (SELECT count(*) FROM up WHERE NOT up.fresh),
           (SELECT count(*) FROM up WHERE up.fresh),
           (SELECT array_agg(e) FROM (
                SELECT up.uri || CASE WHEN o.uri IS NULL THEN ' (new row)' ELSE '' END
                       || ' likes ' || coalesce(o.like_count || '->', '') || up.like_count
                       || ' reposts ' || coalesce(o.repost_count || '->', '') || up.repost_count
                       || ' replies ' || coalesce(o.reply_count || '->', '') || up.reply_count
                       || ' quotes ' || coalesce(o.quote_count || '->', '') || up.quote_count AS e
                  FROM up LEFT JOIN old o ON o.uri = up.uri ORDER BY up.uri LIMIT 5) ex);
END
$fn$;

-- sluice_recount_likes(after, chunk): set the like_count of the next chunk
-- feed generators and labelers after `after` (in URI order) from their
-- likes, under the keys the fold takes for them (see "One lock order"),
-- rows in URI order; called like sluice_recount_posts(). Returns the last
-- URI looked at (NULL past the end) and the rows changed.
CREATE OR REPLACE FUNCTION sluice_recount_likes(after text, chunk int)
RETURNS TABLE (last_uri text, changed bigint) LANGUAGE plpgsql AS $fn$
DECLARE
    uris text[];
    gens bigint;
    labs bigint;
BEGIN
    SELECT array_agg(u ORDER BY u) INTO uris FROM (
        (SELECT uri::text AS u FROM feed_generators WHERE uri > after ORDER BY 1 LIMIT chunk)
        UNION (SELECT uri::text FROM labeler_services WHERE uri > after ORDER BY 1 LIMIT chunk)
        ORDER BY 1 LIMIT chunk) x;
    IF uris IS NULL THEN
        RETURN QUERY SELECT NULL::text, 0::bigint;
        RETURN;
    END IF;
    PERFORM sluice_lock_keys(ARRAY(SELECT 'uri ' || u FROM unnest(uris) u));
    PERFORM 1 FROM feed_generators x WHERE x.uri = ANY (uris) ORDER BY x.uri FOR UPDATE;
    UPDATE feed_generators x SET like_count = (SELECT count(*) FROM likes l WHERE l.post_uri = x.uri)
     WHERE x.uri = ANY (uris)
       AND x.like_count IS DISTINCT FROM (SELECT count(*) FROM likes l WHERE l.post_uri = x.uri);
    GET DIAGNOSTICS gens = ROW_COUNT;
    PERFORM 1 FROM labeler_services x WHERE x.uri = ANY (uris) ORDER BY x.uri FOR UPDATE;
    UPDATE labeler_services x SET like_count = (SELECT count(*) FROM likes l WHERE l.post_uri = x.uri)
     WHERE x.uri = ANY (uris)
       AND x.like_count IS DISTINCT FROM (SELECT count(*) FROM likes l WHERE l.post_uri = x.uri);
    GET DIAGNOSTICS labs = ROW_COUNT;
    RETURN QUERY SELECT uris[cardinality(uris)], gens + labs;
END
$fn$;
