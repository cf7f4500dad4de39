-- 10-actor.sql: the actor, in users. Every event ensures its actor's row;
-- identity events set the handle (the newest with one wins), account events
-- the account status (the newest wins), app.bsky.actor.profile records the
-- profile fields (one per DID, rkey self; a delete clears them).

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

-- sluice_apply_actors(): the users row of every actor and subject the
-- batch names.
CREATE OR REPLACE FUNCTION sluice_apply_actors() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
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
END
$fn$;

-- sluice_apply_identity(): the staged identity events.
CREATE OR REPLACE FUNCTION sluice_apply_identity() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
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
END
$fn$;

-- sluice_apply_account(): the staged account events.
CREATE OR REPLACE FUNCTION sluice_apply_account() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
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
END
$fn$;

-- sluice_apply_profiles(): the staged app.bsky.actor.profile ops, which
-- write fields of users; a delete clears them.
CREATE OR REPLACE FUNCTION sluice_apply_profiles() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
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
END
$fn$;
