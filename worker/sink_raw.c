/*
 * sink_raw.c: the raw sink, a plain Redis-Streams-to-PostgreSQL pipeline.
 *
 * Every entry becomes one row of raw_table (default "events", etc/sql/
 * raw.sql): its stream ID (unique: a redelivery inserts nothing), its type
 * (the raw_type_field field, NULL when absent), and a jsonb payload: the
 * entry's `data` field when it has one (it must be a JSON object; "\u0000"
 * escapes are removed, PostgreSQL refuses them), otherwise an object of
 * all its fields with their values as strings. Anything else is refused
 * by prepare() with a reason, and the worker dead-letters it.
 *
 * prepare() does all the decoding and escaping once per entry, into an
 * arena that lives as long as the batch; apply() only concatenates the
 * prepared pieces into three PostgreSQL array literals and runs one
 * prepared statement:
 *
 *   INSERT INTO t (stream_id, type, payload)
 *   SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[])
 *   ON CONFLICT (stream_id) DO NOTHING
 *
 * so a batch is one round trip whatever its size, and any subset of a
 * batch can be applied alone (the worker splits batches to isolate an
 * entry PostgreSQL refuses). All buffers are kept across batches.
 *
 * The DDL: raw.sql names the table events; for another raw_table the sink
 * builds its DDL at create() by rewriting the identifiers `events` and
 * `events_*` of the template to the configured name (ddl_for()).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bsd/string.h>

#include "shared/buf.h"
#include "shared/json.h"
#include "shared/pg_conn.h"
#include "worker/sink.h"

extern const char sql_raw[];

#define RAW_INSERT_STMT "sluice_raw_insert"

/* One prepared entry: three array elements, already quoted and escaped
 * for a PostgreSQL array literal, at offsets in the arena. */
struct raw_item {
    size_t id_off, id_len;
    size_t type_off, type_len;
    size_t payload_off, payload_len;
};

struct raw_sink {
    struct sink base;
    char table[300]; /* quoted, maybe schema-qualified */
    char type_field[128];
    char *insert_sql;
    char *ddl;        /* NULL: the template as it is */
    struct buf arena; /* escaped elements of the live entries */
    struct raw_item *items;
    size_t nitems, items_cap, live;
    struct buf scratch;              /* JSON text before array escaping */
    struct buf ids, types, payloads; /* apply()'s array literals */
};

/* Append s as a double-quoted array element ("a\"b"). 0 or -1 (memory). */
static int
append_array_element(struct buf *b, const char *s, size_t len)
{
    char *w;

    if (buf_reserve(b, 2 * len + 2) < 0)
        return -1;
    w = b->p + b->len;
    *w++ = '"';
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '"' || c == '\\')
            *w++ = '\\';
        *w++ = c;
    }
    *w++ = '"';
    b->len = (size_t)(w - b->p);
    return 0;
}

static int
is_ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_';
}

/*
 * Rewrite the template's identifiers for raw_table: `events` becomes the
 * quoted table name, `events_xyz` (a constraint or index) becomes
 * "<table's last part>_xyz". Returns a malloc'ed text or NULL.
 */
static char *
raw_ddl_build(const char *tmpl, const char *table, const char *quoted)
{
    static const char word[] = "events";
    const size_t wlen = sizeof(word) - 1;
    const char *last = strrchr(table, '.');
    struct buf out = {0};

    last = last ? last + 1 : table;
    for (const char *p = tmpl; *p != '\0';) {
        if (strncmp(p, word, wlen) == 0 &&
            (p == tmpl || !is_ident_char(p[-1])) &&
            (p[wlen] == '_' || !is_ident_char(p[wlen]))) {
            if (p[wlen] == '_') {
                const char *q = p + wlen;
                size_t slen, llen = strlen(last);
                while (is_ident_char(*q))
                    q++;
                slen = (size_t)(q - (p + wlen));
                if (buf_reserve(&out, llen + slen + 3) < 0)
                    goto oom;
                out.p[out.len++] = '"';
                memcpy(out.p + out.len, last, llen);
                out.len += llen;
                memcpy(out.p + out.len, p + wlen, slen);
                out.len += slen;
                out.p[out.len++] = '"';
                p = q;
            } else {
                size_t qlen = strlen(quoted);
                if (buf_reserve(&out, qlen) < 0)
                    goto oom;
                memcpy(out.p + out.len, quoted, qlen);
                out.len += qlen;
                p += wlen;
            }
            continue;
        }
        if (buf_reserve(&out, 1) < 0)
            goto oom;
        out.p[out.len++] = *p++;
    }
    if (buf_reserve(&out, 1) < 0)
        goto oom;
    out.p[out.len] = '\0';
    return out.p;
oom:
    buf_free(&out);
    return NULL;
}

static void raw_destroy(struct sink *sink);

