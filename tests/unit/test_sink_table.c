/*
 * test_sink_table.c: the table sink without a database: the SOURCE and
 * table_key errors create() reports (with file and line), the DDL of
 * table_create = yes, and what prepare() refuses, with which reason.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "shared/config.h"
#include "tests/unit/sink_entry.h"
#include "tests/unit/tap.h"
#include "worker/sink.h"

static struct config cfg;
static const struct sink_type *type;

/* Set the columns: n pairs of name, source (lines 10, 11, ...). */
static void
set_columns(int n, ...)
{
    va_list ap;

    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        strcpy(cfg.columns[i].name, va_arg(ap, const char *));
        strcpy(cfg.columns[i].value, va_arg(ap, const char *));
        cfg.columns[i].line = (unsigned)(10 + i);
    }
    va_end(ap);
    cfg.ncolumns = n;
}

/* create() and destroy(); returns 1 when created, err set otherwise. */
static int
try_create(char *err, size_t errlen)
{
    struct sink *s;

    err[0] = '\0';
    s = type->create(&cfg, err, errlen);
    if (s == NULL)
        return 0;
    type->destroy(s);
    return 1;
}

/* prepare() one entry of n field/value pairs; 0/-1, reason set. */
static int
try_entry(struct sink *sink, char *reason, size_t reasonlen, int n, ...)
{
    struct stream_field fields[8];
    va_list ap;

    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        fields[i].name = va_arg(ap, const char *);
        fields[i].name_len = strlen(fields[i].name);
        fields[i].value = va_arg(ap, const char *);
        fields[i].value_len = strlen(fields[i].value);
    }
    va_end(ap);
    return sink_try_fields(type, sink, fields, (size_t)n, reason, reasonlen);
}

int
main(void)
{
    char err[512], reason[SINK_REASON_MAX];
    struct sink *sink;

    config_defaults(&cfg);
    strcpy(cfg.file, "/etc/sluice.conf");
    strcpy(cfg.sink, "table");
    strcpy(cfg.table, "shop.orders");
    strcpy(cfg.table_key, "order_id, stream_id");
    type = sink_type_find("table");
    ok(type != NULL, "the table sink is registered");

    set_columns(4, "order_id", "data.$.order_id", "sku", "data.$.items[0].sku",
                "stream_id", "$id", "at", "$time");
    ok(try_create(err, sizeof(err)), "created: JSON paths, $id, $time (%s)",
       err);

    /* bad sources name the file, the line and the column */
    static const struct {
        const char *source, *why;
    } bad[] = {
        {"$idd", "/etc/sluice.conf:11: column.sku: unknown source '$idd'"},
        {".$.a", "/etc/sluice.conf:11: column.sku: no field name before '.$'"},
        {"data.$.items[x]", "/etc/sluice.conf:11: column.sku: '[' must hold "
                            "an array index"},
        {"data.$.items[0", "/etc/sluice.conf:11: column.sku: array index not "
                           "closed by ']'"},
        {"data.$..a", "/etc/sluice.conf:11: column.sku: empty member name"},
        {"data.$a", "/etc/sluice.conf:11: column.sku: expected '.member' or "
                    "'[index]' at character 1"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        strcpy(cfg.columns[1].value, bad[i].source);
        ok(!try_create(err, sizeof(err)) &&
               strncmp(err, bad[i].why, strlen(bad[i].why)) == 0,
           "source %s refused: '%s'", bad[i].source, err);
    }
    strcpy(cfg.columns[1].value, "data.$.items[0].sku");
    cfg.columns[1].line = 0;
    strcpy(cfg.columns[1].value, "$nope");
    ok(!try_create(err, sizeof(err)) &&
           strncmp(err, "command line: column.sku:", 25) == 0,
       "a source from the command line says so: '%s'", err);
    strcpy(cfg.columns[1].value, "data.$.items[0].sku");
    cfg.columns[1].line = 11;

    /* table_key */
    strcpy(cfg.table_key, "order_id,nope");
    ok(!try_create(err, sizeof(err)) &&
           strcmp(err, "table_key: nope is not a mapped column (give it a "
                       "source: column.nope = SOURCE)") == 0,
       "a key column without a source refused: '%s'", err);
    strcpy(cfg.table_key, "order_id,order_id");
    ok(!try_create(err, sizeof(err)) &&
           strcmp(err, "table_key: order_id is named twice") == 0,
       "a key column named twice refused: '%s'", err);
    strcpy(cfg.table_key, "order_id,");
    ok(!try_create(err, sizeof(err)) && strstr(err, "table_key:") == err,
       "a trailing comma refused: '%s'", err);
    strcpy(cfg.table_key, " order_id ,stream_id ");
    ok(try_create(err, sizeof(err)), "blanks around key names are fine (%s)",
       err);

    /* the DDL */
    sink = type->create(&cfg, err, sizeof(err));
    is_str(type->ddl_for(sink), "SELECT 1",
           "table_create = no: --init-schema does nothing");
    type->destroy(sink);
    strcpy(cfg.table_create, "yes");
    sink = type->create(&cfg, err, sizeof(err));
    is_str(type->ddl_for(sink),
           "CREATE SCHEMA IF NOT EXISTS \"shop\"; CREATE TABLE IF NOT EXISTS "
           "\"shop\".\"orders\" (\"order_id\" text, \"sku\" text, "
           "\"stream_id\" text, \"at\" timestamptz, PRIMARY KEY "
           "(\"order_id\", \"stream_id\"))",
           "table_create = yes: text columns, $time timestamptz, the key");

    /* prepare() */
    ok(try_entry(sink, reason, sizeof(reason), 1, "data",
                 "{\"order_id\": 7, \"items\": [{\"sku\": \"a\\tb\"}]}") == 0,
       "a JSON object is accepted");
    ok(try_entry(sink, reason, sizeof(reason), 1, "other", "x") == 0,
       "an entry without the field is accepted (NULLs)");
    ok(try_entry(sink, reason, sizeof(reason), 1, "data", "[1, 2]") == 0,
       "JSON that is not an object is accepted (the paths lead nowhere)");
    ok(try_entry(sink, reason, sizeof(reason), 1, "data", "{\"order_id\": ") <
               0 &&
           strncmp(reason, "field data: ", 12) == 0,
       "a field that is not JSON refused: '%s'", reason);
    type->destroy(sink);

    set_columns(2, "order_id", "order_id", "stream_id", "$id");
    sink = type->create(&cfg, err, sizeof(err));
    ok(sink != NULL, "created with a plain field");
    ok(try_entry(sink, reason, sizeof(reason), 1, "order_id", "\xc3\x28") < 0 &&
           strstr(reason, "field order_id: invalid UTF-8 at byte 0") != NULL,
       "invalid UTF-8 in a field refused: '%s'", reason);
    type->destroy(sink);
    return done_testing();
}
