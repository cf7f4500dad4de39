-- 42-starterpack.sql: app.bsky.graph.starterpack, in starter_packs. A
-- starter pack writes its row only. atp_record_check() requires a name.

CREATE TABLE IF NOT EXISTS starter_packs (
    uri varchar(512) PRIMARY KEY,
    cid varchar(255) NOT NULL,
    creator_did varchar(255) NOT NULL,
    name varchar(255) NOT NULL,
    description text,
    list_uri varchar(512),
    feeds jsonb NOT NULL DEFAULT '[]',
    created_at timestamp NOT NULL,
    indexed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
SELECT sluice_create_index('idx_starter_packs_creator_did', 'starter_packs', '{creator_did}');
SELECT sluice_create_index('idx_starter_packs_list_uri', 'starter_packs', '{list_uri}');
SELECT sluice_create_index('idx_starter_packs_indexed_at', 'starter_packs', '{indexed_at}');

-- sluice_apply_starter_packs(): the staged ops of the type: deletes, then upserts.
CREATE OR REPLACE FUNCTION sluice_apply_starter_packs() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM starter_packs x USING sluice_stage s
     WHERE s.collection = 'app.bsky.graph.starterpack' AND s.kind = 'delete' AND x.uri = s.uri;
    INSERT INTO starter_packs AS x (uri, cid, creator_did, name, description, list_uri, feeds, created_at)
    SELECT uri, cid, did, left(coalesce(record->>'name', ''), 255), record->>'description',
           record->>'list',
           CASE WHEN jsonb_typeof(record->'feeds') = 'array' THEN record->'feeds' ELSE '[]' END,
           created_at
      FROM sluice_stage
     WHERE collection = 'app.bsky.graph.starterpack' AND kind IN ('create', 'update')
     ORDER BY uri
    ON CONFLICT (uri) DO UPDATE
       SET cid = excluded.cid, name = excluded.name, description = excluded.description,
           list_uri = excluded.list_uri, feeds = excluded.feeds, created_at = excluded.created_at;
END
$fn$;
