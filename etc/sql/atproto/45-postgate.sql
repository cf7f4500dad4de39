-- 45-postgate.sql: app.bsky.feed.postgate, in post_gates, keyed by the
-- post it guards. A postgate writes its row and its post's has_post_gate;
-- a delete clears both.

CREATE TABLE IF NOT EXISTS post_gates (
    post_uri varchar(512) PRIMARY KEY,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    embedding_rules jsonb NOT NULL DEFAULT '{}'
);
SELECT sluice_create_index('idx_post_gates_created_at', 'post_gates', '{created_at}');

-- sluice_apply_post_gates(): the staged ops of the type: deletes, then upserts.
CREATE OR REPLACE FUNCTION sluice_apply_post_gates() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM post_gates x USING sluice_stage s
     WHERE s.collection = 'app.bsky.feed.postgate' AND s.kind = 'delete'
       AND x.post_uri = sluice_gate_post(s.uri);
    INSERT INTO post_gates AS x (post_uri, created_at, embedding_rules)
    SELECT sluice_gate_post(uri), created_at,
           jsonb_strip_nulls(jsonb_build_object(
               'embeddingRules', record->'embeddingRules',
               'detachedEmbeddingUris', record->'detachedEmbeddingUris'))
      FROM sluice_stage
     WHERE collection = 'app.bsky.feed.postgate' AND kind IN ('create', 'update')
     ORDER BY 1
    ON CONFLICT (post_uri) DO UPDATE
       SET created_at = excluded.created_at, embedding_rules = excluded.embedding_rules;
    UPDATE posts p SET has_post_gate = (s.kind <> 'delete')
      FROM sluice_stage s
     WHERE s.collection = 'app.bsky.feed.postgate' AND p.uri = sluice_gate_post(s.uri)
       AND p.has_post_gate IS DISTINCT FROM (s.kind <> 'delete');
END
$fn$;
