-- 30-like.sql: app.bsky.feed.like, in likes. Pair: (user_did, post_uri),
-- the liker and the subject's URI. A like writes its row, a notification
-- to the subject's author, the liker's viewer state of the post
-- (like_uri) and, when the post is a reply whose root the liker wrote, the
-- post's thread context; counters: the subject's likes (a feed generator's
-- or labeler's like_count is recounted by the fold). atp_record_check()
-- requires an at:// subject URI.
--
-- The pair-type contract (see 39-pairs.sql): sluice_like_pair(),
-- sluice_like_row_pair(), sluice_like_foreign_rows() and sluice_apply_likes().

CREATE TABLE IF NOT EXISTS likes (
    uri varchar(512) PRIMARY KEY,
    user_did varchar(255) NOT NULL,
    post_uri varchar(512) NOT NULL,
    subject_cid varchar(255),
    via jsonb,
    created_at timestamp NOT NULL,
    indexed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    commit_time timestamp,
    commit_seq varchar(32),
    commit_rev varchar(64),
    CONSTRAINT likes_user_did_post_uri_key UNIQUE (user_did, post_uri)
);
SELECT sluice_create_index('idx_likes_user_did', 'likes', '{user_did}');
SELECT sluice_create_index('idx_likes_post_uri', 'likes', '{post_uri}');

-- sluice_like_context_ruled_out(liker, subject): a row when the committed
-- post subject rules out a thread context from a like of it by liker (it
-- is not a reply, or its root is not liker's), none otherwise. So a like
-- may give its subject a thread context when
--   NOT EXISTS (SELECT FROM sluice_like_context_ruled_out(liker, subject)).
-- A set-returning SQL function, so that the planner inlines it into the
-- caller as an anti-join (a scalar function holding a subquery is run
-- once a row: 12 us a like). Can't fail.
CREATE OR REPLACE FUNCTION sluice_like_context_ruled_out(liker text, subject text)
RETURNS SETOF boolean LANGUAGE sql STABLE AS $$
    SELECT true FROM posts p
     WHERE p.uri = subject AND (p.parent_uri IS NULL OR split_part(p.root_uri, '/', 3) <> liker)
$$;

-- The pair of a like record written by did, as text ('a b'). Inlined
-- by the planner; can't fail.
CREATE OR REPLACE FUNCTION sluice_like_pair(did text, record jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT did || ' ' || (record->'subject'->>'uri')
$$;

-- The pair the current likes row of row_uri holds, NULL if there is none.
-- Can't fail.
CREATE OR REPLACE FUNCTION sluice_like_row_pair(row_uri text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT x.user_did || ' ' || x.post_uri FROM likes x WHERE x.uri = row_uri
$$;

-- sluice_like_foreign_rows(): for each like pair of the batch whose current
-- row has no state row (written by someone else, see
-- sluice_pairs_collect()), that row's URI in sluice_pairs.held.
CREATE OR REPLACE FUNCTION sluice_like_foreign_rows() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE sluice_pairs p SET held = y.uri FROM likes y
     WHERE p.collection = 'app.bsky.feed.like'
       AND y.user_did = p.a AND y.post_uri = p.b
       AND NOT EXISTS (SELECT 1 FROM sluice_record_state r WHERE r.uri = y.uri);
END
$fn$;

-- sluice_apply_likes(): retract and write the staged like ops
-- (see "two passes" in 39-pairs.sql).
CREATE OR REPLACE FUNCTION sluice_apply_likes() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    WITH gone AS (
        DELETE FROM likes x
         WHERE x.uri IN (SELECT y.uri FROM sluice_pairs p
                           JOIN likes y ON y.user_did = p.a AND y.post_uri = p.b
                          WHERE p.collection = 'app.bsky.feed.like'
                            AND p.full_check)
           AND EXISTS (SELECT 1 FROM sluice_record_state s WHERE s.uri = x.uri
                      AND (s.deleted OR s.pair IS DISTINCT FROM x.user_did || ' ' || x.post_uri))
        RETURNING x.uri, x.user_did, x.post_uri),
    n AS (DELETE FROM notifications x USING gone
           WHERE x.uri = ANY (sluice_notification_names(gone.uri))),
    t AS (DELETE FROM thread_contexts x USING gone WHERE x.root_author_like_uri = gone.uri),
    v AS (UPDATE post_viewer_states x SET like_uri = NULL FROM gone
           WHERE x.post_uri = gone.post_uri AND x.viewer_did = gone.user_did
             AND x.like_uri = gone.uri)
    INSERT INTO sluice_delta (uri, likes) SELECT post_uri, -1 FROM gone;

    WITH ins AS (
        INSERT INTO likes AS x (uri, user_did, post_uri, subject_cid, via, created_at, commit_time, commit_seq, commit_rev)
        SELECT r.uri, p.a, p.b, r.record->'subject'->>'cid', r.record->'via', r.created_at, r.commit_time, r.commit_seq, r.commit_rev
          FROM sluice_pairs p JOIN sluice_record_state r ON r.uri = p.want
         WHERE p.collection = 'app.bsky.feed.like'
         ORDER BY p.a, p.b
        ON CONFLICT (user_did, post_uri) DO UPDATE
           SET uri = excluded.uri, subject_cid = excluded.subject_cid, via = excluded.via,
               created_at = excluded.created_at, commit_time = excluded.commit_time,
               commit_seq = excluded.commit_seq, commit_rev = excluded.commit_rev
         WHERE excluded.uri <= x.uri
        RETURNING x.uri, x.user_did, x.post_uri, x.created_at, (x.xmax = 0) AS fresh),
    n AS (
        INSERT INTO notifications (uri, recipient_did, author_did, reason, reason_subject, cid, created_at)
        SELECT i.uri, split_part(i.post_uri, '/', 3), i.user_did, 'like', i.post_uri, r.cid, i.created_at
          FROM ins i JOIN sluice_record_state r ON r.uri = i.uri
         WHERE split_part(i.post_uri, '/', 3) <> i.user_did
           -- a row there already (replayed, or taken over): notified unless
           -- its notification is there under any name
           AND (i.fresh OR NOT EXISTS (SELECT 1 FROM notifications o
                                        WHERE o.uri = ANY (sluice_notification_names(i.uri))))
         ORDER BY i.uri
        ON CONFLICT (uri) DO NOTHING),
    v AS (
        INSERT INTO post_viewer_states AS x (post_uri, viewer_did, like_uri)
        SELECT post_uri, user_did, uri FROM ins ORDER BY post_uri, user_did
        ON CONFLICT (post_uri, viewer_did) DO UPDATE
           SET like_uri = excluded.like_uri, updated_at = now() AT TIME ZONE 'UTC'
         WHERE x.like_uri IS DISTINCT FROM excluded.like_uri),
    t AS (
        INSERT INTO thread_contexts AS x (post_uri, root_author_like_uri)
        SELECT i.post_uri, i.uri FROM ins i JOIN posts p ON p.uri = i.post_uri
         WHERE p.parent_uri IS NOT NULL AND split_part(p.root_uri, '/', 3) = i.user_did
         ORDER BY i.post_uri
        ON CONFLICT (post_uri) DO UPDATE
           SET root_author_like_uri = excluded.root_author_like_uri,
               updated_at = now() AT TIME ZONE 'UTC'),
    rc AS (
        UPDATE sluice_pairs p SET recheck = true FROM ins
         WHERE NOT ins.fresh AND p.collection = 'app.bsky.feed.like'
           AND p.a = ins.user_did AND p.b = ins.post_uri)
    INSERT INTO sluice_delta (uri, likes) SELECT post_uri, 1 FROM ins WHERE fresh;
END
$fn$;
