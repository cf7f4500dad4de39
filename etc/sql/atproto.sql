-- atproto.sql: the schema of the AT Protocol sink (sink = atproto) and the
-- function that applies one staged batch. `sluiced --init-schema` runs this
-- file in one transaction under an advisory lock. Every statement is
-- idempotent and safe on a database the appview created: tables are
-- created only when missing, an appview table's index only when the table
-- has no index of the same columns under any name (sluice_create_index()),
-- appview tables are never dropped or altered, and only the columns listed
-- in the design are written (extra columns keep their defaults).
--
-- Conventions: timestamps are `timestamp` without time zone holding UTC;
-- avatar_url / banner_url hold the blob's CID alone (the appview builds its
-- CDN address from the DID and the CID); no foreign keys.
--
-- Ordering state. Every record URI has one row in sluice_record_state
-- carrying the ordering key (ord_ms, ord_seq, op_idx) of the last operation
-- applied to it -- the stream entry ID and the op's index in the entry --
-- and whether that operation was a delete (the row stays as a tombstone).
-- An operation is applied only if its key is larger than the stored one
-- (INSERT ... ON CONFLICT DO UPDATE ... WHERE excluded.key > stored.key),
-- so a late create older than a delete, a replayed entry or an older update
-- changes nothing.
--
-- Applying a winning operation retracts what the URI had produced (rows,
-- feed item, quote, notification, viewer state; counters -1 for rows really
-- removed) and, for a create/update, asserts the new effects (counters +1
-- for rows really inserted). So the final contents are a function of the
-- set of live records, not of the order or batching of the events:
--   * likes, reposts, follows, blocks and list items have a second unique
--     key (a user may like a post twice under two rkeys). The state row of
--     those records keeps the pair and the record; among the live records
--     of one pair the smallest URI owns the row. Deleting the owner hands
--     the row to the next live duplicate; deleting a duplicate that does not
--     own the row changes no counter.
--   * post_aggregations has a row for every post URI any event referenced
--     (the post itself, a reply parent, a quoted post, a like/repost
--     subject), kept after the post's delete; its counts always equal the
--     live rows pointing at the post.
--   * notifications: one per record URI (the column is unique): for a post
--     the first of reply (to the parent's author), quote (to the quoted
--     post's author), mention (first mentioned DID in facet order) whose
--     recipient is not the author; likes, reposts and follows notify the
--     subject's author. Recipients come from the URIs/DIDs themselves, so no
--     notification depends on what was applied before.
--   * thread_contexts has a row while a reply and a like of it by the root
--     post's author are both live; post_viewer_states has a row while the
--     viewer's like or repost of the post is live (or another flag is set).
--   * handle: the newest identity event with a handle wins
--     (sluice_identity_state); account status: the newest account event.
-- Counter deltas are appended per batch and folded into the counter rows
-- by one session at a time (sluice_fold_counters()).
--
-- One lock order. A batch's first statement takes a transaction-scoped
-- advisory lock on each of its keys, in ascending order of the keys'
-- 64-bit hashes (sluice_lock_batch_keys()). The keys stand for the rows
-- that two different records (or events) can both write:
--   * 'pair ' || the pair of a like, repost, follow, block or list item:
--     the pair table's row, its owner's notification and feed item, and
--     (a like and a repost of one post by one user have the same pair)
--     the viewer state; an update or a delete also takes the pair its
--     current row or state holds;
--   * 'post ' || a post URI: the post's rows, for the post's own ops, its
--     gates (has_thread_gate / has_post_gate) and a like of it that may
--     make a thread context (its subject is not in posts yet, or is a
--     reply whose root belongs to the liker); a reply written over a post
--     already there takes the pair of its root author's like of it;
--   * 'did ' || a DID whose users row an event writes (profile, identity,
--     account) or inserts (the subject of a follow, block or list item
--     that has no users row yet);
--   * 'uri ' || a feed generator or labeler, whose like count
--     sluice_fold_counters() recounts (it takes the same keys).
-- Two batches that would both write such a row share a key, and the later
-- one waits for the earlier one to commit before its first statement ends.
-- Rows only one record writes (its state row, its own rows) need no key:
-- the state upsert, one statement in URI order and the first after the
-- keys (but for users rows and the identity and account state, which
-- have keys), is where two batches with ops on one URI wait for each
-- other. So no batch past its keys waits for a key, waits for keys are in
-- one global order, and batches don't deadlock. The wait is also the
-- serialization that effects joining two records need (a reply and the
-- root author's like of it; a post and its gates; a pair's owner deleted
-- while a duplicate is created): the later batch's statements see the
-- earlier one's rows. An update or a delete reads the pair it retracts
-- before its keys are locked; when a batch in flight was writing that URI
-- at the moment (two ops on one URI in two batches at once), the pair is
-- known only once the state upsert has waited for that batch; its key is
-- then taken only if it is free (no wait out of the order), or else the
-- batch fails with a serialization failure and the worker retries it.

-- ---- the appview's tables ---------------------------------------------

-- sluice_create_index(name, tab, cols, method): create the index `name` on
-- the table tab (key columns cols, in that order; access method method)
-- unless the table already has an index that does the same work under
-- any name: the same key columns in the same order, the same access
-- method, no expression and no predicate (unique or not). On a database
-- the appview created, its own indexes are named differently
-- (idx_feed_items_post, not idx_feed_items_post_uri), and a second copy
-- would cost every write to the table. An index of that name already
-- there is kept as it is. Returns whether it created the index; a skipped
-- one is reported as a NOTICE naming the index that covers it.
CREATE OR REPLACE FUNCTION sluice_create_index(name text, tab regclass, cols text[],
                                               method text DEFAULT 'btree')
RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
    same text;
BEGIN
    SELECT c.relname INTO same
      FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_am am ON am.oid = c.relam
     WHERE i.indrelid = tab AND am.amname = method
       AND i.indexprs IS NULL AND i.indpred IS NULL
       AND i.indnkeyatts = cardinality(cols)
       AND ARRAY(SELECT a.attname::text
                   FROM generate_subscripts(i.indkey::int2[], 1) k
                   JOIN pg_attribute a ON a.attrelid = tab AND a.attnum = i.indkey[k]
                  WHERE k < i.indnkeyatts
                  ORDER BY k) = cols
     ORDER BY c.relname = name DESC, c.relname
     LIMIT 1;
    IF same IS NOT NULL THEN
        IF same <> name THEN
            RAISE NOTICE 'index % not created: % on % has the same columns (%)',
                name, same, tab, array_to_string(cols, ', ');
        END IF;
        RETURN false;
    END IF;
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s USING %s (%s)', name, tab, method,
                   (SELECT string_agg(quote_ident(c), ', ') FROM unnest(cols) c));
    RETURN true;
END
$fn$;

