-- 96-check.sql: what `sluiced --check` reports: the appview's rows that
-- disagree with each other (counters against the rows they count, what a
-- record produced whose record is gone, users rows missing), as the mixes
-- of old workers and sluice leave them. Read-only.

-- sluice_check(scan): one row per kind of problem: what it is, how many
-- were found and up to 5 examples. Each check reads at most `scan` rows
-- of the table it starts from (0: all of them), so that it can run on a
-- live database; run it in one REPEATABLE READ transaction for one
-- snapshot. A counter is compared with its rows after the deltas
-- committed and not folded yet. Can't fail on valid tables.
CREATE OR REPLACE FUNCTION sluice_check(scan bigint)
RETURNS TABLE (problem text, found bigint, examples text[])
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    lim bigint := CASE WHEN scan > 0 THEN scan END;   -- NULL: no limit
BEGIN
    RETURN QUERY
    WITH a AS (SELECT * FROM post_aggregations LIMIT lim),
    pending AS (
        SELECT d.uri, sum(d.likes) AS likes, sum(d.reposts) AS reposts,
               sum(d.replies) AS replies, sum(d.quotes) AS quotes
          FROM sluice_counter_delta d WHERE d.uri IN (SELECT a.post_uri FROM a) GROUP BY d.uri),
    c AS (
        SELECT a.post_uri AS uri,
               a.like_count + coalesce(p.likes, 0) AS likes,
               (SELECT count(*) FROM likes l WHERE l.post_uri = a.post_uri) AS like_rows,
               a.repost_count + coalesce(p.reposts, 0) AS reposts,
               (SELECT count(*) FROM reposts r WHERE r.post_uri = a.post_uri) AS repost_rows,
               a.reply_count + coalesce(p.replies, 0) AS replies,
               (SELECT count(*) FROM posts r WHERE r.parent_uri = a.post_uri) AS reply_rows,
               a.quote_count + coalesce(p.quotes, 0) AS quotes,
               (SELECT count(*) FROM quotes q WHERE q.quoted_uri = a.post_uri) AS quote_rows
          FROM a LEFT JOIN pending p ON p.uri = a.post_uri),
    bad AS (
        SELECT * FROM c
         WHERE likes <> like_rows OR reposts <> repost_rows OR replies <> reply_rows
            OR quotes <> quote_rows)
    SELECT 'counters that differ from their rows'::text, count(*),
           (array_agg(bad.uri || ' likes ' || bad.likes || '/' || bad.like_rows
                      || ' reposts ' || bad.reposts || '/' || bad.repost_rows
                      || ' replies ' || bad.replies || '/' || bad.reply_rows
                      || ' quotes ' || bad.quotes || '/' || bad.quote_rows ORDER BY bad.uri))[1:5]::text[]
      FROM bad;

    RETURN QUERY
    WITH s AS (
        (SELECT p.uri::text AS u FROM posts p LIMIT lim)
        UNION (SELECT l.post_uri::text FROM likes l LIMIT lim)
        UNION (SELECT r.post_uri::text FROM reposts r LIMIT lim)
        UNION (SELECT p.parent_uri::text FROM posts p WHERE p.parent_uri IS NOT NULL LIMIT lim)
        UNION (SELECT q.quoted_uri::text FROM quotes q LIMIT lim)),
    bad AS (
        SELECT s.u FROM s
         WHERE split_part(s.u, '/', 4) = 'app.bsky.feed.post'
           AND NOT EXISTS (SELECT 1 FROM post_aggregations a WHERE a.post_uri = s.u)
           AND NOT EXISTS (SELECT 1 FROM sluice_counter_delta d WHERE d.uri = s.u))
    SELECT 'posts and counted subjects without a counter row'::text, count(*),
           (array_agg(bad.u ORDER BY bad.u))[1:5]::text[] FROM bad;

    RETURN QUERY
    WITH f AS (SELECT * FROM feed_items LIMIT lim),
    bad AS (
        SELECT f.uri, f.type FROM f
         WHERE (f.type = 'post' AND NOT EXISTS (SELECT 1 FROM posts p WHERE p.uri = f.uri))
            OR (f.type = 'repost' AND NOT EXISTS (SELECT 1 FROM reposts r WHERE r.uri = f.uri)))
    SELECT 'feed items whose record is gone'::text, count(*),
           (array_agg(bad.uri || ' (' || bad.type || ')' ORDER BY bad.uri))[1:5]::text[] FROM bad;

    RETURN QUERY
    WITH q AS (SELECT * FROM quotes LIMIT lim),
    bad AS (SELECT q.uri FROM q WHERE NOT EXISTS (SELECT 1 FROM posts p WHERE p.uri = q.post_uri))
    SELECT 'quotes whose post is gone'::text, count(*), (array_agg(bad.uri ORDER BY bad.uri))[1:5]::text[]
      FROM bad;

    -- a notification's record: its URI, less an old worker's suffix
    RETURN QUERY
    WITH n AS (SELECT x.uri, split_part(x.uri, '#', 1) AS rec FROM notifications x LIMIT lim),
    bad AS (
        SELECT n.uri FROM n
         WHERE CASE split_part(n.rec, '/', 4)
                 WHEN 'app.bsky.feed.post' THEN NOT EXISTS (SELECT 1 FROM posts r WHERE r.uri = n.rec)
                 WHEN 'app.bsky.feed.like' THEN NOT EXISTS (SELECT 1 FROM likes r WHERE r.uri = n.rec)
                 WHEN 'app.bsky.feed.repost' THEN NOT EXISTS (SELECT 1 FROM reposts r WHERE r.uri = n.rec)
                 WHEN 'app.bsky.graph.follow' THEN NOT EXISTS (SELECT 1 FROM follows r WHERE r.uri = n.rec)
                 ELSE false
               END)
    SELECT 'notifications whose record is gone'::text, count(*), (array_agg(bad.uri ORDER BY bad.uri))[1:5]::text[]
      FROM bad;

    RETURN QUERY
    WITH v AS (SELECT * FROM post_viewer_states LIMIT lim),
    bad AS (
        SELECT v.post_uri || ' viewer ' || v.viewer_did AS e FROM v
         WHERE (v.like_uri IS NULL AND v.repost_uri IS NULL
                AND NOT (v.bookmarked OR v.thread_muted OR v.reply_disabled
                         OR v.embedding_disabled OR v.pinned))
            OR (v.like_uri IS NOT NULL AND NOT EXISTS (SELECT 1 FROM likes l WHERE l.uri = v.like_uri))
            OR (v.repost_uri IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM reposts r WHERE r.uri = v.repost_uri)))
    SELECT 'viewer states without a live like, repost or flag'::text, count(*),
           (array_agg(bad.e ORDER BY bad.e))[1:5]::text[] FROM bad;

    RETURN QUERY
    WITH d AS (
        (SELECT p.author_did::text AS did FROM posts p LIMIT lim)
        UNION (SELECT l.user_did::text FROM likes l LIMIT lim)
        UNION (SELECT r.user_did::text FROM reposts r LIMIT lim)
        UNION (SELECT f.follower_did::text FROM follows f LIMIT lim)
        UNION (SELECT f.following_did::text FROM follows f LIMIT lim)
        UNION (SELECT b.blocker_did::text FROM blocks b LIMIT lim)
        UNION (SELECT b.blocked_did::text FROM blocks b LIMIT lim)
        UNION (SELECT i.subject_did::text FROM list_items i LIMIT lim)),
    bad AS (SELECT d.did FROM d WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.did = d.did))
    SELECT 'actors and subjects without a users row'::text, count(*),
           (array_agg(bad.did ORDER BY bad.did))[1:5]::text[] FROM bad;
END
$fn$;
