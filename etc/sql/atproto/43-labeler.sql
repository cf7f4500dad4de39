-- 43-labeler.sql: app.bsky.labeler.service, in labeler_services. A labeler
-- writes its row, with like_count counted like a feed generator's.
-- atp_record_check() requires a policies object.

CREATE TABLE IF NOT EXISTS labeler_services (
    uri varchar(512) PRIMARY KEY,
    cid varchar(255) NOT NULL,
    creator_did varchar(255) NOT NULL,
    policies jsonb NOT NULL,
    like_count integer NOT NULL DEFAULT 0,
    created_at timestamp NOT NULL,
    indexed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
SELECT sluice_create_index('idx_labeler_services_creator_did', 'labeler_services', '{creator_did}');
SELECT sluice_create_index('idx_labeler_services_like_count', 'labeler_services', '{like_count}');
SELECT sluice_create_index('idx_labeler_services_indexed_at', 'labeler_services', '{indexed_at}');

-- sluice_apply_labeler_services(): the staged ops of the type: deletes, then upserts.
CREATE OR REPLACE FUNCTION sluice_apply_labeler_services() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM labeler_services x USING sluice_stage s
     WHERE s.collection = 'app.bsky.labeler.service' AND s.kind = 'delete' AND x.uri = s.uri;
    INSERT INTO labeler_services AS x (uri, cid, creator_did, policies, like_count, created_at)
    SELECT s.uri, s.cid, s.did, coalesce(s.record->'policies', '{}'),
           (SELECT count(*) FROM likes l WHERE l.post_uri = s.uri), s.created_at
      FROM sluice_stage s
     WHERE s.collection = 'app.bsky.labeler.service' AND s.kind IN ('create', 'update')
     ORDER BY s.uri
    ON CONFLICT (uri) DO UPDATE
       SET cid = excluded.cid, policies = excluded.policies, created_at = excluded.created_at;
END
$fn$;
