-- bench-apply.sql: time sluice_apply_stage() on staged batches of 1,000
-- firehose-like operations (70 % likes, 11 % posts of which a third are
-- replies, 10 % reposts, 4 % follows, 2 % like deletes, 1 % profile
-- updates, 1 % blocks, 1 % identity events) against a database that
-- already holds the atproto schema.
--
--   psql -X -v batches=50 -f contrib/sql/bench-apply.sql DBURL
--
-- Each batch runs in its own transaction (as the worker does); psql's
-- \timing prints the time of each SELECT sluice_apply_stage(), which is
-- the cost of 1,000 events without the COPY. The last query prints the
-- average over the batches.
\set ON_ERROR_STOP 1
\if :{?batches}
\else
\set batches 50
\endif
SELECT setseed(0.42);
CREATE TEMP TABLE IF NOT EXISTS sluice_stage (LIKE sluice_stage_template INCLUDING DEFAULTS);
CREATE TEMP TABLE bench_times (batch int, ms numeric);

CREATE OR REPLACE FUNCTION pg_temp.bench_stage(b int) RETURNS void LANGUAGE sql AS $$
    INSERT INTO sluice_stage (ord_ms, ord_seq, op_idx, kind, did, collection, rkey, uri,
                              cid, record, created_at, handle, commit_seq, commit_rev, commit_time)
    SELECT 1700000000000 + b, i, 0, k.kind, k.did, k.coll, k.rkey,
           CASE WHEN k.coll IS NOT NULL THEN 'at://' || k.did || '/' || k.coll || '/' || k.rkey END,
           CASE WHEN k.kind IN ('create', 'update') THEN 'bafyrei' || md5(b || '/' || i) END,
           k.rec, timestamp '2024-06-01' + (b * 1000 + i) * interval '10 ms',
           k.handle, (b * 1000 + i)::text, 'rev' || b, timestamp '2024-06-01' + b * interval '1 s'
      FROM generate_series(1, 1000) i,
           LATERAL (SELECT i % 100 AS cls, 'did:plc:u' || ((b * 7919 + i * 104729) % 20000) AS actor,
                           greatest(b - 1 - (random() * 20)::int, 0) AS ob,
                           70 + (random() * 10)::int + 100 * (random() * 9)::int AS oi) r,
           LATERAL (SELECT 'at://did:plc:u' || ((r.ob * 7919 + r.oi * 104729) % 20000)
                           || '/app.bsky.feed.post/b' || r.ob || 'i' || r.oi AS subj) s,
           LATERAL (SELECT
               CASE WHEN r.cls < 97 OR r.cls = 98 THEN 'create' WHEN r.cls = 97 THEN 'delete'
                    WHEN r.cls = 99 THEN 'identity' ELSE 'create' END AS kind,
               CASE WHEN r.cls = 97 THEN 'did:plc:u' || (((b - 1) * 7919 + (i - 30) * 104729) % 20000)
                    ELSE r.actor END AS did,
               CASE WHEN r.cls < 70 OR r.cls = 97 THEN 'app.bsky.feed.like'
                    WHEN r.cls < 81 THEN 'app.bsky.feed.post'
                    WHEN r.cls < 91 THEN 'app.bsky.feed.repost'
                    WHEN r.cls < 95 THEN 'app.bsky.graph.follow'
                    WHEN r.cls = 95 THEN 'app.bsky.actor.profile'
                    WHEN r.cls IN (96, 98) THEN 'app.bsky.graph.block' END AS coll,
               CASE WHEN r.cls = 95 THEN 'self'
                    WHEN r.cls = 97 THEN 'b' || (b - 1) || 'i' || (i - 30)
                    WHEN r.cls < 99 THEN 'b' || b || 'i' || i END AS rkey,
               CASE WHEN r.cls < 70 OR (r.cls >= 81 AND r.cls < 91) THEN
                        jsonb_build_object('$type', 'app.bsky.feed.like', 'createdAt', '2024-06-01T00:00:00Z',
                            'subject', jsonb_build_object('uri', s.subj, 'cid', 'bafyreisubject'))
                    WHEN r.cls < 81 THEN
                        jsonb_build_object('$type', 'app.bsky.feed.post', 'text', 'post number ' || i || ' of batch ' || b,
                            'langs', '["en"]'::jsonb, 'createdAt', '2024-06-01T00:00:00Z')
                        || CASE WHEN r.cls < 74 THEN jsonb_build_object('reply', jsonb_build_object(
                                'parent', jsonb_build_object('uri', s.subj, 'cid', 'bafyreiparent'),
                                'root', jsonb_build_object('uri', s.subj, 'cid', 'bafyreiparent')))
                                ELSE '{}' END
                    WHEN r.cls < 95 AND r.cls >= 91 THEN jsonb_build_object('$type', 'app.bsky.graph.follow',
                        'subject', 'did:plc:u' || (random() * 20000)::int, 'createdAt', '2024-06-01T00:00:00Z')
                    WHEN r.cls = 95 THEN jsonb_build_object('$type', 'app.bsky.actor.profile',
                        'displayName', 'User ' || i, 'description', 'about me',
                        'avatar', jsonb_build_object('$type', 'blob', 'ref', jsonb_build_object('$link', 'bafkavatar' || i)))
                    WHEN r.cls IN (96, 98) THEN jsonb_build_object('$type', 'app.bsky.graph.block',
                        'subject', 'did:plc:u' || (random() * 20000)::int, 'createdAt', '2024-06-01T00:00:00Z')
               END AS rec,
               CASE WHEN r.cls = 99 THEN 'user' || i || '.bsky.social' END AS handle) k
$$;

CREATE OR REPLACE FUNCTION pg_temp.bench_apply(b int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz; BEGIN
    t0 := clock_timestamp();
    PERFORM sluice_apply_stage();
    INSERT INTO bench_times VALUES (b, extract(epoch FROM clock_timestamp() - t0) * 1000);
END $$;

SELECT format('SELECT pg_temp.bench_stage(%s)', b), format('SELECT pg_temp.bench_apply(%s)', b)
  FROM generate_series(1, :batches) b \gexec

SELECT count(*) AS batches, round(avg(ms), 1) AS avg_ms_per_1000,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) AS median_ms,
       round(1000 * 1000 / avg(ms)) AS events_per_s_apply_only
  FROM bench_times WHERE batch > 1;
