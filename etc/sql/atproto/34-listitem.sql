-- 34-listitem.sql: app.bsky.graph.listitem, in list_items. Pair:
-- (list_uri, subject_did). A list item writes its row only.
-- atp_record_check() requires an at:// list URI and a subject DID.
--
-- The pair-type contract (see 39-pairs.sql): sluice_listitem_pair(),
-- sluice_listitem_row_pair(), sluice_listitem_foreign_rows() and sluice_apply_list_items().

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

-- The pair of a listitem record written by did, as text ('a b'). Inlined
-- by the planner; can't fail.
CREATE OR REPLACE FUNCTION sluice_listitem_pair(did text, record jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT (record->>'list') || ' ' || (record->>'subject')
$$;

-- The pair the current list_items row of row_uri holds, NULL if there is none.
-- Can't fail.
CREATE OR REPLACE FUNCTION sluice_listitem_row_pair(row_uri text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT x.list_uri || ' ' || x.subject_did FROM list_items x WHERE x.uri = row_uri
$$;

-- sluice_listitem_foreign_rows(): for each listitem pair looked up in full, the
-- URI of a current row that has no state row (written by someone else,
-- see sluice_pairs_collect()), in sluice_pairs.held.
CREATE OR REPLACE FUNCTION sluice_listitem_foreign_rows() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE sluice_pairs p SET held = y.uri FROM list_items y
     WHERE p.collection = 'app.bsky.graph.listitem' AND p.full_check
       AND y.list_uri = p.a AND y.subject_did = p.b
       AND NOT EXISTS (SELECT 1 FROM sluice_record_state r WHERE r.uri = y.uri);
END
$fn$;

-- sluice_apply_list_items(): retract and write the staged listitem ops
-- (see "two passes" in 39-pairs.sql).
CREATE OR REPLACE FUNCTION sluice_apply_list_items() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
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
END
$fn$;
