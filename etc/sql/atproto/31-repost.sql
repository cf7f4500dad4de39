-- 31-repost.sql: app.bsky.feed.repost, in reposts. Pair: (user_did,
-- post_uri). A repost writes its row, a feed item, a notification to the
-- subject's author and the reposter's viewer state of the post
-- (repost_uri); counters: the subject's reposts. atp_record_check()
-- requires an at:// subject URI.
--
-- The pair-type contract (see 39-pairs.sql): sluice_repost_pair(),
-- sluice_repost_row_pair(), sluice_repost_foreign_rows() and sluice_apply_reposts().

CREATE TABLE IF NOT EXISTS reposts (
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
    CONSTRAINT reposts_user_did_post_uri_key UNIQUE (user_did, post_uri)
);
SELECT sluice_create_index('idx_reposts_user_did', 'reposts', '{user_did}');
SELECT sluice_create_index('idx_reposts_post_uri', 'reposts', '{post_uri}');

-- The pair of a repost record written by did, as text ('a b'). Inlined
-- by the planner; can't fail.
CREATE OR REPLACE FUNCTION sluice_repost_pair(did text, record jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT did || ' ' || (record->'subject'->>'uri')
$$;

-- The pair the current reposts row of row_uri holds, NULL if there is none.
-- Can't fail.
CREATE OR REPLACE FUNCTION sluice_repost_row_pair(row_uri text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT x.user_did || ' ' || x.post_uri FROM reposts x WHERE x.uri = row_uri
$$;

-- sluice_repost_foreign_rows(): for each repost pair of the batch whose current
-- row has no state row (written by someone else, see
-- sluice_pairs_collect()), that row's URI in sluice_pairs.held.
CREATE OR REPLACE FUNCTION sluice_repost_foreign_rows() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE sluice_pairs p SET held = y.uri FROM reposts y
     WHERE p.collection = 'app.bsky.feed.repost'
       AND y.user_did = p.a AND y.post_uri = p.b
       AND NOT EXISTS (SELECT 1 FROM sluice_record_state r WHERE r.uri = y.uri);
END
$fn$;

-- sluice_apply_reposts(): retract and write the staged repost ops
-- (see "two passes" in 39-pairs.sql).
CREATE OR REPLACE FUNCTION sluice_apply_reposts() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    WITH gone AS (
        DELETE FROM reposts x
         WHERE x.uri IN (SELECT y.uri FROM sluice_pairs p
                           JOIN reposts y ON y.user_did = p.a AND y.post_uri = p.b
                          WHERE p.collection = 'app.bsky.feed.repost'
                            AND p.full_check)
           AND EXISTS (SELECT 1 FROM sluice_record_state s WHERE s.uri = x.uri
                      AND (s.deleted OR s.pair IS DISTINCT FROM x.user_did || ' ' || x.post_uri))
        RETURNING x.uri, x.user_did, x.post_uri),
    n AS (DELETE FROM notifications x USING gone
           WHERE x.uri = ANY (sluice_notification_names(gone.uri))),
    f AS (DELETE FROM feed_items x USING gone WHERE x.uri = gone.uri),
    v AS (UPDATE post_viewer_states x SET repost_uri = NULL FROM gone
           WHERE x.post_uri = gone.post_uri AND x.viewer_did = gone.user_did
             AND x.repost_uri = gone.uri)
    INSERT INTO sluice_delta (uri, reposts) SELECT post_uri, -1 FROM gone;

    WITH ins AS (
        INSERT INTO reposts AS x (uri, user_did, post_uri, subject_cid, via, created_at, commit_time, commit_seq, commit_rev)
        SELECT r.uri, p.a, p.b, r.record->'subject'->>'cid', r.record->'via', r.created_at, r.commit_time, r.commit_seq, r.commit_rev
          FROM sluice_pairs p JOIN sluice_record_state r ON r.uri = p.want
         WHERE p.collection = 'app.bsky.feed.repost'
         ORDER BY p.a, p.b
        ON CONFLICT (user_did, post_uri) DO UPDATE
           SET uri = excluded.uri, subject_cid = excluded.subject_cid, via = excluded.via,
               created_at = excluded.created_at, commit_time = excluded.commit_time,
               commit_seq = excluded.commit_seq, commit_rev = excluded.commit_rev
         WHERE excluded.uri <= x.uri
        RETURNING x.uri, x.user_did, x.post_uri, x.created_at, (x.xmax = 0) AS fresh),
    n AS (
        INSERT INTO notifications (uri, recipient_did, author_did, reason, reason_subject, cid, created_at)
        SELECT i.uri, split_part(i.post_uri, '/', 3), i.user_did, 'repost', i.post_uri, r.cid, i.created_at
          FROM ins i JOIN sluice_record_state r ON r.uri = i.uri
         WHERE split_part(i.post_uri, '/', 3) <> i.user_did
           -- a row there already (replayed, or taken over): notified unless
           -- its notification is there under any name
           AND (i.fresh OR NOT EXISTS (SELECT 1 FROM notifications o
                                        WHERE o.uri = ANY (sluice_notification_names(i.uri))))
         ORDER BY i.uri
        ON CONFLICT (uri) DO NOTHING),
    f AS (
        INSERT INTO feed_items AS x (uri, post_uri, originator_did, type, sort_at, cid, created_at)
        SELECT i.uri, i.post_uri, i.user_did, 'repost', i.created_at, r.cid, i.created_at
          FROM ins i JOIN sluice_record_state r ON r.uri = i.uri
         ORDER BY i.uri
        ON CONFLICT (uri) DO UPDATE
           SET post_uri = excluded.post_uri, sort_at = excluded.sort_at, cid = excluded.cid,
               created_at = excluded.created_at),
    v AS (
        INSERT INTO post_viewer_states AS x (post_uri, viewer_did, repost_uri)
        SELECT post_uri, user_did, uri FROM ins ORDER BY post_uri, user_did
        ON CONFLICT (post_uri, viewer_did) DO UPDATE
           SET repost_uri = excluded.repost_uri, updated_at = now() AT TIME ZONE 'UTC'
         WHERE x.repost_uri IS DISTINCT FROM excluded.repost_uri),
    rc AS (
        UPDATE sluice_pairs p SET recheck = true FROM ins
         WHERE NOT ins.fresh AND p.collection = 'app.bsky.feed.repost'
           AND p.a = ins.user_did AND p.b = ins.post_uri)
    INSERT INTO sluice_delta (uri, reposts) SELECT post_uri, 1 FROM ins WHERE fresh;
END
$fn$;
