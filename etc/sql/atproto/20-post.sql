-- 20-post.sql: app.bsky.feed.post, in posts and quotes. A post writes its
-- row, its feed item, a quote of a post it embeds (app.bsky.embed.record or
-- recordWithMedia), one notification (reply, quote or mention, see
-- "notifications" in 00-base.sql) and a thread context when the root's
-- author already likes the reply; counters: the parent's replies, the
-- quoted post's quotes. has_thread_gate / has_post_gate are read from the
-- gates already there (44-threadgate and 45-postgate set them later).
-- atp_record_check() (worker/atproto_record.c) requires text and, in a
-- reply, at:// URIs of the parent and the root.

CREATE TABLE IF NOT EXISTS posts (
    uri varchar(512) PRIMARY KEY,
    cid varchar(255) NOT NULL,
    author_did varchar(255) NOT NULL,
    text text NOT NULL,
    langs jsonb,
    parent_uri varchar(512),
    parent_cid varchar(255),
    root_uri varchar(512),
    root_cid varchar(255),
    embed jsonb,
    facets jsonb,
    violates_thread_gate boolean NOT NULL DEFAULT false,
    violates_embedding_rules boolean NOT NULL DEFAULT false,
    has_thread_gate boolean NOT NULL DEFAULT false,
    has_post_gate boolean NOT NULL DEFAULT false,
    tags jsonb NOT NULL DEFAULT '[]',
    search_vector tsvector,
    created_at timestamp NOT NULL,
    indexed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    commit_time timestamp,
    commit_seq varchar(32),
    commit_rev varchar(64)
);
SELECT sluice_create_index('idx_posts_author_did', 'posts', '{author_did}');
SELECT sluice_create_index('idx_posts_indexed_at', 'posts', '{indexed_at}');
SELECT sluice_create_index('idx_posts_parent_uri', 'posts', '{parent_uri}');
SELECT sluice_create_index('idx_posts_root_uri', 'posts', '{root_uri}');
SELECT sluice_create_index('idx_posts_search_vector', 'posts', '{search_vector}', 'gin');

CREATE TABLE IF NOT EXISTS quotes (
    uri varchar(512) PRIMARY KEY,
    cid varchar(255) NOT NULL,
    post_uri varchar(512) NOT NULL,
    quoted_uri varchar(512) NOT NULL,
    quoted_cid varchar(255),
    created_at timestamp NOT NULL,
    indexed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    CONSTRAINT quotes_post_uri_quoted_uri_key UNIQUE (post_uri, quoted_uri)
);
SELECT sluice_create_index('idx_quotes_post_uri', 'quotes', '{post_uri}');
SELECT sluice_create_index('idx_quotes_quoted_uri', 'quotes', '{quoted_uri}');

-- sluice_post_mention_names(post_uri, post_text, post_facets): the names
-- the old workers gave the mention notifications of a post
-- (uri#notification/mention/<did>), one for each DID they could have
-- found: a user whose handle the text names as @handle (how they found
-- mentions), or a mention facet's DID. Set-returning, so that the planner
-- inlines it. Can't fail.
CREATE OR REPLACE FUNCTION sluice_post_mention_names(post_uri text, post_text text, post_facets jsonb)
RETURNS SETOF text LANGUAGE sql STABLE AS $$
    SELECT post_uri || '#notification/mention/' || d FROM (
        SELECT u.did::text AS d FROM users u
         WHERE u.handle IN (SELECT m[1] FROM regexp_matches(post_text, '@([a-zA-Z0-9.-]+)', 'g') m)
        UNION
        SELECT f #>> '{}' FROM jsonb_path_query(post_facets,
            '$[*].features[*] ? (@."$type" == "app.bsky.richtext.facet#mention").did', '{}', true) f) x
$$;

-- sluice_apply_posts(renewed): the staged post ops (renewed: see
-- sluice_record_state_advance()).
CREATE OR REPLACE FUNCTION sluice_apply_posts(renewed text[]) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    gone_posts text[];
    gone_names text[];
