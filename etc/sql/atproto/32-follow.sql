-- 32-follow.sql: app.bsky.graph.follow, in follows. Pair: (follower_did,
-- following_did). A follow writes its row and a notification to the
-- followed DID (whose users row 10-actor ensures). atp_record_check()
-- requires a subject DID.
--
-- The pair-type contract (see 39-pairs.sql): sluice_follow_pair(),
-- sluice_follow_row_pair(), sluice_follow_foreign_rows() and sluice_apply_follows().

CREATE TABLE IF NOT EXISTS follows (
    uri varchar(512) PRIMARY KEY,
    follower_did varchar(255) NOT NULL,
    following_did varchar(255) NOT NULL,
    created_at timestamp NOT NULL,
    indexed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    commit_time timestamp,
    commit_seq varchar(32),
    commit_rev varchar(64),
    CONSTRAINT follows_follower_did_following_did_key UNIQUE (follower_did, following_did)
);
SELECT sluice_create_index('idx_follows_follower_did', 'follows', '{follower_did}');
SELECT sluice_create_index('idx_follows_following_did', 'follows', '{following_did}');

-- The pair of a follow record written by did, as text ('a b'). Inlined
-- by the planner; can't fail.
CREATE OR REPLACE FUNCTION sluice_follow_pair(did text, record jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT did || ' ' || (record->>'subject')
$$;

-- The pair the current follows row of row_uri holds, NULL if there is none.
-- Can't fail.
CREATE OR REPLACE FUNCTION sluice_follow_row_pair(row_uri text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT x.follower_did || ' ' || x.following_did FROM follows x WHERE x.uri = row_uri
$$;

-- sluice_follow_foreign_rows(): for each follow pair of the batch whose current
-- row has no state row (written by someone else, see
-- sluice_pairs_collect()), that row's URI in sluice_pairs.held.
CREATE OR REPLACE FUNCTION sluice_follow_foreign_rows() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE sluice_pairs p SET held = y.uri FROM follows y
     WHERE p.collection = 'app.bsky.graph.follow'
       AND y.follower_did = p.a AND y.following_did = p.b
       AND NOT EXISTS (SELECT 1 FROM sluice_record_state r WHERE r.uri = y.uri);
END
$fn$;

-- sluice_apply_follows(): retract and write the staged follow ops
-- (see "two passes" in 39-pairs.sql).
CREATE OR REPLACE FUNCTION sluice_apply_follows() RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    n bigint;
BEGIN
    WITH gone AS (
        DELETE FROM follows x
         WHERE x.uri IN (SELECT y.uri FROM sluice_pairs p
                           JOIN follows y ON y.follower_did = p.a AND y.following_did = p.b
                          WHERE p.collection = 'app.bsky.graph.follow'
                            AND p.full_check)
           AND EXISTS (SELECT 1 FROM sluice_record_state s WHERE s.uri = x.uri
                      AND (s.deleted OR s.pair IS DISTINCT FROM x.follower_did || ' ' || x.following_did))
        RETURNING x.uri, x.follower_did, x.following_did),
    n AS (DELETE FROM notifications x USING gone
           WHERE x.uri = ANY (sluice_notification_names(gone.uri)))
    SELECT count(*) FROM gone INTO n;

    WITH ins AS (
        INSERT INTO follows AS x (uri, follower_did, following_did, created_at, commit_time, commit_seq, commit_rev)
        SELECT r.uri, p.a, p.b, r.created_at, r.commit_time, r.commit_seq, r.commit_rev
          FROM sluice_pairs p JOIN sluice_record_state r ON r.uri = p.want
         WHERE p.collection = 'app.bsky.graph.follow'
         ORDER BY p.a, p.b
        ON CONFLICT (follower_did, following_did) DO UPDATE
           SET uri = excluded.uri, created_at = excluded.created_at,
               commit_time = excluded.commit_time, commit_seq = excluded.commit_seq,
               commit_rev = excluded.commit_rev
         WHERE excluded.uri <= x.uri
        RETURNING x.uri, x.follower_did, x.following_did, x.created_at, (x.xmax = 0) AS fresh),
    n AS (
        INSERT INTO notifications (uri, recipient_did, author_did, reason, reason_subject, cid, created_at)
        SELECT i.uri, i.following_did, i.follower_did, 'follow', NULL, r.cid, i.created_at
          FROM ins i JOIN sluice_record_state r ON r.uri = i.uri
         WHERE i.following_did <> i.follower_did
           -- a row there already (replayed, or taken over): notified unless
           -- its notification is there under any name
           AND (i.fresh OR NOT EXISTS (SELECT 1 FROM notifications o
                                        WHERE o.uri = ANY (sluice_notification_names(i.uri))))
         ORDER BY i.uri
        ON CONFLICT (uri) DO NOTHING),
    rc AS (
        UPDATE sluice_pairs p SET recheck = true FROM ins
         WHERE NOT ins.fresh AND p.collection = 'app.bsky.graph.follow'
           AND p.a = ins.follower_did AND p.b = ins.following_did)
    SELECT count(*) FROM ins INTO n;
END
$fn$;
