/*
 * required-fields.c: an example sink plugin for sluice (sink = plugin).
 *
 *   sink = plugin
 *   plugin = /usr/local/lib/sluice/required-fields.so
 *   plugin.required = order_id,user_id
 *   plugin.table = required_fields_entries     (the default)
 *
 * It keeps the entries that carry every field plugin.required names and
 * writes each one as a row of the table (required-fields.sql creates it):
 * the stream ID and the entry's fields as a jsonb object. An entry that
 * lacks one of the fields, or whose fields are not text jsonb can hold
 * (bad UTF-8, a NUL byte), is refused by prepare() and goes to the
 * dead-letter stream with a reason naming the field.
 *
 * Each batch is one statement: the entries go as one jsonb array
 * parameter and INSERT ... SELECT FROM jsonb_array_elements() writes them
 * all. ON CONFLICT (stream_id) DO NOTHING makes it idempotent: an entry
 * delivered again (a worker killed before its ack, a replay) changes
 * nothing, and the order of the entries does not matter.
 *
 * Written against <sluice/sink.h> only, in C11 with libpq: see README.md
 * beside it for how to build it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <sluice/sink.h>

#define RF_STMT      "required_fields_insert"
#define RF_NAME_MAX  64
#define RF_TABLE_MAX 128

struct rf {
    char **required; /* the field names, NUL-terminated */
    size_t nrequired;
    char table[RF_TABLE_MAX];
    char *json; /* apply()'s jsonb array, grown as needed */
    size_t len, cap;
};

static char *
rf_strndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);

    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static void
rf_destroy(void *self)
{
    struct rf *rf = self;

    if (rf == NULL)
        return;
    for (size_t i = 0; i < rf->nrequired; i++)
        free(rf->required[i]);
    free(rf->required);
    free(rf->json);
    free(rf);
}

/* [schema.]name of letters, digits and _ (so it needs no quoting). */
static int
rf_table_ok(const char *s)
{
    int dots = 0;
    size_t n = strlen(s);

    if (n == 0 || n >= RF_TABLE_MAX || s[0] == '.' || s[n - 1] == '.')
        return 0;
    for (const char *p = s; *p; p++) {
        if (*p == '.') {
            if (++dots > 1 || p[1] == '.')
                return 0;
        } else if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9') || *p == '_')) {
            return 0;
        }
    }
    return 1;
}

