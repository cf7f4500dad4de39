/*
 * sink_function.c: the function sink, the user's own SQL between the
 * stream and the database.
 *
 * Each batch goes to one PostgreSQL function, named by the setting
 * `function`, with the signature fn(entries jsonb), as one jsonb array in
 * stream order:
 *
 *   [{"id": "<stream ID>", "fields": {"<name>": "<value>", ...}}, ...]
 *
 * every value a string, as it is in the stream. The call runs inside the
 * batch's transaction, so the entries are acked only after what the
 * function did has committed. The worker may give it the same entry twice
 * (a redelivery) and entries out of order (several workers): the stream
 * ID lets the function write idempotently (ON CONFLICT (stream_id) DO
 * NOTHING on a table of the IDs it applied, say).
 *
 * What an error means: an exception the function raises (RAISE
 * EXCEPTION and the other PL/pgSQL conditions, SQLSTATE class P0) and a
 * value PostgreSQL refuses (classes 22, 23, 54) are the data's fault:
 * the worker splits the batch until the entry is alone and dead-letters
 * it with the message. Everything else (a lost connection, a deadlock, a
 * table the function lacks: class 42) is retried and never
 * dead-lettered, as for the other sinks.
 *
 * A function that does not exist with that signature is the operator's
 * to fix: on_connect() finds it (to_regprocedure) and the worker ends
 * with the configuration error's exit code, which makes the supervisor
 * wait for a reload instead of restarting it in a loop.
 *
 * prepare() writes each entry's object once, into an arena that lives as
 * long as the batch; apply() joins the objects of the entries it is given
 * (any subset: the worker splits) and runs one prepared statement.
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

#define FN_CALL_STMT "sluice_function_call"

struct fn_item {
    size_t off, len; /* the entry's JSON object, in the arena */
};

struct fn_sink {
    struct sink base;
    char name[CONFIG_STR_MAX];       /* as configured: [schema.]name */
    char where[CONFIG_STR_MAX + 16]; /* where it was set: FILE:LINE */
    char quoted[CONFIG_STR_MAX + 8];
    char call_sql[CONFIG_STR_MAX + 64];
    struct buf arena;
    struct fn_item *items;
    size_t nitems, items_cap, live;
    struct buf batch; /* apply()'s array */
};

static void fn_destroy(struct sink *sink);

static struct sink *
fn_create(const struct config *cfg, char *err, size_t errlen)
{
    struct fn_sink *fs = calloc(1, sizeof(*fs));

    if (fs == NULL) {
        snprintf(err, errlen, "function sink: out of memory");
        return NULL;
    }
    strlcpy(fs->name, cfg->function, sizeof(fs->name));
    config_key_where(cfg, "function", fs->where, sizeof(fs->where));
    if (sink_quote_name(cfg->function, fs->quoted, sizeof(fs->quoted)) < 0) {
        snprintf(err, errlen, "function: not a usable function name");
        free(fs);
        return NULL;
    }
    snprintf(fs->call_sql, sizeof(fs->call_sql), "SELECT %s($1::jsonb)",
             fs->quoted);
    return &fs->base;
}

static void
fn_destroy(struct sink *sink)
{
    struct fn_sink *fs = (struct fn_sink *)sink;

    if (fs == NULL)
        return;
    free(fs->items);
    buf_free(&fs->arena);
    buf_free(&fs->batch);
    free(fs);
}

static enum sink_result
fn_on_connect(struct sink *sink, PGconn *conn, char *err, size_t errlen)
{
    struct fn_sink *fs = (struct fn_sink *)sink;
    char sig[CONFIG_STR_MAX + 16];
    const char *values[1] = {sig};
    PGresult *res;
    enum sink_result r;

    snprintf(sig, sizeof(sig), "%s(jsonb)", fs->quoted);
    res = pg_exec_params(conn, "SELECT to_regprocedure($1) IS NOT NULL", 1,
                         values);
    r = sink_result_of_pg(conn, res, err, errlen);
    if (r == SINK_OK && PQntuples(res) == 1 &&
        strcmp(PQgetvalue(res, 0, 0), "f") == 0) {
        PQclear(res);
        snprintf(err, errlen,
                 "%s: function: %s(entries jsonb) does not exist in this "
                 "database (create it, or name another; sink = function)",
                 fs->where, fs->name);
        return SINK_CONFIG;
    }
    PQclear(res);
    if (r != SINK_OK)
        return SINK_RETRY;
    res = PQprepare(conn, FN_CALL_STMT, fs->call_sql, 1, NULL);
    r = sink_result_of_pg(conn, res, err, errlen);
    PQclear(res);
    return r == SINK_OK ? SINK_OK : SINK_RETRY;
}

