-- 41-feedgen.sql: app.bsky.feed.generator, in feed_generators. A feed
-- generator writes its row, with like_count counted from the likes already
-- there; sluice_fold_counters() recounts it as likes come and go.
-- atp_record_check() requires a service DID and a displayName.

CREATE TABLE IF NOT EXISTS feed_generators (
    uri varchar(512) PRIMARY KEY,
    cid varchar(255) NOT NULL,
    creator_did varchar(255) NOT NULL,
    did varchar(255) NOT NULL,
    display_name varchar(255) NOT NULL,
    description text,
    avatar_url text,
    like_count integer NOT NULL DEFAULT 0,
    created_at timestamp NOT NULL,
    indexed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
SELECT sluice_create_index('idx_feed_generators_creator_did', 'feed_generators', '{creator_did}');
SELECT sluice_create_index('idx_feed_generators_did', 'feed_generators', '{did}');
SELECT sluice_create_index('idx_feed_generators_like_count', 'feed_generators', '{like_count}');
SELECT sluice_create_index('idx_feed_generators_indexed_at', 'feed_generators', '{indexed_at}');

-- sluice_apply_feed_generators(): the staged ops of the type: deletes, then upserts.
CREATE OR REPLACE FUNCTION sluice_apply_feed_generators() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM feed_generators x USING sluice_stage s
     WHERE s.collection = 'app.bsky.feed.generator' AND s.kind = 'delete' AND x.uri = s.uri;
    INSERT INTO feed_generators AS x (uri, cid, creator_did, did, display_name, description,
                                      avatar_url, like_count, created_at)
    SELECT s.uri, s.cid, s.did, coalesce(s.record->>'did', ''),
           left(coalesce(s.record->>'displayName', ''), 255), s.record->>'description',
           sluice_blob_cid(s.record->'avatar'),
           (SELECT count(*) FROM likes l WHERE l.post_uri = s.uri), s.created_at
      FROM sluice_stage s
     WHERE s.collection = 'app.bsky.feed.generator' AND s.kind IN ('create', 'update')
     ORDER BY s.uri
    ON CONFLICT (uri) DO UPDATE
       SET cid = excluded.cid, did = excluded.did, display_name = excluded.display_name,
           description = excluded.description, avatar_url = excluded.avatar_url,
           created_at = excluded.created_at;
END
$fn$;