/* plugin.required = a, b, c: the names, spaces around them dropped. */
static int
rf_parse_required(struct rf *rf, const char *list, char *err, size_t errlen)
{
    const char *p = list;

    for (;;) {
        const char *start, *end;
        while (*p == ' ' || *p == '\t')
            p++;
        start = p;
        while (*p != '\0' && *p != ',')
            p++;
        end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (end == start) {
            snprintf(err, errlen,
                     "plugin.required: an empty field name in '%s' (a "
                     "comma-separated list of field names)",
                     list);
            return -1;
        }
        if ((size_t)(end - start) > RF_NAME_MAX) {
            snprintf(err, errlen,
                     "plugin.required: a field name longer than %d bytes",
                     RF_NAME_MAX);
            return -1;
        }
        char **r =
            realloc(rf->required, (rf->nrequired + 1) * sizeof(*rf->required));
        if (r == NULL)
            goto oom;
        rf->required = r;
        rf->required[rf->nrequired] = rf_strndup(start, (size_t)(end - start));
        if (rf->required[rf->nrequired] == NULL)
            goto oom;
        rf->nrequired++;
        if (*p == '\0')
            return 0;
        p++; /* the comma */
    }
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

static void *
rf_create(const struct sluice_option *opts, size_t nopts, char *err,
          size_t errlen)
{
    struct rf *rf = calloc(1, sizeof(*rf));
    int have_required = 0;

    if (rf == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    strcpy(rf->table, "required_fields_entries");
    for (size_t i = 0; i < nopts; i++) {
        if (strcmp(opts[i].name, "required") == 0) {
            if (have_required) {
                snprintf(err, errlen, "plugin.required: given twice");
                goto fail;
            }
            if (rf_parse_required(rf, opts[i].value, err, errlen) < 0)
                goto fail;
            have_required = 1;
        } else if (strcmp(opts[i].name, "table") == 0) {
            if (!rf_table_ok(opts[i].value)) {
                snprintf(err, errlen,
                         "plugin.table: '%s' is not a table name "
                         "([schema.]name of letters, digits and _)",
                         opts[i].value);
                goto fail;
            }
            strcpy(rf->table, opts[i].value);
        } else {
            snprintf(err, errlen,
                     "plugin.%s: unknown setting (this plugin knows "
                     "plugin.required and plugin.table)",
                     opts[i].name);
            goto fail;
        }
    }
    if (!have_required) {
        snprintf(err, errlen,
                 "plugin.required: missing (the fields every entry must "
                 "have, e.g. plugin.required = order_id,user_id)");
        goto fail;
    }
    return rf;
fail:
    rf_destroy(rf);
    return NULL;
}

/* The result of a failed statement, its message in err. */
static int
rf_failed(PGconn *conn, PGresult *res, char *err, size_t errlen)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    size_t n;

    snprintf(err, errlen, "%s%s%s", state ? state : "", state ? " " : "",
             msg && *msg ? msg : "no result");
    n = strlen(err);
    while (n > 0 && err[n - 1] == '\n')
        err[--n] = '\0';
    return sluice_result_of_sqlstate(state);
}

static int
rf_on_connect(void *self, PGconn *conn, char *err, size_t errlen)
{
    struct rf *rf = self;
    const char *values[1] = {rf->table};
    char sql[RF_TABLE_MAX + 256];
    PGresult *res;
    int r;

    res = PQexecParams(conn, "SELECT to_regclass($1) IS NOT NULL", 1, NULL,
                       values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rf_failed(conn, res, err, errlen);
        PQclear(res);
        return SLUICE_RETRY; /* whatever it was, not the data's fault */
    }
    r = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!r) {
        snprintf(err, errlen,
                 "table %s does not exist in this database (create it "
                 "with required-fields.sql, or name another with "
                 "plugin.table)",
                 rf->table);
        return SLUICE_CONFIG;
    }
    snprintf(sql, sizeof(sql),
             "INSERT INTO %s (stream_id, fields) "
             "SELECT e->>'id', e->'fields' "
             "FROM jsonb_array_elements($1::jsonb) AS e "
             "ON CONFLICT (stream_id) DO NOTHING",
             rf->table);
    res = PQprepare(conn, RF_STMT, sql, 1, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        int config = state != NULL && strncmp(state, "42", 2) == 0;
        rf_failed(conn, res, err, errlen);
        PQclear(res);
        /* a table without the columns or the unique key: the operator's
         * to fix, retrying would not help */
        return config ? SLUICE_CONFIG : SLUICE_RETRY;
    }
    PQclear(res);
    return SLUICE_OK;
}

/* Valid UTF-8 without NUL: what text and jsonb take. The offset of the
 * first bad byte, or len. */
static size_t
rf_utf8_bad(const unsigned char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        unsigned long cp;
        if (c == 0)
            return i;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            n = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            n = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            n = 3, cp = c & 0x07;
        else
            return i;
        if (len - i <= n)
            return i;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += n + 1;
    }
    return len;
}