BEGIN
    -- Retract what a replaced or deleted post produced ...
    -- (by the array of their URIs: a join with sluice_stage would be
    -- planned on the temp table's unknown size, as a scan of each table)
    -- The notifications go under every name they may have (read before
    -- the posts go: the old workers' mentions are found from the post).
    SELECT array_agg(uri) INTO gone_posts FROM sluice_stage
     WHERE collection = 'app.bsky.feed.post' AND sluice_op_retracts(kind, uri, renewed);
    IF gone_posts IS NOT NULL THEN
        SELECT array_agg(name) INTO gone_names FROM (
            SELECT unnest(sluice_notification_names(u)) AS name FROM unnest(gone_posts) u
            UNION ALL
            SELECT m.name FROM posts p, sluice_post_mention_names(p.uri, p.text, p.facets) m(name)
             WHERE p.uri = ANY (gone_posts)) x;
        WITH gone AS (
            DELETE FROM posts x WHERE x.uri = ANY (gone_posts) RETURNING x.parent_uri),
        q AS (
            DELETE FROM quotes x WHERE x.post_uri = ANY (gone_posts) RETURNING x.quoted_uri),
        f AS (DELETE FROM feed_items x WHERE x.uri = ANY (gone_posts)),
        n AS (DELETE FROM notifications x WHERE x.uri = ANY (gone_names)),
        t AS (DELETE FROM thread_contexts x WHERE x.post_uri = ANY (gone_posts))
        INSERT INTO sluice_delta (uri, replies, quotes)
        SELECT parent_uri, -1, 0 FROM gone WHERE parent_uri IS NOT NULL
        UNION ALL
        SELECT quoted_uri, 0, -1 FROM q;
    END IF;

    -- ... and write the new one.
    WITH src AS (
        SELECT s.uri, s.did, s.cid, s.record, s.created_at,
               s.commit_time, s.commit_seq, s.commit_rev,
               s.record->'reply'->'parent'->>'uri' AS parent_uri,
               s.record->'reply'->'root'->>'uri' AS root_uri,
               q.quoted_uri, q.quoted_cid
          FROM sluice_stage s
          LEFT JOIN LATERAL (
              SELECT CASE s.record->'embed'->>'$type'
                       WHEN 'app.bsky.embed.record' THEN s.record->'embed'->'record'
                       WHEN 'app.bsky.embed.recordWithMedia' THEN s.record->'embed'->'record'->'record'
                     END AS ref) e ON true
          LEFT JOIN LATERAL (
              SELECT e.ref->>'uri' AS quoted_uri, e.ref->>'cid' AS quoted_cid
               WHERE split_part(e.ref->>'uri', '/', 4) = 'app.bsky.feed.post') q ON true
         WHERE s.collection = 'app.bsky.feed.post' AND s.kind IN ('create', 'update')),
    ins AS (
        INSERT INTO posts (uri, cid, author_did, text, langs, parent_uri, parent_cid,
                           root_uri, root_cid, embed, facets, tags,
                           has_thread_gate, has_post_gate, created_at,
                           commit_time, commit_seq, commit_rev)
        SELECT uri, cid, did, record->>'text', record->'langs', parent_uri,
               record->'reply'->'parent'->>'cid', root_uri, record->'reply'->'root'->>'cid',
               record->'embed', record->'facets',
               CASE WHEN jsonb_typeof(record->'tags') = 'array' THEN record->'tags' ELSE '[]' END,
               EXISTS (SELECT 1 FROM thread_gates g WHERE g.post_uri = src.uri),
               EXISTS (SELECT 1 FROM post_gates g WHERE g.post_uri = src.uri),
               created_at, commit_time, commit_seq, commit_rev
          FROM src ORDER BY uri
        ON CONFLICT (uri) DO NOTHING
        RETURNING uri, parent_uri, root_uri),
    f AS (
        INSERT INTO feed_items (uri, post_uri, originator_did, type, sort_at, cid, created_at)
        SELECT uri, uri, did, 'post', created_at, cid, created_at FROM src ORDER BY uri
        ON CONFLICT (uri) DO NOTHING),
    q AS (
        INSERT INTO quotes (uri, cid, post_uri, quoted_uri, quoted_cid, created_at)
        SELECT uri, cid, uri, quoted_uri, quoted_cid, created_at FROM src
         WHERE quoted_uri IS NOT NULL ORDER BY uri
        ON CONFLICT DO NOTHING
        RETURNING quoted_uri),
    n AS (
        INSERT INTO notifications (uri, recipient_did, author_did, reason, reason_subject, cid, created_at)
        SELECT DISTINCT ON (c.uri) c.uri, c.recipient, c.did, c.reason, c.subject, c.cid, c.created_at
          FROM (
            SELECT uri, did, cid, created_at, 1 AS prio, 0::bigint AS ord,
                   split_part(parent_uri, '/', 3) AS recipient, 'reply' AS reason,
                   parent_uri AS subject
              FROM src WHERE parent_uri IS NOT NULL
            UNION ALL
            SELECT uri, did, cid, created_at, 2, 0,
                   split_part(quoted_uri, '/', 3), 'quote', quoted_uri
              FROM src WHERE quoted_uri IS NOT NULL
            UNION ALL
            SELECT src.uri, src.did, src.cid, src.created_at, 3, m.ord,
                   m.v #>> '{}', 'mention', NULL
              FROM src, LATERAL jsonb_path_query(src.record->'facets',
                  '$[*].features[*] ? (@."$type" == "app.bsky.richtext.facet#mention").did',
                  '{}', true) WITH ORDINALITY AS m(v, ord)
             WHERE src.record ? 'facets') c
         WHERE c.recipient <> c.did AND c.recipient LIKE 'did:%'
           -- a post already there (an old worker's, applied again) has its
           -- notification, under whichever name its writer gave it
           AND c.uri IN (SELECT uri FROM ins)
         ORDER BY c.uri, c.prio, c.ord
        ON CONFLICT (uri) DO NOTHING),
    t AS (
        INSERT INTO thread_contexts AS x (post_uri, root_author_like_uri)
        SELECT i.uri, l.uri FROM ins i
          JOIN likes l ON l.post_uri = i.uri AND l.user_did = split_part(i.root_uri, '/', 3)
         WHERE i.parent_uri IS NOT NULL
         ORDER BY i.uri
        ON CONFLICT (post_uri) DO UPDATE
           SET root_author_like_uri = excluded.root_author_like_uri,
               updated_at = now() AT TIME ZONE 'UTC')
    INSERT INTO sluice_delta (uri, replies, quotes)
    SELECT parent_uri, 1, 0 FROM ins WHERE parent_uri IS NOT NULL
    UNION ALL
    SELECT quoted_uri, 0, 1 FROM q;
END
$fn$;
