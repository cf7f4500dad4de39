/*
 * test_stream_sink_raw.c: the raw sink without a database: the DDL it
 * builds for a non-default raw_table, and what prepare() refuses, with
 * which reason.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "shared/config.h"
#include "tests/unit/sink_entry.h"
#include "tests/unit/tap.h"
#include "worker/sink.h"

static struct sink *sink;
static const struct sink_type *type;

/* prepare() one entry of n field/value pairs; returns 0/-1, reason set. */
static int
try_entry(char *reason, size_t reasonlen, int n, ...)
{
    struct stream_field fields[8];
    va_list ap;

    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        fields[i].name = va_arg(ap, const char *);
        fields[i].name_len = strlen(fields[i].name);
        fields[i].value = va_arg(ap, const char *);
        fields[i].value_len = va_arg(ap, size_t);
    }
    va_end(ap);
    return sink_try_fields(type, sink, fields, (size_t)n, reason, reasonlen);
}

#define S(x) x, sizeof(x) - 1

int
main(void)
{
    static struct config cfg;
    char err[256], reason[SINK_REASON_MAX];
    const char *ddl;

    config_defaults(&cfg);
    strcpy(cfg.raw_table, "ingest.raw_log");
    type = sink_type_find("raw");
    ok(type != NULL, "the raw sink is registered");
    ok(sink_type_find("no-such-sink") == NULL, "unknown sinks are not");
    sink = type->create(&cfg, err, sizeof(err));
    ok(sink != NULL, "created for raw_table ingest.raw_log");

    ddl = type->ddl_for(sink);
    ok(strstr(ddl, "CREATE TABLE IF NOT EXISTS \"ingest\".\"raw_log\" (") !=
           NULL,
       "the DDL creates the configured, quoted, schema-qualified table");
    ok(strstr(ddl, "CONSTRAINT \"raw_log_stream_id_key\" UNIQUE") != NULL,
       "constraint names follow the table's name");
    ok(strstr(ddl, "TABLE IF NOT EXISTS events") == NULL,
       "no trace of the template's table name in statements");

    ok(try_entry(reason, sizeof(reason), 2, "type", S("commit"), "data",
                 S("{\"a\":\"x\\u0000y\"}")) == 0,
       "a JSON object with \\u0000 is accepted");
    ok(try_entry(reason, sizeof(reason), 2, "did", S("did:plc:1"), "n",
                 S("7")) == 0,
       "an entry without data is accepted");
    ok(try_entry(reason, sizeof(reason), 1, "data", S("{\"a\": nope}")) < 0 &&
           strncmp(reason, "data: ", 6) == 0,
       "not JSON refused: '%s'", reason);
    ok(try_entry(reason, sizeof(reason), 1, "data", S("[1]")) < 0 &&
           strcmp(reason, "data: not a JSON object but an array") == 0,
       "an array refused: '%s'", reason);
    ok(try_entry(reason, sizeof(reason), 1, "data", S("{\"t\":\"a\nb\"}")) <
               0 &&
           strstr(reason, "control character 0x0a") != NULL,
       "a raw newline inside a string refused: '%s'", reason);
    ok(try_entry(reason, sizeof(reason), 1, "data",
                 S("{\"t\":\"a\",\n\"u\":1}")) == 0,
       "a newline between tokens is fine");
    ok(try_entry(reason, sizeof(reason), 1, "did", S("a\0b")) < 0 &&
           strcmp(reason, "field did: NUL byte at byte 1 of its value") == 0,
       "a NUL byte in a field refused: '%s'", reason);
    ok(try_entry(reason, sizeof(reason), 2, "type", S("\xc3\x28"), "data",
                 S("{}")) < 0 &&
           strstr(reason, "field type: invalid UTF-8 at byte 0") != NULL,
       "invalid UTF-8 in the type refused: '%s'", reason);

    type->destroy(sink);
    return done_testing();
}