static int
rf_prepare(void *self, struct sluice_entry *e, char *reason, size_t reasonlen)
{
    struct rf *rf = self;

    for (size_t r = 0; r < rf->nrequired; r++) {
        size_t len = strlen(rf->required[r]);
        size_t i;
        for (i = 0; i < e->nfields; i++)
            if (e->fields[i].name_len == len &&
                memcmp(e->fields[i].name, rf->required[r], len) == 0)
                break;
        if (i == e->nfields) {
            snprintf(reason, reasonlen, "missing required field %s",
                     rf->required[r]);
            return -1;
        }
    }
    for (size_t i = 0; i < e->nfields; i++) {
        const struct sluice_field *f = &e->fields[i];
        int in_name = rf_utf8_bad((const unsigned char *)f->name,
                                  f->name_len) != f->name_len;
        if (in_name || rf_utf8_bad((const unsigned char *)f->value,
                                   f->value_len) != f->value_len) {
            snprintf(reason, reasonlen,
                     "field %.*s: its %s is not valid UTF-8 text (or holds "
                     "a NUL byte)",
                     (int)(f->name_len > 64 ? 64 : f->name_len), f->name,
                     in_name ? "name" : "value");
            return -1;
        }
    }
    return 0;
}

/* Append n bytes to the JSON buffer. */
static int
rf_put(struct rf *rf, const char *s, size_t n)
{
    if (rf->len + n + 1 > rf->cap) {
        size_t cap = rf->cap ? rf->cap : 4096;
        while (cap < rf->len + n + 1)
            cap *= 2;
        char *p = realloc(rf->json, cap);
        if (p == NULL)
            return -1;
        rf->json = p;
        rf->cap = cap;
    }
    memcpy(rf->json + rf->len, s, n);
    rf->len += n;
    rf->json[rf->len] = '\0';
    return 0;
}

/* Append s[0..n) as a JSON string. */
static int
rf_put_string(struct rf *rf, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    if (rf_put(rf, "\"", 1) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        size_t elen = 0;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            elen = 2;
        } else if (c < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        } else {
            continue;
        }
        if (rf_put(rf, s + run, i - run) < 0 || rf_put(rf, esc, elen) < 0)
            return -1;
        run = i + 1;
    }
    if (rf_put(rf, s + run, n - run) < 0 || rf_put(rf, "\"", 1) < 0)
        return -1;
    return 0;
}

static int
rf_apply(void *self, PGconn *conn, struct sluice_entry *const *entries,
         size_t n, char *err, size_t errlen)
{
    struct rf *rf = self;
    const char *values[1];
    PGresult *res;
    int r = SLUICE_OK;

    rf->len = 0;
    if (rf_put(rf, "[", 1) < 0)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        const struct sluice_entry *e = entries[i];
        if ((i > 0 && rf_put(rf, ",", 1) < 0) ||
            rf_put(rf, "{\"id\":", 6) < 0 ||
            rf_put_string(rf, e->id, strlen(e->id)) < 0 ||
            rf_put(rf, ",\"fields\":{", 11) < 0)
            goto oom;
        for (size_t k = 0; k < e->nfields; k++) {
            const struct sluice_field *f = &e->fields[k];
            if ((k > 0 && rf_put(rf, ",", 1) < 0) ||
                rf_put_string(rf, f->name, f->name_len) < 0 ||
                rf_put(rf, ":", 1) < 0 ||
                rf_put_string(rf, f->value, f->value_len) < 0)
                goto oom;
        }
        if (rf_put(rf, "}}", 2) < 0)
            goto oom;
    }
    if (rf_put(rf, "]", 1) < 0)
        goto oom;

    values[0] = rf->json;
    res = PQexecPrepared(conn, RF_STMT, 1, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        r = rf_failed(conn, res, err, errlen);
    PQclear(res);
    return r;
oom:
    snprintf(err, errlen, "required-fields: out of memory");
    return SLUICE_RETRY;
}

const struct sluice_sink_v1 sluice_sink_v1 = {
    .abi_version = SLUICE_SINK_ABI_VERSION,
    .struct_size = sizeof(struct sluice_sink_v1),
    .name = "required-fields",
    .create = rf_create,
    .destroy = rf_destroy,
    .on_connect = rf_on_connect,
    .prepare = rf_prepare,
    .apply = rf_apply,
    /* prepare() attaches nothing to an entry: no release() */
};
