/*
 * crash.c: a test plugin (tests/27-sink-plugin.t) that crashes the worker
 * on purpose. It writes the stream ID of each entry into a table
 * (plugin.table, default plugin_crash_entries: stream_id text PRIMARY
 * KEY), one statement a batch, idempotently; but an entry with the field
 * crash = 1 makes apply() kill its process before anything is written:
 * plugin.how = segv (the default: SIGSEGV) or abort (abort(), for the
 * sanitized build, where a SIGSEGV is reported as a sanitizer error).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <sluice/sink.h>

struct crash {
    int how_abort;
    char table[64];
    char *buf;
    size_t cap;
};

static void
crash_destroy(void *self)
{
    struct crash *c = self;

    if (c != NULL)
        free(c->buf);
    free(c);
}

static void *
crash_create(const struct sluice_option *opts, size_t nopts, char *err,
             size_t errlen)
{
    struct crash *c = calloc(1, sizeof(*c));

    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    strcpy(c->table, "plugin_crash_entries");
    for (size_t i = 0; i < nopts; i++) {
        if (strcmp(opts[i].name, "how") == 0 &&
            (strcmp(opts[i].value, "segv") == 0 ||
             strcmp(opts[i].value, "abort") == 0)) {
            c->how_abort = strcmp(opts[i].value, "abort") == 0;
        } else if (strcmp(opts[i].name, "table") == 0 &&
                   strspn(opts[i].value, "abcdefghijklmnopqrstuvwxyz_") ==
                       strlen(opts[i].value) &&
                   opts[i].value[0] != '\0' && strlen(opts[i].value) < 64) {
            strcpy(c->table, opts[i].value);
        } else {
            snprintf(err, errlen, "plugin.%s = %s: not understood",
                     opts[i].name, opts[i].value);
            crash_destroy(c);
            return NULL;
        }
    }
    return c;
}

static int
crash_apply(void *self, PGconn *conn, struct sluice_entry *const *entries,
            size_t n, char *err, size_t errlen)
{
    struct crash *c = self;
    char sql[160];
    const char *values[1];
    size_t len = 0;
    PGresult *res;
    int r = SLUICE_OK;

    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < entries[i]->nfields; k++) {
            const struct sluice_field *f = &entries[i]->fields[k];
            if (f->name_len == 5 && memcmp(f->name, "crash", 5) == 0 &&
                f->value_len == 1 && f->value[0] == '1') {
                if (c->how_abort)
                    abort();
                raise(SIGSEGV);
                abort(); /* SIGSEGV blocked or ignored */
            }
        }
    /* {"id","id",...}: stream IDs are digits and one dash */
    if (c->cap < n * 52 + 3) {
        char *p = realloc(c->buf, n * 52 + 3);
        if (p == NULL) {
            snprintf(err, errlen, "out of memory");
            return SLUICE_RETRY;
        }
        c->buf = p;
        c->cap = n * 52 + 3;
    }
    c->buf[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(c->buf + len, c->cap - len, "%s\"%.46s\"",
                                i ? "," : "", entries[i]->id);
    c->buf[len++] = '}';
    c->buf[len] = '\0';
    values[0] = c->buf;
    snprintf(sql, sizeof(sql),
             "INSERT INTO %s (stream_id) SELECT unnest($1::text[]) "
             "ON CONFLICT (stream_id) DO NOTHING",
             c->table);
    res = PQexecParams(conn, sql, 1, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(err, errlen, "%s", PQerrorMessage(conn));
        r = sluice_result_of_sqlstate(state);
    }
    PQclear(res);
    return r;
}

const struct sluice_sink_v1 sluice_sink_v1 = {
    .abi_version = SLUICE_SINK_ABI_VERSION,
    .struct_size = sizeof(struct sluice_sink_v1),
    .name = "crash",
    .create = crash_create,
    .destroy = crash_destroy,
    .apply = crash_apply,
};
