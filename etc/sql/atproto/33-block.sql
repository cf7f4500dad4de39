-- 33-block.sql: app.bsky.graph.block, in blocks. Pair: (blocker_did,
-- blocked_did). A block writes its row only. atp_record_check() requires a
-- subject DID.
--
-- The pair-type contract (see 39-pairs.sql): sluice_block_pair(),
-- sluice_block_row_pair(), sluice_block_foreign_rows() and sluice_apply_blocks().

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

-- The pair of a block record written by did, as text ('a b'). Inlined
-- by the planner; can't fail.
CREATE OR REPLACE FUNCTION sluice_block_pair(did text, record jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT did || ' ' || (record->>'subject')
$$;

-- The pair the current blocks row of row_uri holds, NULL if there is none.
-- Can't fail.
CREATE OR REPLACE FUNCTION sluice_block_row_pair(row_uri text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT x.blocker_did || ' ' || x.blocked_did FROM blocks x WHERE x.uri = row_uri
$$;

-- sluice_block_foreign_rows(): for each block pair looked up in full, the
-- URI of a current row that has no state row (written by someone else,
-- see sluice_pairs_collect()), in sluice_pairs.held.
CREATE OR REPLACE FUNCTION sluice_block_foreign_rows() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE sluice_pairs p SET held = y.uri FROM blocks y
     WHERE p.collection = 'app.bsky.graph.block' AND p.full_check
       AND y.blocker_did = p.a AND y.blocked_did = p.b
       AND NOT EXISTS (SELECT 1 FROM sluice_record_state r WHERE r.uri = y.uri);
END
$fn$;

-- sluice_apply_blocks(): retract and write the staged block ops
-- (see "two passes" in 39-pairs.sql).
CREATE OR REPLACE FUNCTION sluice_apply_blocks() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
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
END
$fn$;