static int
fn_prepare(struct sink *sink, struct stream_entry *e, char *reason,
           size_t reasonlen)
{
    struct fn_sink *fs = (struct fn_sink *)sink;
    struct buf *a = &fs->arena;
    size_t start = a->len;

    for (size_t i = 0; i < e->nfields; i++) {
        const struct stream_field *f = &e->fields[i];
        if (sink_field_check("name", f->name, f->name_len, f->name, f->name_len,
                             reason, reasonlen) < 0 ||
            sink_field_check("value", f->name, f->name_len, f->value,
                             f->value_len, reason, reasonlen) < 0)
            return -1;
    }
    if (fs->nitems == fs->items_cap) {
        size_t cap = fs->items_cap ? 2 * fs->items_cap : 256;
        struct fn_item *it = realloc(fs->items, cap * sizeof(*it));
        if (it == NULL)
            goto oom;
        fs->items = it;
        fs->items_cap = cap;
    }
    if (buf_reserve(a, 32) < 0)
        goto oom;
    memcpy(a->p + a->len, "{\"id\":", 6);
    a->len += 6;
    if (json_append_string(a, e->id, strlen(e->id)) < 0 ||
        buf_reserve(a, 16) < 0)
        goto oom;
    memcpy(a->p + a->len, ",\"fields\":{", 11);
    a->len += 11;
    for (size_t i = 0; i < e->nfields; i++) {
        const struct stream_field *f = &e->fields[i];
        if ((i > 0 && buf_reserve(a, 1) < 0))
            goto oom;
        if (i > 0)
            a->p[a->len++] = ',';
        if (json_append_string(a, f->name, f->name_len) < 0 ||
            buf_reserve(a, 1) < 0)
            goto oom;
        a->p[a->len++] = ':';
        if (json_append_string(a, f->value, f->value_len) < 0)
            goto oom;
    }
    if (buf_reserve(a, 2) < 0)
        goto oom;
    a->p[a->len++] = '}';
    a->p[a->len++] = '}';
    fs->items[fs->nitems].off = start;
    fs->items[fs->nitems].len = a->len - start;
    e->sink_state = (void *)(uintptr_t)(++fs->nitems);
    fs->live++;
    return 0;
oom:
    a->len = start;
    snprintf(reason, reasonlen, "function sink: out of memory");
    return -1;
}

static enum sink_result
fn_apply(struct sink *sink, PGconn *conn, struct stream_entry *const *entries,
         size_t n, char *err, size_t errlen)
{
    struct fn_sink *fs = (struct fn_sink *)sink;
    struct buf *b = &fs->batch;
    const char *values[1];
    PGresult *res;
    enum sink_result r;

    if (n == 0)
        return SINK_OK;
    b->len = 0;
    for (size_t i = 0; i < n; i++) {
        const struct fn_item *it =
            &fs->items[(uintptr_t)entries[i]->sink_state - 1];
        if (buf_reserve(b, it->len + 3) < 0) {
            snprintf(err, errlen, "function sink: out of memory");
            return SINK_RETRY;
        }
        b->p[b->len++] = i == 0 ? '[' : ',';
        memcpy(b->p + b->len, fs->arena.p + it->off, it->len);
        b->len += it->len;
    }
    b->p[b->len++] = ']';
    b->p[b->len] = '\0';
    values[0] = b->p;
    res = pg_exec_prepared(conn, FN_CALL_STMT, 1, values);
    r = sink_result_of_pg(conn, res, err, errlen);
    if (r == SINK_RETRY && res != NULL) {
        /* an exception the function raised is the entry's fault */
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state != NULL && strncmp(state, "P0", 2) == 0)
            r = SINK_DATA_ERROR;
    }
    PQclear(res);
    return r;
}

static void
fn_release(struct sink *sink, struct stream_entry *e)
{
    struct fn_sink *fs = (struct fn_sink *)sink;

    if (e->sink_state == NULL)
        return;
    e->sink_state = NULL;
    if (fs->live > 0 && --fs->live == 0) {
        /* the batch is done: reuse the arena from the start */
        fs->arena.len = 0;
        fs->nitems = 0;
    }
}

const struct sink_type sink_function_type = {
    .name = "function",
    .create = fn_create,
    .destroy = fn_destroy,
    /* nothing of its own: the user's function and tables are the schema */
    .ddl = "SELECT 1",
    .on_connect = fn_on_connect,
    .prepare = fn_prepare,
    .apply = fn_apply,
    .release = fn_release,
};
