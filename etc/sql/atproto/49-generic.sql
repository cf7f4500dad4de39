-- 49-generic.sql: every other collection, in generic_records: the record
-- as it came, by URI. A new record type gets its own file and leaves the
-- list in sluice_generic_collection().

CREATE TABLE IF NOT EXISTS generic_records (
    uri varchar(512) PRIMARY KEY,
    cid varchar(255) NOT NULL,
    author_did varchar(255) NOT NULL,
    record_type varchar(255) NOT NULL,
    record jsonb NOT NULL,
    created_at timestamp NOT NULL,
    indexed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
SELECT sluice_create_index('idx_generic_records_author_did', 'generic_records', '{author_did}');
SELECT sluice_create_index('idx_generic_records_record_type', 'generic_records', '{record_type}');
SELECT sluice_create_index('idx_generic_records_created_at', 'generic_records', '{created_at}');

-- Whether a collection has no record type of its own (goes to
-- generic_records). Inlined by the planner; can't fail.
CREATE OR REPLACE FUNCTION sluice_generic_collection(collection text)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT collection NOT IN (
        'app.bsky.feed.post', 'app.bsky.feed.like', 'app.bsky.feed.repost',
        'app.bsky.graph.follow', 'app.bsky.graph.block', 'app.bsky.actor.profile',
        'app.bsky.graph.list', 'app.bsky.graph.listitem', 'app.bsky.feed.generator',
        'app.bsky.graph.starterpack', 'app.bsky.labeler.service',
        'app.bsky.feed.threadgate', 'app.bsky.feed.postgate')
$$;

-- sluice_apply_generic_records(): the staged ops of every other
-- collection.
CREATE OR REPLACE FUNCTION sluice_apply_generic_records() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM generic_records x USING sluice_stage s
     WHERE s.kind = 'delete' AND x.uri = s.uri
       AND sluice_generic_collection(s.collection);
    INSERT INTO generic_records AS x (uri, cid, author_did, record_type, record, created_at)
    SELECT uri, coalesce(cid, ''), did, left(collection, 255), coalesce(record, '{}'), created_at
      FROM sluice_stage
     WHERE kind IN ('create', 'update')
       AND sluice_generic_collection(collection)
     ORDER BY uri
    ON CONFLICT (uri) DO UPDATE
       SET cid = excluded.cid, record_type = excluded.record_type,
           record = excluded.record, created_at = excluded.created_at;
END
$fn$;
