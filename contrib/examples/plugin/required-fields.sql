-- required-fields.sql: the table of the example plugin required-fields.so
-- (contrib/examples/plugin/required-fields.c; sink = plugin).
--
--   psql "$DATABASE_URL" -f required-fields.sql
--
-- One row per stream entry that had every field plugin.required names:
-- its stream ID and its fields as a jsonb object of strings. The primary
-- key on the stream ID is what makes the plugin idempotent (its INSERT
-- says ON CONFLICT (stream_id) DO NOTHING): an entry delivered again
-- changes nothing. Another name: plugin.table = schema.name, with the
-- same columns.

CREATE TABLE IF NOT EXISTS required_fields_entries (
    stream_id text PRIMARY KEY,
    fields jsonb NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);

-- e.g. SELECT fields->>'order_id', fields->>'user_id'
--        FROM required_fields_entries ORDER BY written_at;
