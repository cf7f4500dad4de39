-- 40-list.sql: app.bsky.graph.list, in lists. A list writes its row only
-- (its items are 34-listitem's). atp_record_check() requires a name and a
-- purpose.

CREATE TABLE IF NOT EXISTS lists (
    uri varchar(512) PRIMARY KEY,
    cid varchar(255) NOT NULL,
    creator_did varchar(255) NOT NULL,
    name varchar(255) NOT NULL,
    purpose varchar(64) NOT NULL,
    description text,
    avatar_url text,
    created_at timestamp NOT NULL,
    indexed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
SELECT sluice_create_index('idx_lists_creator_did', 'lists', '{creator_did}');
SELECT sluice_create_index('idx_lists_purpose', 'lists', '{purpose}');
SELECT sluice_create_index('idx_lists_indexed_at', 'lists', '{indexed_at}');

-- sluice_apply_lists(): the staged ops of the type: deletes, then upserts.
CREATE OR REPLACE FUNCTION sluice_apply_lists() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM lists x USING sluice_stage s
     WHERE s.collection = 'app.bsky.graph.list' AND s.kind = 'delete' AND x.uri = s.uri;
    INSERT INTO lists AS x (uri, cid, creator_did, name, purpose, description, avatar_url, created_at)
    SELECT uri, cid, did, left(coalesce(record->>'name', ''), 255),
           left(coalesce(record->>'purpose', ''), 64), record->>'description',
           sluice_blob_cid(record->'avatar'), created_at
      FROM sluice_stage
     WHERE collection = 'app.bsky.graph.list' AND kind IN ('create', 'update')
     ORDER BY uri
    ON CONFLICT (uri) DO UPDATE
       SET cid = excluded.cid, name = excluded.name, purpose = excluded.purpose,
           description = excluded.description, avatar_url = excluded.avatar_url,
           created_at = excluded.created_at;
END
$fn$;