static struct sink *
raw_create(const struct config *cfg, char *err, size_t errlen)
{
    struct raw_sink *rs = calloc(1, sizeof(*rs));
    size_t sqllen;

    if (rs == NULL) {
        snprintf(err, errlen, "raw sink: out of memory");
        return NULL;
    }
    if (sink_quote_name(cfg->raw_table, rs->table, sizeof(rs->table)) < 0) {
        snprintf(err, errlen, "raw_table: not a usable table name");
        free(rs);
        return NULL;
    }
    strlcpy(rs->type_field, cfg->raw_type_field, sizeof(rs->type_field));
    sqllen = strlen(rs->table) + 200;
    rs->insert_sql = malloc(sqllen);
    if (rs->insert_sql == NULL)
        goto oom;
    snprintf(rs->insert_sql, sqllen,
             "INSERT INTO %s (stream_id, type, payload) "
             "SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[]) "
             "ON CONFLICT (stream_id) DO NOTHING",
             rs->table);
    if (strcmp(cfg->raw_table, "events") != 0) {
        rs->ddl = raw_ddl_build(sql_raw, cfg->raw_table, rs->table);
        if (rs->ddl == NULL)
            goto oom;
    }
    return &rs->base;
oom:
    snprintf(err, errlen, "raw sink: out of memory");
    raw_destroy(&rs->base);
    return NULL;
}

static void
raw_destroy(struct sink *sink)
{
    struct raw_sink *rs = (struct raw_sink *)sink;

    if (rs == NULL)
        return;
    free(rs->insert_sql);
    free(rs->ddl);
    free(rs->items);
    buf_free(&rs->arena);
    buf_free(&rs->scratch);
    buf_free(&rs->ids);
    buf_free(&rs->types);
    buf_free(&rs->payloads);
    free(rs);
}

static const char *
raw_ddl_for(struct sink *sink)
{
    struct raw_sink *rs = (struct raw_sink *)sink;

    return rs->ddl ? rs->ddl : sql_raw;
}

static enum sink_result
raw_on_connect(struct sink *sink, PGconn *conn, char *err, size_t errlen)
{
    struct raw_sink *rs = (struct raw_sink *)sink;
    PGresult *res = PQprepare(conn, RAW_INSERT_STMT, rs->insert_sql, 3, NULL);
    enum sink_result r = sink_result_of_pg(conn, res, err, errlen);

    PQclear(res);
    /* A missing table is the operator's to fix: retried, never dead
     * letters. */
    return r == SINK_OK ? SINK_OK : SINK_RETRY;
}

/*
 * PostgreSQL refuses a raw control character (below 0x20) inside a JSON
 * string, which cJSON lets through: the offset of the first one, or -1.
 * Catching it here gives a clear reason and spares the worker a split.
 */
static long
json_control_in_string(const char *s, size_t len)
{
    int in_string = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!in_string) {
            in_string = c == '"';
        } else if (c == '\\') {
            i++;
        } else if (c == '"') {
            in_string = 0;
        } else if (c < 0x20) {
            return (long)i;
        }
    }
    return -1;
}

