-- 90-apply.sql: the one entry point of a batch, sluice_apply_stage().

-- sluice_apply_stage(): apply every row of the session's temp table
-- sluice_stage (see the staging contract) set-based, then empty it. Runs
-- inside the caller's transaction; an error in any step aborts the whole
-- batch (the worker retries it). Returns the number of staged rows.
--
-- The order of the steps: the keys first (80-lock), then the users rows
-- of the actors, the counters' zero rows, the identity and account state,
-- the record state (15-state: which ops win; the first row lock in URI
-- order), the second lock pass, and then each record type. Among the types
-- the order matters in two places: the viewer states are pruned and the
-- replaced owners rechecked once every pair type has written, and the
-- gates come after posts (a post reads the gates already there, then a
-- gate sets its post's flag).
CREATE OR REPLACE FUNCTION sluice_apply_stage() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    staged bigint;
    renewed text[];
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
    PERFORM sluice_apply_actors();
    PERFORM sluice_note_referenced_posts();
    PERFORM sluice_apply_identity();
    PERFORM sluice_apply_account();
    renewed := sluice_record_state_advance();
    PERFORM sluice_lock_retracted_pairs();

    PERFORM sluice_pairs_collect(renewed);
    PERFORM sluice_apply_likes();
    PERFORM sluice_apply_reposts();
    PERFORM sluice_apply_follows();
    PERFORM sluice_apply_blocks();
    PERFORM sluice_apply_list_items();
    PERFORM sluice_viewer_states_prune();
    PERFORM sluice_pairs_recheck();

    PERFORM sluice_apply_posts(renewed);
    PERFORM sluice_apply_profiles();
    PERFORM sluice_apply_lists();
    PERFORM sluice_apply_feed_generators();
    PERFORM sluice_apply_starter_packs();
    PERFORM sluice_apply_labeler_services();
    PERFORM sluice_apply_thread_gates();
    PERFORM sluice_apply_post_gates();
    PERFORM sluice_apply_generic_records();
    PERFORM sluice_counters_append();

    -- DELETE, not TRUNCATE: a truncation gives the tables new files, and
    -- that invalidates every plan the apply functions have cached, so each batch
    -- would plan all its statements again (~35 ms a batch). The sink's
    -- sluice_stage and the two tables above are ON COMMIT DELETE ROWS,
    -- which empties them in place at commit, dead rows included.
    DELETE FROM sluice_stage;
    DELETE FROM sluice_delta;
    DELETE FROM sluice_pairs;
    RETURN staged;
END

$fn$;
