-- 00-base.sql, the first file of atproto/: the schema of the AT Protocol
-- sink (sink = atproto) and the functions that apply one staged batch. The
-- build joins the files of this folder in name order into one script
-- (sql/atproto.sql), which is compiled into sluiced; `sluiced
-- --init-schema` runs it in one transaction under an advisory lock. Every
-- statement is idempotent and safe on a database the appview created:
-- tables are created only when missing, an appview table's index only when
-- the table has no index of the same columns under any name
-- (sluice_create_index()), appview tables are never dropped or altered,
-- and only the columns listed in the design are written (extra columns
-- keep their defaults).
--
-- The files: this one holds the design (below), the tables more than one
-- record type writes, sluice's own tables and the shared helpers. Then one
-- file per record type (10-actor ... 49-generic), each owning its table,
-- its indexes and the function that applies the batch's ops of that type
-- (sluice_apply_<type>()): what it retracts, what it writes, which effects
-- and counter deltas follow. 15-state holds the ordering state, 39-pairs the
-- reconciliation the five record types with a second unique key share,
-- 80-lock the batch's lock keys, 90-apply the one entry point,
-- sluice_apply_stage(), which calls the others in their order,
-- 95-counters the counter deltas, their fold and the recount, and
-- 96-check what `sluiced --check` reports. A table is created before
-- the first SQL-language function that reads it (their bodies are checked
-- when they are created; PL/pgSQL bodies only when they first run).
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
--     notification depends on what was applied before. The old workers
--     named theirs after the record differently (uri#notification for a
--     like, repost or follow; uri#notification/reply, /quote and
--     /mention/<did> for a post) and their quotes uri#quote: a retraction
--     removes every one of those (sluice_notification_names()), and a
--     record they wrote and sluice applies again (a redelivery) gets no
--     second notification.
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

-- ---- the tables several record types write ------------------------------

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
--
-- On a table that has rows (an appview's, in use) the index is not built
-- here, inside the schema's transaction, where it would block the
-- appview's writes to the table until the build ends: its CREATE INDEX
-- CONCURRENTLY is queued in the session's temp table sluice_index_later,
-- which `sluiced --init-schema` runs once the schema has committed
-- (worker/schema.c), after dropping an invalid index of that name that an
-- interrupted build left. An invalid index covers nothing.
CREATE OR REPLACE FUNCTION sluice_create_index(name text, tab regclass, cols text[],
                                               method text DEFAULT 'btree')
RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
    same text;
    has_rows boolean;
    invalid boolean;
    cols_sql text;
BEGIN
    SELECT c.relname INTO same
      FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_am am ON am.oid = c.relam
     WHERE i.indrelid = tab AND am.amname = method AND i.indisvalid
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
    cols_sql := (SELECT string_agg(quote_ident(c), ', ') FROM unnest(cols) c);
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', tab) INTO has_rows;
    SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                    WHERE i.indrelid = tab AND c.relname = name AND NOT i.indisvalid)
      INTO invalid;
    IF NOT (has_rows OR invalid) THEN
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s USING %s (%s)',
                       name, tab, method, cols_sql);
        RETURN true;
    END IF;
    CREATE TEMP TABLE IF NOT EXISTS sluice_index_later (
        ord serial, name text NOT NULL, stmt text NOT NULL);
    IF invalid THEN
        INSERT INTO sluice_index_later (name, stmt)
        VALUES (name, format('DROP INDEX CONCURRENTLY IF EXISTS %I', name));
    END IF;
    INSERT INTO sluice_index_later (name, stmt)
    VALUES (name, format('CREATE INDEX CONCURRENTLY IF NOT EXISTS %I ON %s USING %s (%s)',
                         name, tab, method, cols_sql));
    RAISE NOTICE 'index % on % is built CONCURRENTLY once the schema has committed', name, tab;
    RETURN false;
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

-- Functions of earlier versions, replaced (an upgrade leaves none behind).
DROP FUNCTION IF EXISTS sluice_current_pairs();
DROP FUNCTION IF EXISTS sluice_like_may_give_context(text, text);

-- The CID of a blob in canonical form ({"ref": {"$link": cid}}); NULL if
-- absent. Can't fail.
CREATE OR REPLACE FUNCTION sluice_blob_cid(blob jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(blob->'ref'->>'$link', blob->>'cid')
$$;

-- The names a notification of the record uri has, in sluice's scheme (the
-- record URI) and in the old workers' (see "notifications" above); a
-- post's mention notifications of theirs are found by
-- sluice_post_mention_names(). Inlined by the planner; can't fail.
CREATE OR REPLACE FUNCTION sluice_notification_names(uri text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY[uri, uri || '#notification', uri || '#notification/reply',
                 uri || '#notification/quote']
$$;

-- The post a threadgate or postgate URI belongs to (same repo and rkey).
CREATE OR REPLACE FUNCTION sluice_gate_post(uri text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'at://' || split_part(uri, '/', 3) || '/app.bsky.feed.post/' || split_part(uri, '/', 5)
$$;

-- Whether a staged op retracts what its URI had produced: an update or a
-- delete always, a create only when the URI had a state row before the
-- batch (renewed: see sluice_apply_stage()). A create of a new URI is
-- fresh and retracts nothing. Inlined by the planner; can't fail.
CREATE OR REPLACE FUNCTION sluice_op_retracts(kind text, uri text, renewed text[])
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT kind <> 'create' OR uri = ANY (renewed)
$$;

-- Whether records of the collection have a second unique key (see
-- 39-pairs.sql): likes, reposts, follows, blocks and list items. Inlined
-- by the planner; can't fail.
CREATE OR REPLACE FUNCTION sluice_is_pair_collection(collection text)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT collection IN ('app.bsky.feed.like', 'app.bsky.feed.repost',
                          'app.bsky.graph.follow', 'app.bsky.graph.block',
                          'app.bsky.graph.listitem')
$$;
