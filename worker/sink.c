/*
 * sink.c: the registry of sinks, and what several sinks share: the field
 * lookup, the classing of PostgreSQL's answers, quoting a name, the UTF-8
 * check of a field, and COPY's text format and its sending.
 */
#include <stdint.h>
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

/* 1 for the bytes COPY's text format needs escaped. */
static const unsigned char copy_special[256] = {
    ['\\'] = 1,
    ['\t'] = 1,
    ['\n'] = 1,
    ['\r'] = 1,
};

int
sink_copy_text(struct buf *b, const char *s, size_t len)
{
    char *w;
    size_t i = 0;

    if (buf_reserve(b, 2 * len + 1) < 0)
        return -1;
    w = b->p + b->len;
    /* runs of plain bytes are copied whole */
    while (i < len) {
        size_t run = i;
        while (run < len && !copy_special[(unsigned char)s[run]])
            run++;
        memcpy(w, s + i, run - i);
        w += run - i;
        if (run == len)
            break;
        *w++ = '\\';
        switch (s[run]) {
        case '\t':
            *w++ = 't';
            break;
        case '\n':
            *w++ = 'n';
            break;
        case '\r':
            *w++ = 'r';
            break;
        default:
            *w++ = '\\';
        }
        i = run + 1;
    }
    b->len = (size_t)(w - b->p);
    return 0;
}

enum sink_result
sink_copy_in(PGconn *conn, const char *copy_sql, const char *what,
             const char *base, const void *spans, size_t span_size,
             struct stream_entry *const *entries, size_t n, char *err,
             size_t errlen)
{
    PGresult *res = pg_exec(conn, copy_sql);
    enum sink_result r;
    int sent = 1;

    if (PQresultStatus(res) != PGRES_COPY_IN) {
        r = sink_result_of_pg(conn, res, err, errlen);
        PQclear(res);
        return r == SINK_OK ? SINK_RETRY : r;
    }
    PQclear(res);
    for (size_t i = 0; i < n && sent; i++) {
        const size_t *span =
            (const void *)((const char *)spans +
                           ((uintptr_t)entries[i]->sink_state - 1) * span_size);
        sent = PQputCopyData(conn, base + span[0], (int)span[1]) == 1;
    }
    if (PQputCopyEnd(conn, sent ? NULL : "sluice: sending failed") != 1)
        sent = 0;
    r = SINK_OK;
    while ((res = pg_next_result(conn)) != NULL) {
        if (r == SINK_OK)
            r = sink_result_of_pg(conn, res, err, errlen);
        PQclear(res);
    }
    if (!sent && r == SINK_OK) {
        snprintf(err, errlen, "COPY to %s: %s", what, PQerrorMessage(conn));
        r = SINK_RETRY;
    }
    return r;
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
