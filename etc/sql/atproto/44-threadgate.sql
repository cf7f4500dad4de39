-- 44-threadgate.sql: app.bsky.feed.threadgate, in thread_gates, keyed by
-- the post it guards (same repo and rkey, sluice_gate_post()). A threadgate
-- writes its row and its post's has_thread_gate; a delete clears both.

CREATE TABLE IF NOT EXISTS thread_gates (
    post_uri varchar(512) PRIMARY KEY,
    owner_did varchar(255) NOT NULL,
    allow_mentions boolean NOT NULL DEFAULT true,
    allow_following boolean NOT NULL DEFAULT true,
    allow_list_members boolean NOT NULL DEFAULT false,
    allow_list_uris jsonb NOT NULL DEFAULT '[]',
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
SELECT sluice_create_index('idx_thread_gates_owner_did', 'thread_gates', '{owner_did}');

-- sluice_apply_thread_gates(): the staged ops of the type: deletes, then upserts.
CREATE OR REPLACE FUNCTION sluice_apply_thread_gates() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM thread_gates x USING sluice_stage s
     WHERE s.collection = 'app.bsky.feed.threadgate' AND s.kind = 'delete'
       AND x.post_uri = sluice_gate_post(s.uri);
    INSERT INTO thread_gates AS x (post_uri, owner_did, allow_mentions, allow_following,
                                   allow_list_members, allow_list_uris, created_at)
    SELECT sluice_gate_post(uri), did,
           a IS NULL OR a @> '[{"$type": "app.bsky.feed.threadgate#mentionRule"}]',
           a IS NULL OR a @> '[{"$type": "app.bsky.feed.threadgate#followingRule"}]',
           coalesce(a @> '[{"$type": "app.bsky.feed.threadgate#listRule"}]', false),
           coalesce(jsonb_path_query_array(a,
               '$[*] ? (@."$type" == "app.bsky.feed.threadgate#listRule").list', '{}', true), '[]'),
           created_at
      FROM (SELECT uri, did, created_at,
                   CASE WHEN jsonb_typeof(record->'allow') = 'array' THEN record->'allow' END AS a
              FROM sluice_stage
             WHERE collection = 'app.bsky.feed.threadgate' AND kind IN ('create', 'update')) g
     ORDER BY 1
    ON CONFLICT (post_uri) DO UPDATE
       SET owner_did = excluded.owner_did, allow_mentions = excluded.allow_mentions,
           allow_following = excluded.allow_following,
           allow_list_members = excluded.allow_list_members,
           allow_list_uris = excluded.allow_list_uris, created_at = excluded.created_at,
           updated_at = now() AT TIME ZONE 'UTC';
    UPDATE posts p SET has_thread_gate = (s.kind <> 'delete')
      FROM sluice_stage s
     WHERE s.collection = 'app.bsky.feed.threadgate' AND p.uri = sluice_gate_post(s.uri)
       AND p.has_thread_gate IS DISTINCT FROM (s.kind <> 'delete');
END
$fn$;
