-- raw.sql: the table of the raw sink (sink = raw): one row per stream
-- entry. `sluiced --init-schema` applies this file in one transaction under
-- an advisory lock; every statement is idempotent.
--
-- The table is called events here. With another raw_table setting the
-- worker applies this same text with the table name, and the names of the
-- table's constraints and indexes, rewritten to that setting.
--
--   stream_id   the entry's stream ID; UNIQUE, so a redelivered entry
--               changes nothing (INSERT ... ON CONFLICT DO NOTHING)
--   type        the value of the raw_type_field field (NULL if absent)
--   payload     the entry's data field parsed as JSON, or, without a data
--               field, an object of all its fields (values as strings)
--   created_at  when the row was written, UTC

CREATE TABLE IF NOT EXISTS events (
    id bigserial PRIMARY KEY,
    stream_id text NOT NULL,
    type text,
    payload jsonb NOT NULL,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    CONSTRAINT events_stream_id_key UNIQUE (stream_id)
);
