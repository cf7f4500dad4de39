-- 39-pairs.sql: the records with a second unique key (likes, reposts,
-- follows, blocks, list items; see "likes, reposts, follows" in
-- 00-base.sql). Each touched pair is reconciled so that the live record
-- with the smallest URI owns the row: the batch's pairs are collected in
-- the temp table sluice_pairs with the owner they want, then each pair
-- type's apply function writes them.
--
-- The pair-type contract: a file per type (30-like ... 34-listitem) gives
--   sluice_<type>_pair(did, record)   the pair a record names;
--   sluice_<type>_row_pair(uri)       the pair the URI's current row holds;
--   sluice_<type>_foreign_rows()      marks the current rows that sluice
--                                     has no state for (of every pair for
--                                     the types whose rows notify; blocks
--                                     and list items: of the pairs looked
--                                     up in full);
--   sluice_apply_<type>s()            retracts and writes the type's pairs.
--
-- sluice_apply_<type>s() works in two passes that each take row locks in
-- pair order: first the rows whose owner is no longer live in its pair go
-- (deleted, or updated to another subject) with their effects and
-- counters, then the wanted owner is written with its effects; an
-- existing row is replaced only by a smaller URI (so two sessions writing
-- one pair at once end with the smaller), and the pair is then marked for
-- sluice_pairs_recheck().

-- The pair key of a record with a second unique key, NULL for the
-- others. Inlined by the planner; can't fail.
CREATE OR REPLACE FUNCTION sluice_pair_key(collection text, did text, record jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN record IS NULL THEN NULL
        WHEN collection = 'app.bsky.feed.like' THEN sluice_like_pair(did, record)
        WHEN collection = 'app.bsky.feed.repost' THEN sluice_repost_pair(did, record)
        WHEN collection = 'app.bsky.graph.follow' THEN sluice_follow_pair(did, record)
        WHEN collection = 'app.bsky.graph.block' THEN sluice_block_pair(did, record)
        WHEN collection = 'app.bsky.graph.listitem' THEN sluice_listitem_pair(did, record)
    END
$$;

-- What the state of a pair record keeps of it (sluice_record_state.record):
-- what its row needs beyond the pair. For a like or a repost the subject's
-- CID and the via reference, at their places in the record (so that the
-- whole records kept by earlier versions read the same); nothing for a
-- follow, a block or a list item. Inlined by the planner; can't fail.
CREATE OR REPLACE FUNCTION sluice_pair_record(collection text, record jsonb)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN collection IN ('app.bsky.feed.like', 'app.bsky.feed.repost')
                THEN jsonb_build_object('subject', jsonb_build_object('cid', record->'subject'->'cid'))
                     || CASE WHEN record ? 'via' THEN jsonb_build_object('via', record->'via')
                             ELSE '{}' END
           END
$$;

-- sluice_current_pairs(renewed): the pair each staged op of a like, repost,
-- follow, block or list item that retracts (sluice_op_retracts()) finds in
-- its table (the row the URI owns now), as the text sluice_pair_key()
-- gives; NULL when the URI has no row. With renewed '{}' these are the
-- updates and deletes.
CREATE OR REPLACE FUNCTION sluice_current_pairs(renewed text[])
RETURNS TABLE (uri text, collection text, pair text) LANGUAGE plpgsql AS $fn$
BEGIN
    RETURN QUERY
    SELECT s.uri, s.collection, CASE s.collection
             WHEN 'app.bsky.feed.like' THEN sluice_like_row_pair(s.uri)
             WHEN 'app.bsky.feed.repost' THEN sluice_repost_row_pair(s.uri)
             WHEN 'app.bsky.graph.follow' THEN sluice_follow_row_pair(s.uri)
             WHEN 'app.bsky.graph.block' THEN sluice_block_row_pair(s.uri)
             WHEN 'app.bsky.graph.listitem' THEN sluice_listitem_row_pair(s.uri)
           END
      FROM sluice_stage s
     WHERE s.kind IN ('create', 'update', 'delete')
       AND sluice_is_pair_collection(s.collection)
       AND sluice_op_retracts(s.kind, s.uri, renewed);
END
$fn$;

-- sluice_pairs_collect(renewed): fill sluice_pairs with every pair the
-- batch touches and the owner each wants.
CREATE OR REPLACE FUNCTION sluice_pairs_collect(renewed text[]) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
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
           AND sluice_is_pair_collection(collection)
        UNION ALL
        SELECT collection, pair, NULL, false FROM sluice_current_pairs(renewed)
    ) x WHERE p IS NOT NULL
     GROUP BY 1, 2, 3;

    -- A current row with no state row was written by someone else (an old
    -- worker, before or beside sluice): it is live, and it is a candidate
    -- owner like any live record sluice has seen; when a smaller URI takes
    -- the pair over, sluice_pairs_recheck() finds what it produced by it.
    PERFORM sluice_like_foreign_rows();
    PERFORM sluice_repost_foreign_rows();
    PERFORM sluice_follow_foreign_rows();
    PERFORM sluice_block_foreign_rows();
    PERFORM sluice_listitem_foreign_rows();

    UPDATE sluice_pairs p SET
        want = least(p.held,
                     (SELECT min(r.uri) FROM sluice_record_state r
                       WHERE r.collection = p.collection AND r.pair = p.a || ' ' || p.b
                         AND r.pair IS NOT NULL AND NOT r.deleted))
     WHERE p.full_check;
END
$fn$;

-- sluice_viewer_states_prune(): after the likes and reposts are written.
CREATE OR REPLACE FUNCTION sluice_viewer_states_prune() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    -- a viewer state left without like, repost or any flag goes
    DELETE FROM post_viewer_states x USING sluice_pairs p
     WHERE p.collection IN ('app.bsky.feed.like', 'app.bsky.feed.repost')
       AND p.full_check AND x.post_uri = p.b AND x.viewer_did = p.a
       AND x.like_uri IS NULL AND x.repost_uri IS NULL
       AND NOT (x.bookmarked OR x.thread_muted OR x.reply_disabled
                OR x.embedding_disabled OR x.pinned);
END
$fn$;

-- sluice_pairs_recheck(): after the pair types are written.
CREATE OR REPLACE FUNCTION sluice_pairs_recheck() RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    dup record;
BEGIN
    -- An owner replaced by a smaller URI of the same pair (ON
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
                DELETE FROM notifications WHERE uri = ANY (sluice_notification_names(dup.uri));
                IF dup.collection = 'app.bsky.feed.repost' THEN
                    DELETE FROM feed_items WHERE uri = dup.uri;
                END IF;
            END IF;
        END LOOP;
    END IF;
END
$fn$;
