/*
 * sink.c: the registry of sinks, and the field lookup every sink uses.
 */
#include <stdio.h>
#include <string.h>

#include "shared/json.h"
#include "shared/pg_conn.h"
#include "worker/sink.h"

extern const struct sink_type sink_atproto_type;
extern const struct sink_type sink_function_type;
extern const struct sink_type sink_plugin_type;
extern const struct sink_type sink_raw_type;
extern const struct sink_type sink_table_type;

static const struct sink_type *const sink_types[] = {
    &sink_atproto_type, &sink_function_type, &sink_plugin_type,
    &sink_raw_type,     &sink_table_type,
};

const struct sink_type *
sink_type_find(const char *name)
{
    for (size_t i = 0; i < sizeof(sink_types) / sizeof(sink_types[0]); i++)
        if (strcmp(sink_types[i]->name, name) == 0)
            return sink_types[i];
    return NULL;
}

const struct stream_field *
stream_entry_field(const struct stream_entry *e, const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; i < e->nfields; i++)
        if (e->fields[i].name_len == len &&
            memcmp(e->fields[i].name, name, len) == 0)
            return &e->fields[i];
    return NULL;
}

enum sink_result
sink_result_of_pg(PGconn *conn, const PGresult *res, char *err, size_t errlen)
{
    switch (pg_fault_of(conn, res, err, errlen)) {
    case PG_FAULT_NONE:
        return SINK_OK;
    case PG_FAULT_DATA:
        return SINK_DATA_ERROR;
    default:
        return SINK_RETRY;
    }
}

int
sink_quote_name(const char *name, char *out, size_t outlen)
{
    size_t n = 0;

    if (name[0] == '\0')
        return -1;
    for (const char *p = name;; p++) {
        if (n + 4 >= outlen)
            return -1;
        if (p == name || p[-1] == '.')
            out[n++] = '"';
        if (*p == '\0' || *p == '.') {
            out[n++] = '"';
            if (*p == '\0')
                break;
            out[n++] = '.';
            continue;
        }
        if (*p == '"')
            out[n++] = '"';
        out[n++] = *p;
    }
    out[n] = '\0';
    return 0;
}

int
sink_field_check(const char *what, const char *name, size_t namelen,
                 const char *s, size_t len, char *reason, size_t reasonlen)
{
    size_t bad = 0;

    if (utf8_valid(s, len, &bad))
        return 0;
    snprintf(reason, reasonlen, "field %.*s: %s at byte %zu of its %s",
             (int)(namelen > 64 ? 64 : namelen), name,
             bad < len && s[bad] == '\0' ? "NUL byte" : "invalid UTF-8", bad,
             what);
    return -1;
}