static int
raw_prepare(struct sink *sink, struct stream_entry *e, char *reason,
            size_t reasonlen)
{
    struct raw_sink *rs = (struct raw_sink *)sink;
    const struct stream_field *data = stream_entry_field(e, "data");
    const struct stream_field *type = stream_entry_field(e, rs->type_field);
    struct raw_item it;
    size_t arena_mark = rs->arena.len;

    if (rs->nitems == rs->items_cap) {
        size_t cap = rs->items_cap ? rs->items_cap * 2 : 256;
        struct raw_item *n = realloc(rs->items, cap * sizeof(*n));
        if (n == NULL)
            goto oom;
        rs->items = n;
        rs->items_cap = cap;
    }

    rs->scratch.len = 0;
    if (data != NULL) {
        char why[SINK_REASON_MAX];
        cJSON *tree =
            json_parse(data->value, data->value_len, why, sizeof(why));
        if (tree == NULL) {
            snprintf(reason, reasonlen, "data: %s", why);
            return -1;
        }
        if (!cJSON_IsObject(tree)) {
            snprintf(reason, reasonlen, "data: not a JSON object but %s",
                     cJSON_IsArray(tree)    ? "an array"
                     : cJSON_IsString(tree) ? "a string"
                     : cJSON_IsNumber(tree) ? "a number"
                     : cJSON_IsBool(tree)   ? "a boolean"
                                            : "null");
            cJSON_Delete(tree);
            return -1;
        }
        cJSON_Delete(tree);
        if (buf_reserve(&rs->scratch, data->value_len + 1) < 0)
            goto oom;
        rs->scratch.len =
            json_strip_nul_escapes(data->value, data->value_len, rs->scratch.p);
        long bad = json_control_in_string(rs->scratch.p, rs->scratch.len);
        if (bad >= 0) {
            snprintf(reason, reasonlen,
                     "data: control character 0x%02x inside a JSON string "
                     "near byte %ld",
                     (unsigned char)rs->scratch.p[bad], bad);
            return -1;
        }
    } else {
        if (buf_reserve(&rs->scratch, 2) < 0)
            goto oom;
        rs->scratch.p[rs->scratch.len++] = '{';
        for (size_t i = 0; i < e->nfields; i++) {
            const struct stream_field *f = &e->fields[i];
            if (sink_field_check("name", f->name, f->name_len, f->name,
                                 f->name_len, reason, reasonlen) < 0 ||
                sink_field_check("value", f->name, f->name_len, f->value,
                                 f->value_len, reason, reasonlen) < 0)
                return -1;
            if (i > 0 && buf_reserve(&rs->scratch, 1) == 0)
                rs->scratch.p[rs->scratch.len++] = ',';
            if (json_append_string(&rs->scratch, f->name, f->name_len) < 0 ||
                buf_reserve(&rs->scratch, 1) < 0)
                goto oom;
            rs->scratch.p[rs->scratch.len++] = ':';
            if (json_append_string(&rs->scratch, f->value, f->value_len) < 0)
                goto oom;
        }
        if (buf_reserve(&rs->scratch, 1) < 0)
            goto oom;
        rs->scratch.p[rs->scratch.len++] = '}';
    }
    if (type != NULL &&
        sink_field_check("value", type->name, type->name_len, type->value,
                         type->value_len, reason, reasonlen) < 0)
        return -1;

    it.id_off = rs->arena.len;
    if (append_array_element(&rs->arena, e->id, strlen(e->id)) < 0)
        goto oom;
    it.id_len = rs->arena.len - it.id_off;
    it.type_off = rs->arena.len;
    if (type == NULL) {
        if (buf_reserve(&rs->arena, 4) < 0)
            goto oom;
        memcpy(rs->arena.p + rs->arena.len, "NULL", 4);
        rs->arena.len += 4;
    } else if (append_array_element(&rs->arena, type->value, type->value_len) <
               0) {
        goto oom;
    }
    it.type_len = rs->arena.len - it.type_off;
    it.payload_off = rs->arena.len;
    if (append_array_element(&rs->arena, rs->scratch.p, rs->scratch.len) < 0)
        goto oom;
    it.payload_len = rs->arena.len - it.payload_off;

    rs->items[rs->nitems] = it;
    e->sink_state = (void *)(uintptr_t)(rs->nitems + 1);
    rs->nitems++;
    rs->live++;
    return 0;
oom:
    rs->arena.len = arena_mark;
    snprintf(reason, reasonlen, "out of memory while decoding");
    return -1;
}

/* Append "{a,b,c}" of one column of the entries. */
static int
build_array(struct raw_sink *rs, struct buf *out,
            struct stream_entry *const *entries, size_t n, int column)
{
    out->len = 0;
    if (buf_reserve(out, 2) < 0)
        return -1;
    out->p[out->len++] = '{';
    for (size_t i = 0; i < n; i++) {
        const struct raw_item *it =
            &rs->items[(uintptr_t)entries[i]->sink_state - 1];
        size_t off = column == 0   ? it->id_off
                     : column == 1 ? it->type_off
                                   : it->payload_off;
        size_t len = column == 0   ? it->id_len
                     : column == 1 ? it->type_len
                                   : it->payload_len;
        if (buf_reserve(out, len + 2) < 0)
            return -1;
        if (i > 0)
            out->p[out->len++] = ',';
        memcpy(out->p + out->len, rs->arena.p + off, len);
        out->len += len;
    }
    if (buf_reserve(out, 2) < 0)
        return -1;
    out->p[out->len++] = '}';
    out->p[out->len] = '\0';
    return 0;
}

static enum sink_result
raw_apply(struct sink *sink, PGconn *conn, struct stream_entry *const *entries,
          size_t n, char *err, size_t errlen)
{
    struct raw_sink *rs = (struct raw_sink *)sink;
    const char *values[3];
    PGresult *res;
    enum sink_result r;

    if (n == 0)
        return SINK_OK;
    if (build_array(rs, &rs->ids, entries, n, 0) < 0 ||
        build_array(rs, &rs->types, entries, n, 1) < 0 ||
        build_array(rs, &rs->payloads, entries, n, 2) < 0) {
        snprintf(err, errlen, "raw sink: out of memory");
        return SINK_RETRY;
    }
    values[0] = rs->ids.p;
    values[1] = rs->types.p;
    values[2] = rs->payloads.p;
    res = pg_exec_prepared(conn, RAW_INSERT_STMT, 3, values);
    r = sink_result_of_pg(conn, res, err, errlen);
    PQclear(res);
    return r;
}

static void
raw_release(struct sink *sink, struct stream_entry *e)
{
    struct raw_sink *rs = (struct raw_sink *)sink;

    if (e->sink_state == NULL)
        return;
    e->sink_state = NULL;
    if (rs->live > 0 && --rs->live == 0) {
        /* the batch is done: reuse the arena from the start */
        rs->arena.len = 0;
        rs->nitems = 0;
    }
}

const struct sink_type sink_raw_type = {
    .name = "raw",
    .create = raw_create,
    .destroy = raw_destroy,
    .ddl = sql_raw,
    .on_connect = raw_on_connect,
    .prepare = raw_prepare,
    .apply = raw_apply,
    .release = raw_release,
    .ddl_for = raw_ddl_for,
};