CREATE TABLE IF NOT EXISTS users (
    did varchar(255) PRIMARY KEY,
    handle varchar(255) NOT NULL,
    display_name varchar(255),
    avatar_url text,
    banner_url text,
    description text,
    profile_record jsonb,
    pinned_post jsonb,
    search_vector tsvector,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    indexed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
SELECT sluice_create_index('idx_users_handle', 'users', '{handle}');
SELECT sluice_create_index('idx_users_created_at', 'users', '{created_at}');
SELECT sluice_create_index('idx_users_search_vector', 'users', '{search_vector}', 'gin');

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

CREATE TABLE IF NOT EXISTS post_aggregations (
    post_uri varchar(512) PRIMARY KEY,
    like_count integer NOT NULL DEFAULT 0,
    repost_count integer NOT NULL DEFAULT 0,
    reply_count integer NOT NULL DEFAULT 0,
    bookmark_count integer NOT NULL DEFAULT 0,
    quote_count integer NOT NULL DEFAULT 0,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
SELECT sluice_create_index('idx_post_aggregations_like_count', 'post_aggregations', '{like_count}');
SELECT sluice_create_index('idx_post_aggregations_repost_count', 'post_aggregations', '{repost_count}');
SELECT sluice_create_index('idx_post_aggregations_reply_count', 'post_aggregations', '{reply_count}');
SELECT sluice_create_index('idx_post_aggregations_bookmark_count', 'post_aggregations', '{bookmark_count}');
SELECT sluice_create_index('idx_post_aggregations_quote_count', 'post_aggregations', '{quote_count}');

CREATE TABLE IF NOT EXISTS feed_items (
    uri varchar(512) PRIMARY KEY,
    post_uri varchar(512) NOT NULL,
    originator_did varchar(255) NOT NULL,
    type varchar(32) NOT NULL,
    sort_at timestamp NOT NULL,
    cid varchar(255) NOT NULL,
    created_at timestamp NOT NULL,
    indexed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
SELECT sluice_create_index('idx_feed_items_originator_did', 'feed_items', '{originator_did}');
SELECT sluice_create_index('idx_feed_items_post_uri', 'feed_items', '{post_uri}');
SELECT sluice_create_index('idx_feed_items_sort_at', 'feed_items', '{sort_at}');
SELECT sluice_create_index('idx_feed_items_type', 'feed_items', '{type}');
SELECT sluice_create_index('idx_feed_items_originator_sort', 'feed_items', '{originator_did,sort_at}');

CREATE TABLE IF NOT EXISTS likes (
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
    CONSTRAINT likes_user_did_post_uri_key UNIQUE (user_did, post_uri)
);
SELECT sluice_create_index('idx_likes_user_did', 'likes', '{user_did}');
SELECT sluice_create_index('idx_likes_post_uri', 'likes', '{post_uri}');

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

CREATE TABLE IF NOT EXISTS blocks (
    uri varchar(512) PRIMARY KEY,
    blocker_did varchar(255) NOT NULL,
    blocked_did varchar(255) NOT NULL,
    created_at timestamp NOT NULL,
    indexed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    commit_time timestamp,
    commit_seq varchar(32),
    commit_rev varchar(64),
    CONSTRAINT blocks_blocker_did_blocked_did_key UNIQUE (blocker_did, blocked_did)
);
SELECT sluice_create_index('idx_blocks_blocker_did', 'blocks', '{blocker_did}');
SELECT sluice_create_index('idx_blocks_blocked_did', 'blocks', '{blocked_did}');

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

CREATE TABLE IF NOT EXISTS notifications (
    id serial PRIMARY KEY,
    uri varchar(512) NOT NULL,
    recipient_did varchar(255) NOT NULL,
    author_did varchar(255) NOT NULL,
    reason varchar(64) NOT NULL,
    reason_subject varchar(512),
    cid varchar(255),
    is_read boolean NOT NULL DEFAULT false,
    created_at timestamp NOT NULL,
    indexed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    CONSTRAINT notifications_uri_key UNIQUE (uri)
);
SELECT sluice_create_index('idx_notifications_recipient_did', 'notifications', '{recipient_did}');
SELECT sluice_create_index('idx_notifications_recipient_read', 'notifications', '{recipient_did,is_read}');
SELECT sluice_create_index('idx_notifications_created_at', 'notifications', '{created_at}');
SELECT sluice_create_index('idx_notifications_indexed_at', 'notifications', '{indexed_at}');

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

CREATE TABLE IF NOT EXISTS list_items (
    uri varchar(512) PRIMARY KEY,
    cid varchar(255) NOT NULL,
    list_uri varchar(512) NOT NULL,
    subject_did varchar(255) NOT NULL,
    created_at timestamp NOT NULL,
    indexed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    CONSTRAINT list_items_list_uri_subject_did_key UNIQUE (list_uri, subject_did)
);
SELECT sluice_create_index('idx_list_items_list_uri', 'list_items', '{list_uri}');
SELECT sluice_create_index('idx_list_items_subject_did', 'list_items', '{subject_did}');

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

CREATE TABLE IF NOT EXISTS post_gates (
    post_uri varchar(512) PRIMARY KEY,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    embedding_rules jsonb NOT NULL DEFAULT '{}'
);
SELECT sluice_create_index('idx_post_gates_created_at', 'post_gates', '{created_at}');

CREATE TABLE IF NOT EXISTS post_viewer_states (
    post_uri varchar(512) NOT NULL,
    viewer_did varchar(255) NOT NULL,
    like_uri varchar(512),
    repost_uri varchar(512),
    bookmarked boolean NOT NULL DEFAULT false,
    thread_muted boolean NOT NULL DEFAULT false,
    reply_disabled boolean NOT NULL DEFAULT false,
    embedding_disabled boolean NOT NULL DEFAULT false,
    pinned boolean NOT NULL DEFAULT false,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    CONSTRAINT post_viewer_states_post_uri_viewer_did_key UNIQUE (post_uri, viewer_did)
);
SELECT sluice_create_index('idx_post_viewer_states_post_uri', 'post_viewer_states', '{post_uri}');
SELECT sluice_create_index('idx_post_viewer_states_viewer_did', 'post_viewer_states', '{viewer_did}');

CREATE TABLE IF NOT EXISTS thread_contexts (
    post_uri varchar(512) PRIMARY KEY,
    root_author_like_uri varchar(512),
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
SELECT sluice_create_index('idx_thread_contexts_root_author_like_uri', 'thread_contexts', '{root_author_like_uri}');

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

-- ---- sluice's own tables ------------------------------------------------

-- The staging contract (see the sink): each session works in its own
-- `CREATE TEMP TABLE sluice_stage (LIKE sluice_stage_template INCLUDING
-- DEFAULTS) ON COMMIT DELETE ROWS` (without ON COMMIT DELETE ROWS it
-- works too, but keeps the dead rows of every batch until the session
-- ends); this table itself stays empty.
CREATE TABLE IF NOT EXISTS sluice_stage_template (
    ord_ms bigint NOT NULL,
    ord_seq bigint NOT NULL,
    op_idx int NOT NULL,
    kind text NOT NULL,
    did text NOT NULL,
    collection text,
    rkey text,
    uri text,
    cid text,
    record jsonb,
    created_at timestamp,
    handle text,
    active boolean,
    status text,
    commit_seq text,
    commit_rev text,
    commit_time timestamp
);

-- One row per record URI ever seen: the ordering key of the last applied
-- operation, tombstones included. `pair` and `record` are kept only for
-- the collections with a second unique key (likes, reposts, follows,
-- blocks, list items): the pair is the text of that key, and the record
-- lets a duplicate take over the row when its owner is deleted.
CREATE TABLE IF NOT EXISTS sluice_record_state (
    uri text PRIMARY KEY,
    collection text NOT NULL,
    did text NOT NULL,
    ord_ms bigint NOT NULL,
    ord_seq bigint NOT NULL,
    op_idx int NOT NULL,
    deleted boolean NOT NULL,
    cid text,
    pair text,
    record jsonb,
    created_at timestamp,
    commit_time timestamp,
    commit_seq text,
    commit_rev text
);
CREATE INDEX IF NOT EXISTS sluice_record_state_pair ON sluice_record_state (collection, pair, uri)
    WHERE pair IS NOT NULL;

-- The newest identity event carrying a handle, per DID.
CREATE TABLE IF NOT EXISTS sluice_identity_state (
    did text PRIMARY KEY,
    ord_ms bigint NOT NULL,
    ord_seq bigint NOT NULL,
    handle text NOT NULL
);

-- The newest account event per DID: active flag and status.
CREATE TABLE IF NOT EXISTS sluice_account_status (
    did text PRIMARY KEY,
    active boolean NOT NULL,
    status text,
    ord_ms bigint NOT NULL,
    ord_seq bigint NOT NULL,
    updated_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

-- Counter deltas committed by batches and not folded yet: one row per
-- counted URI per batch (a post's likes, reposts, replies and quotes; the
-- likes of a feed generator or a labeler), a row of zeros for a post that
-- was only referenced (so that it gets its post_aggregations row). Batches
-- only append here, which takes no lock another worker waits for: the
-- counter rows of hot posts are written by sluice_fold_counters() alone.
-- No index: it is read whole and emptied by the fold.
CREATE TABLE IF NOT EXISTS sluice_counter_delta (
    uri text NOT NULL,
    likes int NOT NULL DEFAULT 0,
    reposts int NOT NULL DEFAULT 0,
    replies int NOT NULL DEFAULT 0,
    quotes int NOT NULL DEFAULT 0
);

-- ---- helpers ------------------------------------------------------------

-- The CID of a blob in canonical form ({"ref": {"$link": cid}}); NULL if
-- absent. Can't fail.
CREATE OR REPLACE FUNCTION sluice_blob_cid(blob jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(blob->'ref'->>'$link', blob->>'cid')
$$;

-- The pair key of a record with a second unique key, NULL for the others.
CREATE OR REPLACE FUNCTION sluice_pair_key(collection text, did text, record jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN record IS NULL THEN NULL
        WHEN collection IN ('app.bsky.feed.like', 'app.bsky.feed.repost')
            THEN did || ' ' || (record->'subject'->>'uri')
        WHEN collection IN ('app.bsky.graph.follow', 'app.bsky.graph.block')
            THEN did || ' ' || (record->>'subject')
        WHEN collection = 'app.bsky.graph.listitem'
            THEN (record->>'list') || ' ' || (record->>'subject')
    END
$$;

-- The post a threadgate or postgate URI belongs to (same repo and rkey).
CREATE OR REPLACE FUNCTION sluice_gate_post(uri text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'at://' || split_part(uri, '/', 3) || '/app.bsky.feed.post/' || split_part(uri, '/', 5)
$$;

-- ---- the batch applier --------------------------------------------------

-- Whether a staged op retracts what its URI had produced: an update or a
-- delete always, a create only when the URI had a state row before the
-- batch (renewed: see sluice_apply_stage()). A create of a new URI is
-- fresh and retracts nothing. Inlined by the planner; can't fail.
CREATE OR REPLACE FUNCTION sluice_op_retracts(kind text, uri text, renewed text[])
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT kind <> 'create' OR uri = ANY (renewed)
$$;

-- Whether a like by liker of subject may give the subject a thread
-- context, as far as the committed posts tell: the subject is not in
-- posts yet, or is a reply whose root belongs to the liker. Can't fail.
CREATE OR REPLACE FUNCTION sluice_like_may_give_context(liker text, subject text)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (SELECT 1 FROM posts p WHERE p.uri = subject
                         AND (p.parent_uri IS NULL OR split_part(p.root_uri, '/', 3) <> liker))
$$;

-- sluice_current_pairs(): the pair each staged update or delete of a
-- like, repost, follow, block or list item finds in its table (the row
-- the URI owns now), as the text sluice_pair_key() gives.
CREATE OR REPLACE FUNCTION sluice_current_pairs()
RETURNS TABLE (uri text, collection text, pair text) LANGUAGE plpgsql AS $fn$
BEGIN
    RETURN QUERY
    SELECT s.uri, s.collection, CASE s.collection
             WHEN 'app.bsky.feed.like' THEN
               (SELECT x.user_did || ' ' || x.post_uri FROM likes x WHERE x.uri = s.uri)
             WHEN 'app.bsky.feed.repost' THEN
               (SELECT x.user_did || ' ' || x.post_uri FROM reposts x WHERE x.uri = s.uri)
             WHEN 'app.bsky.graph.follow' THEN
               (SELECT x.follower_did || ' ' || x.following_did FROM follows x WHERE x.uri = s.uri)
             WHEN 'app.bsky.graph.block' THEN
               (SELECT x.blocker_did || ' ' || x.blocked_did FROM blocks x WHERE x.uri = s.uri)
             WHEN 'app.bsky.graph.listitem' THEN
               (SELECT x.list_uri || ' ' || x.subject_did FROM list_items x WHERE x.uri = s.uri)
           END::text
      FROM sluice_stage s
     WHERE s.kind IN ('update', 'delete')
       AND s.collection IN ('app.bsky.feed.like', 'app.bsky.feed.repost',
                            'app.bsky.graph.follow', 'app.bsky.graph.block',
                            'app.bsky.graph.listitem');
END
$fn$;

-- sluice_lock_keys(keys): take the transaction-scoped advisory lock of
-- each key (see "One lock order"), in ascending order of their 64-bit
-- hashes, waiting for the sessions that hold them; a key already held is
-- taken again at once. NULLs are skipped. Returns the number of keys.
CREATE OR REPLACE FUNCTION sluice_lock_keys(keys text[]) RETURNS bigint
LANGUAGE sql AS $$
    SELECT count(*) FROM (SELECT pg_advisory_xact_lock(k) FROM (
        SELECT DISTINCT hashtextextended(key, 0) AS k FROM unnest(keys) key
         WHERE key IS NOT NULL ORDER BY 1 OFFSET 0) sorted) locked
$$;

-- sluice_lock_batch_keys(): take the advisory lock of every key of the
-- staged batch (see "One lock order" above), in ascending order of the
-- keys' hashes, waiting for the sessions that hold them. Called first in a
-- batch's transaction; the locks last until its end. Returns the number
-- of keys. Takes one lock per key in PostgreSQL's shared lock table: with
-- batches of 500 about 700 in a real mix, at most twice the batch size.
CREATE OR REPLACE FUNCTION sluice_lock_batch_keys() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    keys bigint;
BEGIN
    WITH ops AS (
        -- each record op with the pair it writes and, for an update or a
        -- delete, the pair its current row (or state) holds
        -- (the state as a subquery: one index lookup per update or
        -- delete, where a join was planned as a scan of the whole table)
        SELECT s.kind, s.did, s.collection, s.uri, s.record,
               sluice_pair_key(s.collection, s.did, s.record) AS pair,
               coalesce((SELECT r.pair FROM sluice_record_state r
                          WHERE s.kind <> 'create' AND r.uri = s.uri), c.pair) AS old_pair
          FROM sluice_stage s
          LEFT JOIN sluice_current_pairs() c ON c.uri = s.uri
         WHERE s.kind IN ('create', 'update', 'delete')
           AND s.collection IN ('app.bsky.feed.like', 'app.bsky.feed.repost',
                                'app.bsky.graph.follow', 'app.bsky.graph.block',
                                'app.bsky.graph.listitem')),
    liked AS (
        SELECT o.did, substr(p, length(o.did) + 2) AS subject
          FROM ops o, unnest(ARRAY[o.pair, o.old_pair]) p
         WHERE o.collection = 'app.bsky.feed.like' AND p IS NOT NULL)
    SELECT sluice_lock_keys(array_agg(key)) INTO keys FROM (
            -- the pairs (a like and a repost of one post by one user share
            -- theirs: both write the user's viewer state of the post)
            SELECT 'pair ' || p AS key FROM ops, unnest(ARRAY[pair, old_pair]) p
            UNION ALL
            -- a post's rows, written by the post, its gates and likes
            SELECT 'post ' || uri FROM sluice_stage WHERE collection = 'app.bsky.feed.post'
            UNION ALL
            SELECT 'post ' || sluice_gate_post(uri) FROM sluice_stage
             WHERE collection IN ('app.bsky.feed.threadgate', 'app.bsky.feed.postgate')
            UNION ALL
            -- a like that may give its subject a thread context: the
            -- subject is not in posts yet, or is a reply to the liker
            SELECT 'post ' || l.subject FROM liked l
             WHERE sluice_like_may_give_context(l.did, l.subject)
            UNION ALL
            -- a reply written over a post already there: the root
            -- author's like of it may now give it a thread context
            SELECT 'pair ' || split_part(s.record->'reply'->'root'->>'uri', '/', 3) || ' ' || s.uri
              FROM sluice_stage s
             WHERE s.collection = 'app.bsky.feed.post' AND s.record ? 'reply'
               AND EXISTS (SELECT 1 FROM posts p WHERE p.uri = s.uri)
            UNION ALL
            -- a users row, written by the profile, identity and account,
            -- and inserted for the subject of a follow, block or list item
            SELECT 'did ' || did FROM sluice_stage
             WHERE kind IN ('identity', 'account') OR collection = 'app.bsky.actor.profile'
            UNION ALL
            SELECT 'did ' || (s.record->>'subject') FROM sluice_stage s
             WHERE s.collection IN ('app.bsky.graph.follow', 'app.bsky.graph.block',
                                    'app.bsky.graph.listitem')
               AND s.kind IN ('create', 'update') AND s.record->>'subject' LIKE 'did:%'
               AND NOT EXISTS (SELECT 1 FROM users u WHERE u.did = s.record->>'subject')
            UNION ALL
            -- the rows sluice_fold_counters() recounts
            SELECT 'uri ' || uri FROM sluice_stage
             WHERE collection IN ('app.bsky.feed.generator', 'app.bsky.labeler.service')
        ) batch_keys;
    RETURN keys;
END
$fn$;

-- sluice_apply_stage(): apply every row of the session's temp table
-- sluice_stage (see the staging contract) set-based, then empty it. Runs
-- inside the caller's transaction; an error aborts the whole batch (the
-- worker retries it). Returns the number of staged rows.
CREATE OR REPLACE FUNCTION sluice_apply_stage() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    staged bigint;
    dup record;
    staged_gone bigint;
    gone_posts text[];
    renewed text[];
    taken boolean;
BEGIN
    IF to_regclass('pg_temp.sluice_delta') IS NULL THEN
        CREATE TEMP TABLE sluice_delta (
            uri text NOT NULL,
            likes int NOT NULL DEFAULT 0,
            reposts int NOT NULL DEFAULT 0,
            replies int NOT NULL DEFAULT 0,
            quotes int NOT NULL DEFAULT 0
        ) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE sluice_pairs (
            collection text NOT NULL,
            a text NOT NULL,
            b text NOT NULL,
            want text,
            full_check boolean NOT NULL,
            held text,
            recheck boolean NOT NULL DEFAULT false
        ) ON COMMIT DELETE ROWS;
    END IF;
    SELECT count(*) INTO staged FROM sluice_stage;
    PERFORM sluice_lock_batch_keys();

    -- Every event ensures its actor, and a follow, a block or a list item
    -- its subject (the appview joins them on users). The sink inserts the
    -- actors' rows in a short transaction of its own first; the NOT
    -- EXISTS skips the rows already there, as the ON CONFLICT check would
    -- wait for any session that is updating one of them (a profile, a
    -- handle) to commit. A subject with no row has its key (see "One lock
    -- order").
    INSERT INTO users (did, handle)
    SELECT DISTINCT d, 'handle.invalid' FROM (
        SELECT did AS d FROM sluice_stage
        UNION ALL
        SELECT record->>'subject' FROM sluice_stage
         WHERE collection IN ('app.bsky.graph.follow', 'app.bsky.graph.block',
                              'app.bsky.graph.listitem')
           AND kind IN ('create', 'update') AND record->>'subject' LIKE 'did:%') x
     WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.did = x.d)
     ORDER BY 1
    ON CONFLICT (did) DO NOTHING;

    -- Every post URI any staged op refers to gets an aggregation row,
    -- whether or not the op wins (so the rows don't depend on order).
    INSERT INTO sluice_delta (uri)
    SELECT DISTINCT u FROM (
        SELECT uri AS u FROM sluice_stage WHERE collection = 'app.bsky.feed.post'
        UNION ALL
        SELECT record->'reply'->'parent'->>'uri' FROM sluice_stage
         WHERE collection = 'app.bsky.feed.post' AND record ? 'reply'
        UNION ALL
        SELECT CASE record->'embed'->>'$type'
                 WHEN 'app.bsky.embed.record' THEN record->'embed'->'record'->>'uri'
                 WHEN 'app.bsky.embed.recordWithMedia' THEN record->'embed'->'record'->'record'->>'uri'
               END
          FROM sluice_stage WHERE collection = 'app.bsky.feed.post' AND record ? 'embed'
        UNION ALL
        SELECT record->'subject'->>'uri' FROM sluice_stage
         WHERE collection IN ('app.bsky.feed.like', 'app.bsky.feed.repost') AND record IS NOT NULL
    ) x WHERE split_part(u, '/', 4) = 'app.bsky.feed.post';

    -- Identity: the newest event with a handle sets users.handle.
    WITH up AS (
        INSERT INTO sluice_identity_state (did, ord_ms, ord_seq, handle)
        SELECT DISTINCT ON (did) did, ord_ms, ord_seq, left(handle, 255)
          FROM sluice_stage WHERE kind = 'identity' AND handle IS NOT NULL
         ORDER BY did, ord_ms DESC, ord_seq DESC, op_idx DESC
        ON CONFLICT (did) DO UPDATE
           SET ord_ms = excluded.ord_ms, ord_seq = excluded.ord_seq, handle = excluded.handle
         WHERE (excluded.ord_ms, excluded.ord_seq)
             > (sluice_identity_state.ord_ms, sluice_identity_state.ord_seq)
        RETURNING did, handle)
    UPDATE users u SET handle = up.handle FROM up WHERE u.did = up.did;

    -- Account: the newest event per DID.
    INSERT INTO sluice_account_status (did, active, status, ord_ms, ord_seq)
    SELECT DISTINCT ON (did) did, coalesce(active, false), status, ord_ms, ord_seq
      FROM sluice_stage WHERE kind = 'account'
     ORDER BY did, ord_ms DESC, ord_seq DESC, op_idx DESC
    ON CONFLICT (did) DO UPDATE
       SET active = excluded.active, status = excluded.status,
           ord_ms = excluded.ord_ms, ord_seq = excluded.ord_seq,
           updated_at = now() AT TIME ZONE 'UTC'
     WHERE (excluded.ord_ms, excluded.ord_seq)
         > (sluice_account_status.ord_ms, sluice_account_status.ord_seq);

    -- Record ops: keep only the last op per URI within the batch ...
    DELETE FROM sluice_stage s USING sluice_stage t
     WHERE s.kind IN ('create', 'update', 'delete')
       AND t.kind IN ('create', 'update', 'delete')
       AND t.uri = s.uri
       AND (t.ord_ms, t.ord_seq, t.op_idx, t.ctid) > (s.ord_ms, s.ord_seq, s.op_idx, s.ctid);

    -- ... and only those newer than the stored state. A create whose URI
    -- had no state before is fresh: the appview's rows for it, if any, are
    -- the same record written by someone else (an old worker), so there is
    -- nothing to retract. A delete or an update is never fresh: it
    -- retracts whatever the appview's tables hold for the URI, whoever
    -- wrote it. `renewed` lists the URIs whose state row was there before
    -- (few: updates, deletes, creates after a delete), so a staged op is
    -- fresh when it is a create whose URI is not in it. (An array, not a
    -- column of the stage set by an UPDATE: that rewrote every staged row,
    -- and the join was planned as a nested loop, 500 x 500 rows a batch.)
    WITH up AS (
        INSERT INTO sluice_record_state AS r
               (uri, collection, did, ord_ms, ord_seq, op_idx, deleted, cid,
                pair, record, created_at, commit_time, commit_seq, commit_rev)
        SELECT uri, collection, did, ord_ms, ord_seq, op_idx, kind = 'delete', cid,
               sluice_pair_key(collection, did, record),
               CASE WHEN sluice_pair_key(collection, did, record) IS NOT NULL THEN record END,
               created_at, commit_time, commit_seq, commit_rev
          FROM sluice_stage WHERE kind IN ('create', 'update', 'delete')
         ORDER BY uri
        ON CONFLICT (uri) DO UPDATE
           SET ord_ms = excluded.ord_ms, ord_seq = excluded.ord_seq,
               op_idx = excluded.op_idx, deleted = excluded.deleted,
               cid = excluded.cid, pair = excluded.pair, record = excluded.record,
               created_at = excluded.created_at, commit_time = excluded.commit_time,
               commit_seq = excluded.commit_seq, commit_rev = excluded.commit_rev
         WHERE (excluded.ord_ms, excluded.ord_seq, excluded.op_idx)
             > (r.ord_ms, r.ord_seq, r.op_idx)
        RETURNING r.uri, (r.xmax = 0) AS fresh),
    lost AS (
        DELETE FROM sluice_stage s
         WHERE s.kind IN ('create', 'update', 'delete')
           AND NOT EXISTS (SELECT 1 FROM up WHERE up.uri = s.uri))
    SELECT coalesce(array_agg(uri) FILTER (WHERE NOT fresh), '{}') INTO renewed FROM up;

    -- The pairs the current rows of the updated and deleted URIs hold, and
    -- the posts those likes are of, once more: the first pass read them
    -- before it waited, and a batch that was creating one of these URIs
    -- then has committed since (this batch now holds every state row of
    -- its URIs, so the rows can't change any more). A key held already is
    -- taken again at once; one the first pass missed is taken only if it
    -- is free, as waiting for it here, out of the order, could deadlock:
    -- otherwise the batch fails with a serialization failure and the
    -- worker retries it, its first pass then seeing the pairs.
    WITH c AS (SELECT * FROM sluice_current_pairs())
    SELECT bool_and(pg_try_advisory_xact_lock(hashtextextended(key, 0))) INTO taken FROM (
        SELECT 'pair ' || c.pair AS key FROM c
        UNION ALL
        SELECT 'post ' || split_part(c.pair, ' ', 2) FROM c
         WHERE c.collection = 'app.bsky.feed.like'
           AND sluice_like_may_give_context(split_part(c.pair, ' ', 1), split_part(c.pair, ' ', 2))) k
     WHERE key IS NOT NULL;
    IF NOT coalesce(taken, true) THEN
        RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
            MESSAGE = 'a pair this batch retracts is being written by another batch: retrying';
    END IF;

    -- ---- records with a second unique key: reconcile each touched pair
    -- so that the live record with the smallest URI owns the row.
    -- A pair touched only by creates of new URIs gets the smallest of them
    -- as its candidate owner (the insert below keeps a smaller live owner);
    -- a pair touched by an update or delete is looked up in full.
    INSERT INTO sluice_pairs (collection, a, b, want, full_check)
    SELECT collection, split_part(p, ' ', 1), split_part(p, ' ', 2),
           min(uri) FILTER (WHERE fresh), bool_or(NOT fresh)
      FROM (
        SELECT collection, sluice_pair_key(collection, did, record) AS p, uri,
               NOT sluice_op_retracts(kind, uri, renewed) AS fresh
          FROM sluice_stage WHERE kind IN ('create', 'update')
           AND collection IN ('app.bsky.feed.like', 'app.bsky.feed.repost',
                              'app.bsky.graph.follow', 'app.bsky.graph.block',
                              'app.bsky.graph.listitem')
        UNION ALL
        SELECT s.collection, x.user_did || ' ' || x.post_uri, NULL, false FROM sluice_stage s
          JOIN likes x ON x.uri = s.uri
         WHERE s.collection = 'app.bsky.feed.like' AND sluice_op_retracts(s.kind, s.uri, renewed)
        UNION ALL
        SELECT s.collection, x.user_did || ' ' || x.post_uri, NULL, false FROM sluice_stage s
          JOIN reposts x ON x.uri = s.uri
         WHERE s.collection = 'app.bsky.feed.repost' AND sluice_op_retracts(s.kind, s.uri, renewed)
        UNION ALL
        SELECT s.collection, x.follower_did || ' ' || x.following_did, NULL, false FROM sluice_stage s
          JOIN follows x ON x.uri = s.uri
         WHERE s.collection = 'app.bsky.graph.follow' AND sluice_op_retracts(s.kind, s.uri, renewed)
        UNION ALL
        SELECT s.collection, x.blocker_did || ' ' || x.blocked_did, NULL, false FROM sluice_stage s
          JOIN blocks x ON x.uri = s.uri
         WHERE s.collection = 'app.bsky.graph.block' AND sluice_op_retracts(s.kind, s.uri, renewed)
        UNION ALL
        SELECT s.collection, x.list_uri || ' ' || x.subject_did, NULL, false FROM sluice_stage s
          JOIN list_items x ON x.uri = s.uri
         WHERE s.collection = 'app.bsky.graph.listitem' AND sluice_op_retracts(s.kind, s.uri, renewed)
    ) x WHERE p IS NOT NULL
     GROUP BY 1, 2, 3;

    -- A current row with no state row was written by someone else (an old
    -- worker, before or beside sluice): it is live, and it is a candidate
    -- owner like any live record sluice has seen.
    UPDATE sluice_pairs p SET held = y.uri FROM likes y
     WHERE p.collection = 'app.bsky.feed.like' AND p.full_check
       AND y.user_did = p.a AND y.post_uri = p.b
       AND NOT EXISTS (SELECT 1 FROM sluice_record_state r WHERE r.uri = y.uri);
    UPDATE sluice_pairs p SET held = y.uri FROM reposts y
     WHERE p.collection = 'app.bsky.feed.repost' AND p.full_check
       AND y.user_did = p.a AND y.post_uri = p.b
       AND NOT EXISTS (SELECT 1 FROM sluice_record_state r WHERE r.uri = y.uri);
    UPDATE sluice_pairs p SET held = y.uri FROM follows y
     WHERE p.collection = 'app.bsky.graph.follow' AND p.full_check
       AND y.follower_did = p.a AND y.following_did = p.b
       AND NOT EXISTS (SELECT 1 FROM sluice_record_state r WHERE r.uri = y.uri);
    UPDATE sluice_pairs p SET held = y.uri FROM blocks y
     WHERE p.collection = 'app.bsky.graph.block' AND p.full_check
       AND y.blocker_did = p.a AND y.blocked_did = p.b
       AND NOT EXISTS (SELECT 1 FROM sluice_record_state r WHERE r.uri = y.uri);
    UPDATE sluice_pairs p SET held = y.uri FROM list_items y
     WHERE p.collection = 'app.bsky.graph.listitem' AND p.full_check
       AND y.list_uri = p.a AND y.subject_did = p.b
       AND NOT EXISTS (SELECT 1 FROM sluice_record_state r WHERE r.uri = y.uri);

    UPDATE sluice_pairs p SET
        want = least(p.held,
                     (SELECT min(r.uri) FROM sluice_record_state r
                       WHERE r.collection = p.collection AND r.pair = p.a || ' ' || p.b
                         AND r.pair IS NOT NULL AND NOT r.deleted))
     WHERE p.full_check;

    -- For each such table, in two passes that each take row locks in pair
    -- order: first the rows whose owner is no longer live in its pair go
    -- (deleted, or updated to another subject), then the wanted owner is
    -- written; an existing row is replaced only by a smaller URI (so two
    -- sessions writing one pair at once end with the smaller).

    -- likes
    WITH gone AS (
        DELETE FROM likes x
         WHERE x.uri IN (SELECT y.uri FROM sluice_pairs p
                           JOIN likes y ON y.user_did = p.a AND y.post_uri = p.b
                          WHERE p.collection = 'app.bsky.feed.like'
                            AND p.full_check)
           AND EXISTS (SELECT 1 FROM sluice_record_state s WHERE s.uri = x.uri
                      AND (s.deleted OR s.pair IS DISTINCT FROM x.user_did || ' ' || x.post_uri))
        RETURNING x.uri, x.user_did, x.post_uri),
    n AS (DELETE FROM notifications x USING gone WHERE x.uri = gone.uri),
    t AS (DELETE FROM thread_contexts x USING gone WHERE x.root_author_like_uri = gone.uri),
    v AS (UPDATE post_viewer_states x SET like_uri = NULL FROM gone
           WHERE x.post_uri = gone.post_uri AND x.viewer_did = gone.user_did
             AND x.like_uri = gone.uri)
    INSERT INTO sluice_delta (uri, likes) SELECT post_uri, -1 FROM gone;

    WITH ins AS (
        INSERT INTO likes AS x (uri, user_did, post_uri, subject_cid, via, created_at, commit_time, commit_seq, commit_rev)
        SELECT r.uri, p.a, p.b, r.record->'subject'->>'cid', r.record->'via', r.created_at, r.commit_time, r.commit_seq, r.commit_rev
          FROM sluice_pairs p JOIN sluice_record_state r ON r.uri = p.want
         WHERE p.collection = 'app.bsky.feed.like'
         ORDER BY p.a, p.b
        ON CONFLICT (user_did, post_uri) DO UPDATE
           SET uri = excluded.uri, subject_cid = excluded.subject_cid, via = excluded.via,
               created_at = excluded.created_at, commit_time = excluded.commit_time,
               commit_seq = excluded.commit_seq, commit_rev = excluded.commit_rev
         WHERE excluded.uri <= x.uri
        RETURNING x.uri, x.user_did, x.post_uri, x.created_at, (x.xmax = 0) AS fresh),
    n AS (
        INSERT INTO notifications (uri, recipient_did, author_did, reason, reason_subject, cid, created_at)
        SELECT i.uri, split_part(i.post_uri, '/', 3), i.user_did, 'like', i.post_uri, r.cid, i.created_at
          FROM ins i JOIN sluice_record_state r ON r.uri = i.uri
         WHERE split_part(i.post_uri, '/', 3) <> i.user_did
         ORDER BY i.uri
        ON CONFLICT (uri) DO NOTHING),
    v AS (
        INSERT INTO post_viewer_states AS x (post_uri, viewer_did, like_uri)
        SELECT post_uri, user_did, uri FROM ins ORDER BY post_uri, user_did
        ON CONFLICT (post_uri, viewer_did) DO UPDATE
           SET like_uri = excluded.like_uri, updated_at = now() AT TIME ZONE 'UTC'
         WHERE x.like_uri IS DISTINCT FROM excluded.like_uri),
    t AS (
        INSERT INTO thread_contexts AS x (post_uri, root_author_like_uri)
        SELECT i.post_uri, i.uri FROM ins i JOIN posts p ON p.uri = i.post_uri
         WHERE p.parent_uri IS NOT NULL AND split_part(p.root_uri, '/', 3) = i.user_did
         ORDER BY i.post_uri
        ON CONFLICT (post_uri) DO UPDATE
           SET root_author_like_uri = excluded.root_author_like_uri,
               updated_at = now() AT TIME ZONE 'UTC'),
    rc AS (
        UPDATE sluice_pairs p SET recheck = true FROM ins
         WHERE NOT ins.fresh AND p.collection = 'app.bsky.feed.like'
           AND p.a = ins.user_did AND p.b = ins.post_uri)
    INSERT INTO sluice_delta (uri, likes) SELECT post_uri, 1 FROM ins WHERE fresh;

    -- reposts
    WITH gone AS (
        DELETE FROM reposts x
         WHERE x.uri IN (SELECT y.uri FROM sluice_pairs p
                           JOIN reposts y ON y.user_did = p.a AND y.post_uri = p.b
                          WHERE p.collection = 'app.bsky.feed.repost'
                            AND p.full_check)
           AND EXISTS (SELECT 1 FROM sluice_record_state s WHERE s.uri = x.uri
                      AND (s.deleted OR s.pair IS DISTINCT FROM x.user_did || ' ' || x.post_uri))
        RETURNING x.uri, x.user_did, x.post_uri),
    n AS (DELETE FROM notifications x USING gone WHERE x.uri = gone.uri),
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

    -- a viewer state left without like, repost or any flag goes
    DELETE FROM post_viewer_states x USING sluice_pairs p
     WHERE p.collection IN ('app.bsky.feed.like', 'app.bsky.feed.repost')
       AND p.full_check AND x.post_uri = p.b AND x.viewer_did = p.a
       AND x.like_uri IS NULL AND x.repost_uri IS NULL
       AND NOT (x.bookmarked OR x.thread_muted OR x.reply_disabled
                OR x.embedding_disabled OR x.pinned);

    -- follows
    WITH gone AS (
        DELETE FROM follows x
         WHERE x.uri IN (SELECT y.uri FROM sluice_pairs p
                           JOIN follows y ON y.follower_did = p.a AND y.following_did = p.b
                          WHERE p.collection = 'app.bsky.graph.follow'
                            AND p.full_check)
           AND EXISTS (SELECT 1 FROM sluice_record_state s WHERE s.uri = x.uri
                      AND (s.deleted OR s.pair IS DISTINCT FROM x.follower_did || ' ' || x.following_did))
        RETURNING x.uri, x.follower_did, x.following_did),
    n AS (DELETE FROM notifications x USING gone WHERE x.uri = gone.uri)
    SELECT count(*) FROM gone INTO staged_gone;

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
         ORDER BY i.uri
        ON CONFLICT (uri) DO NOTHING),
    rc AS (
        UPDATE sluice_pairs p SET recheck = true FROM ins
         WHERE NOT ins.fresh AND p.collection = 'app.bsky.graph.follow'
           AND p.a = ins.follower_did AND p.b = ins.following_did)
    SELECT count(*) FROM ins INTO staged_gone;

    -- An owner replaced above by a smaller URI of the same pair (ON
    -- CONFLICT DO UPDATE: a duplicate applied after it, or a row a
    -- concurrent session had just written): what it produced goes too.
    -- Such pairs are rare: they are walked one URI at a time, through the
    -- pair index (a join here would be planned on the temp table's
    -- unknown size and could scan the whole state table).
    IF EXISTS (SELECT 1 FROM sluice_pairs WHERE recheck) THEN
        FOR dup IN
            SELECT r.uri, r.collection
              FROM sluice_pairs p
             CROSS JOIN LATERAL (
                   SELECT s.uri, s.collection FROM sluice_record_state s
                    WHERE s.collection = p.collection AND s.pair = p.a || ' ' || p.b
                      AND s.pair IS NOT NULL
                   UNION ALL
                   SELECT p.held, p.collection WHERE p.held IS NOT NULL
                   OFFSET 0) r
             WHERE p.recheck
             ORDER BY r.uri
        LOOP
            IF NOT EXISTS (SELECT 1 FROM likes x WHERE x.uri = dup.uri)
               AND NOT EXISTS (SELECT 1 FROM reposts x WHERE x.uri = dup.uri)
               AND NOT EXISTS (SELECT 1 FROM follows x WHERE x.uri = dup.uri) THEN
                DELETE FROM notifications WHERE uri = dup.uri;
                IF dup.collection = 'app.bsky.feed.repost' THEN
                    DELETE FROM feed_items WHERE uri = dup.uri;
                END IF;
            END IF;
        END LOOP;
    END IF;

    -- blocks
    DELETE FROM blocks x
     WHERE x.uri IN (SELECT y.uri FROM sluice_pairs p
                       JOIN blocks y ON y.blocker_did = p.a AND y.blocked_did = p.b
                      WHERE p.collection = 'app.bsky.graph.block'
                        AND p.full_check)
       AND EXISTS (SELECT 1 FROM sluice_record_state s WHERE s.uri = x.uri
                      AND (s.deleted OR s.pair IS DISTINCT FROM x.blocker_did || ' ' || x.blocked_did));

    INSERT INTO blocks AS x (uri, blocker_did, blocked_did, created_at, commit_time, commit_seq, commit_rev)
    SELECT r.uri, p.a, p.b, r.created_at, r.commit_time, r.commit_seq, r.commit_rev
      FROM sluice_pairs p JOIN sluice_record_state r ON r.uri = p.want
     WHERE p.collection = 'app.bsky.graph.block'
     ORDER BY p.a, p.b
    ON CONFLICT (blocker_did, blocked_did) DO UPDATE
       SET uri = excluded.uri, created_at = excluded.created_at,
               commit_time = excluded.commit_time, commit_seq = excluded.commit_seq,
               commit_rev = excluded.commit_rev
     WHERE excluded.uri <= x.uri;

    -- list_items
    DELETE FROM list_items x
     WHERE x.uri IN (SELECT y.uri FROM sluice_pairs p
                       JOIN list_items y ON y.list_uri = p.a AND y.subject_did = p.b
                      WHERE p.collection = 'app.bsky.graph.listitem'
                        AND p.full_check)
       AND EXISTS (SELECT 1 FROM sluice_record_state s WHERE s.uri = x.uri
                      AND (s.deleted OR s.pair IS DISTINCT FROM x.list_uri || ' ' || x.subject_did));

    INSERT INTO list_items AS x (uri, cid, list_uri, subject_did, created_at)
    SELECT r.uri, r.cid, p.a, p.b, r.created_at
      FROM sluice_pairs p JOIN sluice_record_state r ON r.uri = p.want
     WHERE p.collection = 'app.bsky.graph.listitem'
     ORDER BY p.a, p.b
    ON CONFLICT (list_uri, subject_did) DO UPDATE
       SET uri = excluded.uri, cid = excluded.cid, created_at = excluded.created_at
     WHERE excluded.uri <= x.uri;

    -- ---- posts: retract what a replaced or deleted post produced ...
    -- (by the array of their URIs: a join with sluice_stage would be
    -- planned on the temp table's unknown size, as a scan of each table)
    SELECT array_agg(uri) INTO gone_posts FROM sluice_stage
     WHERE collection = 'app.bsky.feed.post' AND sluice_op_retracts(kind, uri, renewed);
    IF gone_posts IS NOT NULL THEN
        WITH gone AS (
            DELETE FROM posts x WHERE x.uri = ANY (gone_posts) RETURNING x.parent_uri),
        q AS (
            DELETE FROM quotes x WHERE x.uri = ANY (gone_posts) RETURNING x.quoted_uri),
        f AS (DELETE FROM feed_items x WHERE x.uri = ANY (gone_posts)),
        n AS (DELETE FROM notifications x WHERE x.uri = ANY (gone_posts)),
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

    -- ---- profile: fields of users; a delete clears them.
    INSERT INTO users AS u (did, handle, display_name, description, avatar_url,
                            banner_url, profile_record)
    SELECT did, 'handle.invalid', left(record->>'displayName', 255), record->>'description',
           sluice_blob_cid(record->'avatar'), sluice_blob_cid(record->'banner'), record
      FROM sluice_stage
     WHERE collection = 'app.bsky.actor.profile' AND kind IN ('create', 'update')
     ORDER BY did
    ON CONFLICT (did) DO UPDATE
       SET display_name = excluded.display_name, description = excluded.description,
           avatar_url = excluded.avatar_url, banner_url = excluded.banner_url,
           profile_record = excluded.profile_record;

    UPDATE users u
       SET display_name = NULL, description = NULL, avatar_url = NULL,
           banner_url = NULL, profile_record = NULL
      FROM sluice_stage s
     WHERE s.collection = 'app.bsky.actor.profile' AND s.kind = 'delete' AND u.did = s.did;

    -- ---- records with a plain URI key: deletes, then upserts.
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

    -- threadgate and postgate: keyed by the post they guard (same rkey).
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

    -- any other collection
    DELETE FROM generic_records x USING sluice_stage s
     WHERE s.kind = 'delete' AND x.uri = s.uri
       AND s.collection NOT IN (
           'app.bsky.feed.post', 'app.bsky.feed.like', 'app.bsky.feed.repost',
           'app.bsky.graph.follow', 'app.bsky.graph.block', 'app.bsky.actor.profile',
           'app.bsky.graph.list', 'app.bsky.graph.listitem', 'app.bsky.feed.generator',
           'app.bsky.graph.starterpack', 'app.bsky.labeler.service',
           'app.bsky.feed.threadgate', 'app.bsky.feed.postgate');
    INSERT INTO generic_records AS x (uri, cid, author_did, record_type, record, created_at)
    SELECT uri, coalesce(cid, ''), did, left(collection, 255), coalesce(record, '{}'), created_at
      FROM sluice_stage
     WHERE kind IN ('create', 'update')
       AND collection NOT IN (
           'app.bsky.feed.post', 'app.bsky.feed.like', 'app.bsky.feed.repost',
           'app.bsky.graph.follow', 'app.bsky.graph.block', 'app.bsky.actor.profile',
           'app.bsky.graph.list', 'app.bsky.graph.listitem', 'app.bsky.feed.generator',
           'app.bsky.graph.starterpack', 'app.bsky.labeler.service',
           'app.bsky.feed.threadgate', 'app.bsky.feed.postgate')
     ORDER BY uri
    ON CONFLICT (uri) DO UPDATE
       SET cid = excluded.cid, record_type = excluded.record_type,
           record = excluded.record, created_at = excluded.created_at;

    -- ---- counters: the batch's deltas, summed per URI, are appended for
    -- sluice_fold_counters() (zeros too: a referenced post gets its row).
    INSERT INTO sluice_counter_delta (uri, likes, reposts, replies, quotes)
    SELECT uri, sum(likes), sum(reposts), sum(replies), sum(quotes)
      FROM sluice_delta
     WHERE split_part(uri, '/', 4) = 'app.bsky.feed.post'
        OR (split_part(uri, '/', 4) IN ('app.bsky.feed.generator', 'app.bsky.labeler.service')
            AND likes <> 0)
     GROUP BY uri;

    -- DELETE, not TRUNCATE: a truncation gives the tables new files, and
    -- that invalidates every plan this function has cached, so each batch
    -- would plan all its statements again (~35 ms a batch). The sink's
    -- sluice_stage and the two tables above are ON COMMIT DELETE ROWS,
    -- which empties them in place at commit, dead rows included.
    DELETE FROM sluice_stage;
    DELETE FROM sluice_delta;
    DELETE FROM sluice_pairs;
    RETURN staged;
END
$fn$;

-- sluice_fold_counters(wait): fold the committed counter deltas into
-- post_aggregations and into the like counts of feed generators and
-- labelers, in one transaction of its own (the caller's, autocommit).
-- One session folds at a time: with wait false a call that finds another
-- one folding returns -1 at once, with wait true it waits for it. Returns
-- the number of URIs folded, or -1 when it did not fold.
--
-- A post's counters move by the sum of its deltas (every delta is a row
-- really inserted or removed, so the counts stay equal to the rows; never
-- below 0 against rows an old worker counted wrong). A feed generator's or
-- labeler's like_count is recounted from likes instead: its row counts
-- the likes already there when it is written, and a recount can't count
-- one of them twice. Locks: post_aggregations rows in URI order, then
-- feed_generators and labeler_services rows in URI order; batches never
-- lock post_aggregations rows, so the fold and the workers don't wait for
-- each other there.
CREATE OR REPLACE FUNCTION sluice_fold_counters(wait boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    folded bigint;
    negative text[];
BEGIN
    IF wait THEN
        PERFORM pg_advisory_xact_lock(1936486755, 1);   -- 'sluc', the fold
    ELSIF NOT pg_try_advisory_xact_lock(1936486755, 1) THEN
        RETURN -1;
    END IF;
    -- Batches append under ROW EXCLUSIVE, which this does not wait for;
    -- a session holding a stronger lock on the table (an operator's
    -- LOCK TABLE, ALTER TABLE) makes the fold give up rather than queue.
    BEGIN
        LOCK TABLE sluice_counter_delta IN ROW EXCLUSIVE MODE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RETURN -1;
    END;
    IF to_regclass('pg_temp.sluice_fold') IS NULL THEN
        CREATE TEMP TABLE sluice_fold (
            uri text NOT NULL,
            likes int NOT NULL,
            reposts int NOT NULL,
            replies int NOT NULL,
            quotes int NOT NULL
        ) ON COMMIT DELETE ROWS;
    END IF;
    WITH d AS (DELETE FROM sluice_counter_delta RETURNING *)
    INSERT INTO sluice_fold
    SELECT uri, sum(likes), sum(reposts), sum(replies), sum(quotes) FROM d GROUP BY uri;
    GET DIAGNOSTICS folded = ROW_COUNT;
    IF folded = 0 THEN
        RETURN 0;
    END IF;

    WITH up AS (
        INSERT INTO post_aggregations AS x (post_uri, like_count, repost_count, reply_count, quote_count)
        SELECT uri, likes, reposts, replies, quotes
          FROM sluice_fold WHERE split_part(uri, '/', 4) = 'app.bsky.feed.post'
         ORDER BY uri
        ON CONFLICT (post_uri) DO UPDATE
           SET like_count = greatest(0, x.like_count + excluded.like_count),
               repost_count = greatest(0, x.repost_count + excluded.repost_count),
               reply_count = greatest(0, x.reply_count + excluded.reply_count),
               quote_count = greatest(0, x.quote_count + excluded.quote_count),
               updated_at = now() AT TIME ZONE 'UTC'
         WHERE excluded.like_count <> 0 OR excluded.repost_count <> 0
            OR excluded.reply_count <> 0 OR excluded.quote_count <> 0
        RETURNING x.post_uri, least(x.like_count, x.repost_count, x.reply_count, x.quote_count) < 0 AS below)
    SELECT array_agg(post_uri ORDER BY post_uri) FILTER (WHERE below) INTO negative FROM up;
    -- a new row below 0: rows removed that an old worker never counted
    IF negative IS NOT NULL THEN
        UPDATE post_aggregations
           SET like_count = greatest(0, like_count), repost_count = greatest(0, repost_count),
               reply_count = greatest(0, reply_count), quote_count = greatest(0, quote_count)
         WHERE post_uri = ANY (negative);
    END IF;

    -- the batches' keys of the rows recounted below (see "One lock order")
    PERFORM sluice_lock_keys(array_agg('uri ' || uri)) FROM sluice_fold
     WHERE split_part(uri, '/', 4) IN ('app.bsky.feed.generator', 'app.bsky.labeler.service');
    PERFORM 1 FROM feed_generators x JOIN sluice_fold f ON f.uri = x.uri
     ORDER BY x.uri FOR UPDATE OF x;
    UPDATE feed_generators x SET like_count = (SELECT count(*) FROM likes l WHERE l.post_uri = x.uri)
      FROM sluice_fold f WHERE f.uri = x.uri;
    PERFORM 1 FROM labeler_services x JOIN sluice_fold f ON f.uri = x.uri
     ORDER BY x.uri FOR UPDATE OF x;
    UPDATE labeler_services x SET like_count = (SELECT count(*) FROM likes l WHERE l.post_uri = x.uri)
      FROM sluice_fold f WHERE f.uri = x.uri;
    DELETE FROM sluice_fold;
    RETURN folded;
END
$fn$;
