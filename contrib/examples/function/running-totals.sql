-- running-totals.sql: an example of sluice's function sink.
--
--   sink = function
--   function = shop_apply
--
-- A shop's stream carries entries such as
--   XADD shop:events * type payment_processed user_id u7 amount 12.50
-- and shop_apply() keeps per-user running totals of the payments. sluice
-- calls it with each batch, in the batch's transaction, before the ack:
--   [{"id": "1700000000000-0", "fields": {"type": ..., "user_id": ...}}]
--
-- Idempotent: a batch may come again (a worker killed before its ack, an
-- entry reclaimed), so every stream ID is recorded once in shop_applied,
-- and only the entries recorded by this call count. Payments of one user
-- are added in user_id order, so that two workers never wait on each
-- other's rows in opposite orders.
--
-- An entry the function can't take raises an exception: sluice splits the
-- batch until that entry is alone, dead-letters it with the message, and
-- applies the rest.

CREATE TABLE IF NOT EXISTS shop_applied (
    stream_id text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS shop_totals (
    user_id text PRIMARY KEY,
    payments bigint NOT NULL DEFAULT 0,
    amount numeric NOT NULL DEFAULT 0
);

CREATE OR REPLACE FUNCTION shop_apply(entries jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bad text;
BEGIN
    SELECT e->>'id' INTO bad
      FROM jsonb_array_elements(entries) e
     WHERE e->'fields'->>'type' = 'payment_processed'
       AND (e->'fields'->>'user_id' IS NULL
            OR coalesce(e->'fields'->>'amount', '') !~ '^[0-9]+(\.[0-9]+)?$')
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'payment % has no user_id or no valid amount', bad;
    END IF;

    WITH fresh AS (
        INSERT INTO shop_applied (stream_id)
        SELECT e->>'id' FROM jsonb_array_elements(entries) e
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING stream_id
    ), payments AS (
        SELECT e->'fields'->>'user_id' AS user_id,
               (e->'fields'->>'amount')::numeric AS amount
          FROM jsonb_array_elements(entries) e
          JOIN fresh ON fresh.stream_id = e->>'id'
         WHERE e->'fields'->>'type' = 'payment_processed'
    )
    INSERT INTO shop_totals AS t (user_id, payments, amount)
    SELECT user_id, count(*), sum(amount)
      FROM payments
     GROUP BY user_id
     ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE
       SET payments = t.payments + EXCLUDED.payments,
           amount = t.amount + EXCLUDED.amount;
END
$$;
