-- shop.sql: the tables of a small shop, for sluice's table sink
-- (sink = table). Each table is fed by a pipeline of its own: one
-- stream, one consumer group, one table (see README.md here).
--
-- Every table is keyed by its own ID (the table_key of its pipeline: ON
-- CONFLICT needs a primary key or unique index on exactly those columns)
-- and has a stream_id column (column.stream_id = $id): the stream ID of
-- the entry the row came from. With it, table_on_conflict = update keeps
-- the row of the newest entry in stream order however entries arrive
-- (several workers, redeliveries), and nothing keeps the oldest's.
--
-- The columns are typed: sluice stages every value as text and converts
-- it with the column type's input function, so a value a column refuses
-- ("a lot" for a numeric) sends its entry to the dead-letter stream with
-- the entry, column and value named, and the rest of the batch commits.

-- users: from the stream shop:users, flat fields
--   XADD shop:users * type user_created user_id u7 email u7@example.org
--        name Ada signed_up_at 2026-12-01T09:00:00Z
-- A user_updated entry carries the whole profile again: the newest in
-- stream order wins (table_on_conflict = update).
CREATE TABLE IF NOT EXISTS users (
    user_id text PRIMARY KEY,
    email text NOT NULL,
    name text,
    signed_up_at timestamptz,
    stream_id text NOT NULL
);

-- orders: from order entries of the stream shop:orders, whose field
-- `data` holds the order as JSON (sluice.conf here), e.g.
--   {"order_id": 1042, "user": {"id": "u7"}, "amount": 25.90,
--    "currency": "EUR", "status": "placed",
--    "items": [{"sku": "TEA-01", "qty": 2}], "placed_at": "2026-12-01T10:00:00Z"}
-- Each entry carries the whole order (placed, paid, shipped...): the
-- newest one wins (table_on_conflict = update).
CREATE TABLE IF NOT EXISTS orders (
    order_id bigint PRIMARY KEY,
    user_id text NOT NULL,
    amount numeric(12,2) NOT NULL,
    currency char(3) NOT NULL DEFAULT 'EUR', -- when the entry has none
    status text NOT NULL,
    first_sku text,
    items jsonb,
    channel text,
    placed_at timestamptz,
    received_at timestamptz NOT NULL, -- $time: when the entry was added
    stream_id text NOT NULL           -- $id
);

-- payments: from the stream shop:payments, flat fields
--   XADD shop:payments * payment_id p9 order_id 1042 amount 25.90 method card
-- A payment event that comes twice changes nothing
-- (table_on_conflict = nothing: the first one in stream order stays).
CREATE TABLE IF NOT EXISTS payments (
    payment_id text PRIMARY KEY,
    order_id bigint NOT NULL,
    amount numeric(12,2) NOT NULL,
    method text,
    paid_at timestamptz NOT NULL,
    stream_id text NOT NULL
);
