/*
 * sink_table.c: the table sink, entry fields into the columns of a table
 * of the user's, without code.
 *
 * The settings name the table (`table`), the source of each column
 * (`column.NAME = SOURCE`), the columns that make a row unique
 * (`table_key`) and what a row whose key exists already does
 * (`table_on_conflict`). A SOURCE is
 *
 *   FIELD               the field's value as it is (a column whose field
 *                       the entry lacks gets NULL)
 *   FIELD.$.a.b[0].c    a JSON path into the field's value (split at the
 *                       first ".$"; members by .name, array elements by
 *                       [index] from 0). A string gives its text, a
 *                       number or boolean its JSON spelling, an object or
 *                       array its JSON text; null, or a path that leads
 *                       nowhere, gives NULL. Numbers are cJSON's doubles:
 *                       integers past 2^53 lose digits. A field that is
 *                       not JSON refuses the entry (a dead letter naming
 *                       it).
 *   $id                 the entry's place in the stream: its ID, or for
 *                       an entry sluice-deadletter requeued, the ID it
 *                       first had (its orig_id)
 *   $time               the time of that ID (its milliseconds), as a
 *                       timestamptz
 *
 * A column left without a value (NULL) takes its DEFAULT when the table
 * gives it one (as an INSERT that leaves the column out would), else
 * NULL; a NOT NULL column without either refuses the entry.
 *
 * create() parses every SOURCE and table_key (each key column must be a
 * mapped one), so that a typo stops the worker at once with the file and
 * line (exit 78). on_connect() reads the table's columns from the catalog:
 * a mapped column the table lacks, a missing table, a NOT NULL column
 * without a DEFAULT that nothing maps (every entry would be refused), or
 * a table_key that no unique index or primary key has exactly (ON
 * CONFLICT would fail with 42P10 on every batch) is SINK_CONFIG, with
 * file and line where there is one: retrying can't mend it, and dead-
 * lettering every entry would lose the stream. It then creates the
 * session's staging table, every column text,
 *
 *   pg_temp.sluice_table_stage (ord_ms numeric, ord_seq numeric,
 *                               c1 text, ..., cN text)
 *                               ON COMMIT DELETE ROWS
 *
 * and prepares the one statement that moves a batch from it into the
 * table. prepare() turns each entry into its line of COPY text (escaped,
 * \N for NULL) in an arena that lives as long as the batch; apply() sends
 * the lines of the entries it is given (any subset: the worker splits) in
 * one COPY, then runs the statement. PostgreSQL converts each value with
 * the column type's own input function (CAST(text AS type), without the
 * type's modifier, so that assigning it to a varchar(n) or numeric(p,s)
 * column checks it as an INSERT would). Rows go in key order, so that two
 * workers lock the same keys in the same order:
 *
 *   table_on_conflict = nothing, no $id column mapped:
 *     INSERT INTO t AS sluice_old (cols)
 *     SELECT CAST(s.c1 AS type1), ... FROM pg_temp.sluice_table_stage s
 *     ORDER BY key, s.ord_ms, s.ord_seq
 *     ON CONFLICT (key) DO NOTHING
 *   (the row first written stays: within a batch the oldest entry; across
 *   workers the first batch to commit)
 *
 *   table_on_conflict = update:
 *     INSERT INTO t AS sluice_old (cols)
 *     SELECT DISTINCT ON (key) ... ORDER BY key, s.ord_ms DESC, s.ord_seq DESC
 *     ON CONFLICT (key) DO UPDATE SET c = EXCLUDED.c, ... [WHERE guard]
 *   (DO UPDATE may touch a row once per statement: the newest entry of
 *   the batch for each key). Without a $id column the last batch to
 *   commit wins, which is not always the newest entry when several
 *   workers run or an entry is redelivered. With one, the guard compares
 *   the stored ID with the new one as (ms, seq) numbers and updates only
 *   when the new entry is newer (or the stored value is no stream ID): the
 *   final row is the newest entry's, whatever the order of arrival.
 *
 *   table_on_conflict = nothing with a $id column: the same statement
 *   with the guard reversed (DISTINCT ON the oldest; the row is replaced
 *   only by an older entry), so the row is the oldest entry's, as applying
 *   the stream in order would leave it, whatever the order of arrival.
 *
 * A value a column refuses (class 22) or a NULL for a NOT NULL column
 * (23502) is a data error: the worker splits the batch until the entry is
 * alone. Alone (n == 1), apply() runs the statement under a savepoint; on
 * a data error it goes back to it and tries each column's conversion of
 * the staged value on its own, to name the entry, the column, its type
 * and the value in the reason the dead letter carries.
 *
 * With table_create = yes, `sluiced --init-schema` creates the table when
 * it does not exist (ddl_for()): every column text, a $time column
 * timestamptz, table_key the primary key.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bsd/string.h>

#include "shared/buf.h"
#include "shared/json.h"
#include "shared/pg_conn.h"
#include "worker/sink.h"

#define TBL_INSERT_STMT "sluice_table_insert"
#define TBL_STAGE       "pg_temp.sluice_table_stage"
#define TBL_SAVEPOINT   "sluice_table_one"
#define TBL_PATH_MAX    16  /* steps of one JSON path */
#define TBL_TYPE_MAX    160 /* a type's name, format_type() */
#define TBL_SHOW_MAX    80  /* bytes of a value shown in a reason */

enum tbl_source {
    SRC_FIELD, /* the field's value */
    SRC_JSON,  /* a JSON path into the field's value */
    SRC_ID,    /* $id */
    SRC_TIME,  /* $time */
};

struct tbl_step {
    const char *name; /* a member (into the column's path text), or NULL */
    long index;       /* an array element, when name is NULL */
};

struct tbl_col {
    const struct config_pair *pair; /* column.NAME = SOURCE */
    char quoted[2 * sizeof(((struct config_pair *)0)->name) + 3];
    enum tbl_source src;
    char field[sizeof(((struct config_pair *)0)->value)];
    int json; /* SRC_JSON: the index of its field in jfields */
    char path[sizeof(((struct config_pair *)0)->value)];
    struct tbl_step steps[TBL_PATH_MAX];
    int nsteps;
    int is_key;
    /* from the catalog, at on_connect() */
    char type[TBL_TYPE_MAX];     /* without its modifier */
    char fulltype[TBL_TYPE_MAX]; /* with it: varchar(10) */
    int notnull;
    char *def; /* its DEFAULT expression, or NULL */
};

struct tbl_item {
    size_t off, len; /* the entry's COPY line, in the arena (first:
                        sink_copy_in() reads them) */
};

struct tbl_sink {
    struct sink base;
    const struct config *cfg;
    char table[CONFIG_STR_MAX];  /* as configured: [schema.]name */
    char quoted[CONFIG_STR_MAX]; /* "schema"."name" */
    int update;                  /* table_on_conflict = update */
    int create_table;            /* table_create = yes */
    struct tbl_col *cols;
    int ncols;
    int id_col; /* the $id column, or -1 */
    int *key;   /* indices of the table_key columns, in its order */
    int nkey;
    const char *jfields[CONFIG_MAP_MAX]; /* fields a JSON path reads */
    int njfields;
    char *ddl;
    struct buf sql; /* the INSERT, built at on_connect() */
    struct buf arena;
    struct tbl_item *items;
    size_t nitems, items_cap, live;
};

/* ---- settings ---------------------------------------------------------- */

/* Quote one identifier (any text) into out: "a""b". */
static void
quote_ident(const char *s, char *out, size_t outlen)
{
    size_t n = 0;

    out[n++] = '"';
    for (; *s != '\0' && n + 3 < outlen; s++) {
        if (*s == '"')
            out[n++] = '"';
        out[n++] = *s;
    }
    out[n++] = '"';
    out[n] = '\0';
}

/*
 * Parse the JSON path p (what follows FIELD.$) into c->steps, its names
 * copied into c->path. 0, or -1 with why.
 */
static int
parse_path(struct tbl_col *c, const char *p, char *why, size_t whylen)
{
    char *w = c->path;
    const char *start = p;

    c->nsteps = 0;
    while (*p != '\0') {
        struct tbl_step *st;
        if (c->nsteps == TBL_PATH_MAX) {
            snprintf(why, whylen, "JSON path longer than %d steps",
                     TBL_PATH_MAX);
            return -1;
        }
        st = &c->steps[c->nsteps];
        if (*p == '.') {
            size_t len = strcspn(p + 1, ".[");
            if (len == 0) {
                snprintf(why, whylen,
                         "empty member name in the JSON path at character "
                         "%zu",
                         (size_t)(p - start) + 2);
                return -1;
            }
            memcpy(w, p + 1, len);
            w[len] = '\0';
            st->name = w;
            st->index = 0;
            w += len + 1;
            p += len + 1;
        } else if (*p == '[') {
            char *end;
            long idx;
            if (p[1] < '0' || p[1] > '9') {
                snprintf(why, whylen,
                         "'[' must hold an array index (a number from 0) "
                         "at character %zu of the JSON path",
                         (size_t)(p - start) + 1);
                return -1;
            }
            idx = strtol(p + 1, &end, 10);
            if (*end != ']' || idx > 1000000000L) {
                snprintf(why, whylen,
                         "array index not closed by ']' (or too large) at "
                         "character %zu of the JSON path",
                         (size_t)(p - start) + 1);
                return -1;
            }
            st->name = NULL;
            st->index = idx;
            p = end + 1;
        } else {
            snprintf(why, whylen,
                     "expected '.member' or '[index]' at character %zu of "
                     "the JSON path",
                     (size_t)(p - start) + 1);
            return -1;
        }
        c->nsteps++;
    }
    return 0;
}

/* Parse one column's SOURCE. 0, or -1 with why. */
static int
parse_source(struct tbl_sink *ts, struct tbl_col *c, const char *v, char *why,
             size_t whylen)
{
    const char *dollar = strstr(v, ".$");

    if (strcmp(v, "$id") == 0) {
        c->src = SRC_ID;
        return 0;
    }
    if (strcmp(v, "$time") == 0) {
        c->src = SRC_TIME;
        return 0;
    }
    if (v[0] == '$') {
        snprintf(why, whylen,
                 "unknown source '%s' ($id and $time are the only ones "
                 "starting with $)",
                 v);
        return -1;
    }
    if (dollar == NULL) {
        c->src = SRC_FIELD;
        strlcpy(c->field, v, sizeof(c->field));
        return 0;
    }
    if (dollar == v) {
        snprintf(why, whylen, "no field name before '.$'");
        return -1;
    }
    c->src = SRC_JSON;
    memcpy(c->field, v, (size_t)(dollar - v));
    c->field[dollar - v] = '\0';
    if (parse_path(c, dollar + 2, why, whylen) < 0)
        return -1;
    for (c->json = 0; c->json < ts->njfields; c->json++)
        if (strcmp(ts->jfields[c->json], c->field) == 0)
            break;
    if (c->json == ts->njfields)
        ts->jfields[ts->njfields++] = c->field;
    return 0;
}

/* Parse table_key into ts->key. 0, or -1 with err. */
static int
parse_key(struct tbl_sink *ts, const char *list, char *err, size_t errlen)
{
    const char *p = list;

    while (*p != '\0') {
        char name[sizeof(((struct config_pair *)0)->name)];
        size_t len;
        int i;

        p += strspn(p, " \t");
        len = strcspn(p, ",");
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 0 || len >= sizeof(name)) {
            snprintf(err, errlen,
                     "table_key: '%s' is not a comma-separated list of "
                     "column names",
                     list);
            return -1;
        }
        memcpy(name, p, len);
        name[len] = '\0';
        for (i = 0; i < ts->ncols; i++)
            if (strcmp(ts->cols[i].pair->name, name) == 0)
                break;
        if (i == ts->ncols) {
            snprintf(err, errlen,
                     "table_key: %s is not a mapped column (give it a "
                     "source: column.%s = SOURCE)",
                     name, name);
            return -1;
        }
        if (ts->cols[i].is_key) {
            snprintf(err, errlen, "table_key: %s is named twice", name);
            return -1;
        }
        ts->cols[i].is_key = 1;
        ts->key[ts->nkey++] = i;
        p += strcspn(p, ",");
        if (*p == ',') {
            p++;
            if (p[strspn(p, " \t")] == '\0') {
                snprintf(err, errlen, "table_key: a name is missing after ','");
                return -1;
            }
        }
    }
    if (ts->nkey == 0) {
        snprintf(err, errlen, "table_key: required by sink = table");
        return -1;
    }
    return 0;
}

/* The DDL for table_create = yes. NULL when out of memory. */
static char *
build_ddl(const struct tbl_sink *ts)
{
    struct buf b = {0};
    const char *dot = strchr(ts->table, '.');
    size_t need = 256 + 2 * strlen(ts->quoted);

    for (int i = 0; i < ts->ncols; i++)
        need += 2 * strlen(ts->cols[i].quoted) + 16;
    if (buf_reserve(&b, need) < 0)
        return NULL;
    b.p[0] = '\0';
    if (dot != NULL) {
        char schema[CONFIG_STR_MAX], qschema[2 * CONFIG_STR_MAX];
        strlcpy(schema, ts->table, (size_t)(dot - ts->table) + 1);
        quote_ident(schema, qschema, sizeof(qschema));
        b.len += (size_t)snprintf(b.p + b.len, b.cap - b.len,
                                  "CREATE SCHEMA IF NOT EXISTS %s; ", qschema);
    }
    b.len += (size_t)snprintf(b.p + b.len, b.cap - b.len,
                              "CREATE TABLE IF NOT EXISTS %s (", ts->quoted);
    for (int i = 0; i < ts->ncols; i++)
        b.len += (size_t)snprintf(
            b.p + b.len, b.cap - b.len, "%s %s, ", ts->cols[i].quoted,
            ts->cols[i].src == SRC_TIME ? "timestamptz" : "text");
    b.len += (size_t)snprintf(b.p + b.len, b.cap - b.len, "PRIMARY KEY (");
    for (int k = 0; k < ts->nkey; k++)
        b.len += (size_t)snprintf(b.p + b.len, b.cap - b.len, "%s%s",
                                  k ? ", " : "", ts->cols[ts->key[k]].quoted);
    b.len += (size_t)snprintf(b.p + b.len, b.cap - b.len, "))");
    return b.p;
}

static void tbl_destroy(struct sink *sink);

static struct sink *
tbl_create(const struct config *cfg, char *err, size_t errlen)
{
    struct tbl_sink *ts = calloc(1, sizeof(*ts));
    char where[CONFIG_STR_MAX + 16], why[CONFIG_ERR_MAX];

    if (ts == NULL) {
        snprintf(err, errlen, "table sink: out of memory");
        return NULL;
    }
    ts->cfg = cfg;
    ts->id_col = -1;
    strlcpy(ts->table, cfg->table, sizeof(ts->table));
    if (sink_quote_name(cfg->table, ts->quoted, sizeof(ts->quoted)) < 0) {
        snprintf(err, errlen, "table: not a usable table name");
        goto fail;
    }
    ts->update = strcmp(cfg->table_on_conflict, "update") == 0;
    ts->create_table = strcmp(cfg->table_create, "yes") == 0;
    if (cfg->ncolumns <= 0) {
        snprintf(err, errlen,
                 "column.NAME: sink = table needs at least one column "
                 "mapping (column.NAME = SOURCE)");
        goto fail;
    }
    ts->cols = calloc((size_t)cfg->ncolumns, sizeof(*ts->cols));
    ts->key = calloc((size_t)cfg->ncolumns, sizeof(*ts->key));
    if (ts->cols == NULL || ts->key == NULL) {
        snprintf(err, errlen, "table sink: out of memory");
        goto fail;
    }
    for (int i = 0; i < cfg->ncolumns; i++) {
        struct tbl_col *c = &ts->cols[i];
        c->pair = &cfg->columns[i];
        quote_ident(c->pair->name, c->quoted, sizeof(c->quoted));
        if (parse_source(ts, c, c->pair->value, why, sizeof(why)) < 0) {
            snprintf(err, errlen, "%s: column.%s: %s",
                     config_pair_where(cfg, c->pair, where, sizeof(where)),
                     c->pair->name, why);
            goto fail;
        }
        if (c->src == SRC_ID && ts->id_col < 0)
            ts->id_col = i;
        ts->ncols++;
    }
    if (parse_key(ts, cfg->table_key, err, errlen) < 0)
        goto fail;
    if (ts->create_table && (ts->ddl = build_ddl(ts)) == NULL) {
        snprintf(err, errlen, "table sink: out of memory");
        goto fail;
    }
    return &ts->base;
fail:
    tbl_destroy(&ts->base);
    return NULL;
}

static void
tbl_destroy(struct sink *sink)
{
    struct tbl_sink *ts = (struct tbl_sink *)sink;

    if (ts == NULL)
        return;
    for (int i = 0; ts->cols != NULL && i < ts->ncols; i++)
        free(ts->cols[i].def);
    free(ts->cols);
    free(ts->key);
    free(ts->ddl);
    free(ts->items);
    buf_free(&ts->sql);
    buf_free(&ts->arena);
    free(ts);
}

static const char *
tbl_ddl_for(struct sink *sink)
{
    struct tbl_sink *ts = (struct tbl_sink *)sink;

    return ts->ddl ? ts->ddl : "SELECT 1";
}

/* ---- the statement ----------------------------------------------------- */

/* printf into b (grown as needed). 0 or -1 (memory). */
static int __attribute__((format(printf, 2, 3)))
buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -1;
        if (b->p != NULL && (size_t)n < room) {
            b->len += (size_t)n;
            return 0;
        }
        if (buf_reserve(b, (size_t)n + 1) < 0)
            return -1;
    }
}

/* Column i's value as its type, from the staged text src ("s.c3", or "$1"
 * for a check). */
static int
append_value_expr(struct buf *b, const struct tbl_col *c, const char *src)
{
    if (c->src == SRC_TIME)
        return buf_printf(b,
                          "CAST(timestamptz 'epoch' + CAST(%s AS bigint) * "
                          "interval '1 millisecond' AS %s)",
                          src, c->type);
    return buf_printf(b, "CAST(%s AS %s)", src, c->type);
}

/* The guard of the $id column q: is the stored row's entry op (< or >)
 * than the new one? A stored value that is no stream ID: update or not. */
static int
append_guard(struct buf *b, const char *q, const char *op, int unknown)
{
    return buf_printf(
        b,
        " WHERE CASE WHEN sluice_old.%s::text ~ '^[0-9]{1,20}-[0-9]{1,20}$' "
        "THEN (split_part(sluice_old.%s::text, '-', 1)::numeric, "
        "split_part(sluice_old.%s::text, '-', 2)::numeric) %s "
        "(split_part(EXCLUDED.%s::text, '-', 1)::numeric, "
        "split_part(EXCLUDED.%s::text, '-', 2)::numeric) ELSE %s END",
        q, q, q, op, q, q, unknown ? "true" : "false");
}

/* Build the INSERT ... SELECT ... ON CONFLICT into ts->sql. 0 or -1. */
static int
build_insert(struct tbl_sink *ts)
{
    struct buf *b = &ts->sql;
    char src[16];
    int guard = ts->id_col >= 0;
    int distinct = ts->update || guard;
    int nset = 0;
    int r = 0;

    b->len = 0;
    r |= buf_printf(b, "INSERT INTO %s AS sluice_old (", ts->quoted);
    for (int i = 0; i < ts->ncols; i++)
        r |= buf_printf(b, "%s%s", i ? ", " : "", ts->cols[i].quoted);
    r |= buf_printf(b, ") SELECT ");
    if (distinct) {
        r |= buf_printf(b, "DISTINCT ON (");
        for (int k = 0; k < ts->nkey; k++) {
            snprintf(src, sizeof(src), "s.c%d", ts->key[k] + 1);
            r |= buf_printf(b, "%s", k ? ", " : "");
            r |= append_value_expr(b, &ts->cols[ts->key[k]], src);
        }
        r |= buf_printf(b, ") ");
    }
    for (int i = 0; i < ts->ncols; i++) {
        snprintf(src, sizeof(src), "s.c%d", i + 1);
        r |= buf_printf(b, "%s", i ? ", " : "");
        if (ts->cols[i].def != NULL && !ts->cols[i].is_key) {
            /* no value: the column's default, as an INSERT without it */
            r |= buf_printf(b, "COALESCE(");
            r |= append_value_expr(b, &ts->cols[i], src);
            r |= buf_printf(b, ", %s)", ts->cols[i].def);
        } else {
            r |= append_value_expr(b, &ts->cols[i], src);
        }
    }
    r |= buf_printf(b, " FROM " TBL_STAGE " s ORDER BY ");
    for (int k = 0; k < ts->nkey; k++) {
        snprintf(src, sizeof(src), "s.c%d", ts->key[k] + 1);
        r |= append_value_expr(b, &ts->cols[ts->key[k]], src);
        r |= buf_printf(b, ", ");
    }
    r |= buf_printf(b, ts->update ? "s.ord_ms DESC, s.ord_seq DESC"
                                  : "s.ord_ms, s.ord_seq");
    r |= buf_printf(b, " ON CONFLICT (");
    for (int k = 0; k < ts->nkey; k++)
        r |= buf_printf(b, "%s%s", k ? ", " : "", ts->cols[ts->key[k]].quoted);
    r |= buf_printf(b, ") DO ");
    if (ts->update || guard) {
        for (int i = 0; i < ts->ncols; i++) {
            if (ts->cols[i].is_key)
                continue;
            r |=
                buf_printf(b, "%s%s = EXCLUDED.%s", nset ? ", " : "UPDATE SET ",
                           ts->cols[i].quoted, ts->cols[i].quoted);
            nset++;
        }
    }
    if (nset == 0)
        r |= buf_printf(b, "NOTHING");
    else if (guard)
        r |= append_guard(b, ts->cols[ts->id_col].quoted,
                          ts->update ? "<" : ">", ts->update);
    return r < 0 ? -1 : 0;
}

/* ---- on_connect -------------------------------------------------------- */

static enum sink_result
tbl_on_connect(struct sink *sink, PGconn *conn, char *err, size_t errlen)
{
    struct tbl_sink *ts = (struct tbl_sink *)sink;
    char where[CONFIG_STR_MAX + 16];
    const char *values[2];
    struct buf keys = {0}, stage = {0};
    PGresult *res;
    enum sink_result r;

    /* the table's columns */
    values[0] = ts->quoted;
    res = pg_exec_params(
        conn,
        "SELECT c.oid IS NOT NULL, a.attname, format_type(a.atttypid, -1), "
        "format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "a.attgenerated <> '', pg_get_expr(d.adbin, d.adrelid), "
        "a.attidentity <> '' "
        "FROM (SELECT to_regclass($1) AS oid) c "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
        "AND NOT a.attisdropped "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid "
        "AND d.adnum = a.attnum AND a.attgenerated = ''",
        1, values);
    r = sink_result_of_pg(conn, res, err, errlen);
    if (r != SINK_OK) {
        PQclear(res);
        return SINK_RETRY;
    }
    if (PQntuples(res) < 1 || strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        PQclear(res);
        snprintf(err, errlen,
                 "table: table %s does not exist in this database (create "
                 "it, or set table_create = yes and run sluiced "
                 "--init-schema; sink = table)",
                 ts->table);
        return SINK_CONFIG;
    }
    for (int i = 0; i < ts->ncols; i++) {
        struct tbl_col *c = &ts->cols[i];
        int row;
        for (row = 0; row < PQntuples(res); row++)
            if (strcmp(PQgetvalue(res, row, 1), c->pair->name) == 0)
                break;
        if (row == PQntuples(res) ||
            strcmp(PQgetvalue(res, row, 5), "t") == 0) {
            snprintf(err, errlen, "%s: column.%s: table %s has %s %s",
                     config_pair_where(ts->cfg, c->pair, where, sizeof(where)),
                     c->pair->name, ts->table,
                     row == PQntuples(res) ? "no column" : "a generated column",
                     c->pair->name);
            PQclear(res);
            return SINK_CONFIG;
        }
        strlcpy(c->type, PQgetvalue(res, row, 2), sizeof(c->type));
        strlcpy(c->fulltype, PQgetvalue(res, row, 3), sizeof(c->fulltype));
        c->notnull = strcmp(PQgetvalue(res, row, 4), "t") == 0;
        free(c->def);
        c->def = NULL;
        if (!PQgetisnull(res, row, 6) &&
            (c->def = strdup(PQgetvalue(res, row, 6))) == NULL) {
            PQclear(res);
            goto oom;
        }
    }
    /* a NOT NULL column that nothing fills would refuse every entry:
     * the whole stream in the dead-letter stream */
    for (int row = 0; row < PQntuples(res); row++) {
        int i;
        if (strcmp(PQgetvalue(res, row, 4), "t") != 0 ||
            strcmp(PQgetvalue(res, row, 5), "t") == 0 ||
            !PQgetisnull(res, row, 6) ||
            strcmp(PQgetvalue(res, row, 7), "t") == 0)
            continue;
        for (i = 0; i < ts->ncols; i++)
            if (strcmp(ts->cols[i].pair->name, PQgetvalue(res, row, 1)) == 0)
                break;
        if (i < ts->ncols)
            continue;
        snprintf(err, errlen,
                 "table: column %s of table %s is NOT NULL without a "
                 "DEFAULT, and no column.%s = SOURCE fills it (every entry "
                 "would be refused)",
                 PQgetvalue(res, row, 1), ts->table, PQgetvalue(res, row, 1));
        PQclear(res);
        return SINK_CONFIG;
    }
    PQclear(res);

    /* a unique index (or the primary key) on exactly table_key */
    for (int k = 0; k < ts->nkey; k++)
        if (buf_printf(&keys, "%s%s", k ? " " : "",
                       ts->cols[ts->key[k]].pair->name) < 0)
            goto oom;
    values[1] = keys.p;
    res = pg_exec_params(
        conn,
        "SELECT EXISTS (SELECT 1 FROM pg_index i "
        "WHERE i.indrelid = to_regclass($1) AND i.indisunique "
        "AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL "
        "AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text "
        "COLLATE \"C\") FROM pg_attribute a WHERE a.attrelid = i.indrelid "
        "AND a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1])) "
        "= (SELECT array_agg(k ORDER BY k COLLATE \"C\") "
        "FROM unnest(string_to_array($2, ' ')) k))",
        2, values);
    buf_free(&keys);
    r = sink_result_of_pg(conn, res, err, errlen);
    if (r != SINK_OK) {
        PQclear(res);
        return SINK_RETRY;
    }
    if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        PQclear(res);
        snprintf(err, errlen,
                 "table_key: no primary key or unique index of table %s "
                 "has exactly the columns %s (ON CONFLICT needs one; a "
                 "partial or deferrable one does not do)",
                 ts->table, ts->cfg->table_key);
        return SINK_CONFIG;
    }
    PQclear(res);

    /* the staging table and the statement */
    if (buf_printf(&stage,
                   "DROP TABLE IF EXISTS " TBL_STAGE "; CREATE TEMP TABLE "
                   "sluice_table_stage (ord_ms numeric, ord_seq numeric") < 0)
        goto oom;
    for (int i = 0; i < ts->ncols; i++)
        if (buf_printf(&stage, ", c%d text", i + 1) < 0)
            goto oom;
    if (buf_printf(&stage, ") ON COMMIT DELETE ROWS") < 0 ||
        build_insert(ts) < 0)
        goto oom;
    res = pg_exec(conn, stage.p);
    buf_free(&stage);
    r = sink_result_of_pg(conn, res, err, errlen);
    PQclear(res);
    if (r != SINK_OK)
        return SINK_RETRY;
    res = PQprepare(conn, TBL_INSERT_STMT, ts->sql.p, 0, NULL);
    r = sink_result_of_pg(conn, res, err, errlen);
    if (r != SINK_OK && PQstatus(conn) == CONNECTION_OK && res != NULL) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state != NULL && strncmp(state, "42", 2) == 0) {
            /* a column type no source converts to (CAST of $time to
             * integer, say), a privilege lacking: the operator's */
            char msg[512];
            strlcpy(msg, err, sizeof(msg));
            snprintf(err, errlen, "table: the INSERT into %s is refused: %s",
                     ts->table, msg);
            PQclear(res);
            return SINK_CONFIG;
        }
    }
    PQclear(res);
    return r == SINK_OK ? SINK_OK : SINK_RETRY;
oom:
    buf_free(&keys);
    buf_free(&stage);
    snprintf(err, errlen, "table sink: out of memory");
    return SINK_RETRY;
}

/* ---- prepare ----------------------------------------------------------- */

/* Follow column c's path from root; NULL when it leads nowhere. */
static const cJSON *
json_walk(const cJSON *node, const struct tbl_col *c)
{
    for (int i = 0; i < c->nsteps && node != NULL; i++) {
        const struct tbl_step *st = &c->steps[i];
        if (st->name != NULL)
            node = cJSON_IsObject(node)
                       ? cJSON_GetObjectItemCaseSensitive(node, st->name)
                       : NULL;
        else
            node = cJSON_IsArray(node)
                       ? cJSON_GetArrayItem(node, (int)st->index)
                       : NULL;
    }
    return node;
}

/* Append a JSON node's value as COPY text (\N for null). 0, -1 (memory),
 * -2 (invalid UTF-8 in a string: cJSON decodes escapes as it likes). */
static int
append_json_value(struct buf *b, const cJSON *node)
{
    char num[64];

    if (node == NULL || cJSON_IsNull(node))
        return buf_printf(b, "\\N");
    if (cJSON_IsString(node)) {
        size_t len = strlen(node->valuestring);
        if (!utf8_valid(node->valuestring, len, NULL))
            return -2;
        return sink_copy_text(b, node->valuestring, len);
    }
    if (cJSON_IsBool(node))
        return sink_copy_text(b, cJSON_IsTrue(node) ? "true" : "false",
                              cJSON_IsTrue(node) ? 4 : 5);
    if (cJSON_IsNumber(node)) {
        double d = node->valuedouble;
        if (!isfinite(d))
            return sink_copy_text(b, "null", 4);
        /* the shortest of 15 or 17 digits that reads back the same */
        snprintf(num, sizeof(num), "%1.15g", d);
        if (strtod(num, NULL) != d)
            snprintf(num, sizeof(num), "%1.17g", d);
        return sink_copy_text(b, num, strlen(num));
    }
    {
        char *text = cJSON_PrintUnformatted(node);
        int r;
        if (text == NULL)
            return -1;
        r = sink_copy_text(b, text, strlen(text));
        cJSON_free(text);
        return r;
    }
}

static int
tbl_prepare(struct sink *sink, struct stream_entry *e, char *reason,
            size_t reasonlen)
{
    struct tbl_sink *ts = (struct tbl_sink *)sink;
    struct buf *a = &ts->arena;
    cJSON *trees[CONFIG_MAP_MAX] = {0};
    size_t start = a->len;
    int rc = -1;

    if (ts->nitems == ts->items_cap) {
        size_t cap = ts->items_cap ? 2 * ts->items_cap : 256;
        struct tbl_item *it = realloc(ts->items, cap * sizeof(*it));
        if (it == NULL)
            goto oom;
        ts->items = it;
        ts->items_cap = cap;
    }
    for (int j = 0; j < ts->njfields; j++) {
        const struct stream_field *f = stream_entry_field(e, ts->jfields[j]);
        char why[SINK_REASON_MAX];
        if (f == NULL)
            continue;
        trees[j] = json_parse(f->value, f->value_len, why, sizeof(why));
        if (trees[j] == NULL) {
            snprintf(reason, reasonlen, "field %s: %s", ts->jfields[j], why);
            goto out;
        }
    }
    if (buf_printf(a, "%" PRIu64 "\t%" PRIu64, e->ord_ms, e->ord_seq) < 0)
        goto oom;
    for (int i = 0; i < ts->ncols; i++) {
        const struct tbl_col *c = &ts->cols[i];
        const struct stream_field *f;
        int r;

        if (buf_reserve(a, 1) < 0)
            goto oom;
        a->p[a->len++] = '\t';
        switch (c->src) {
        case SRC_ID:
            r = buf_printf(a, "%" PRIu64 "-%" PRIu64, e->ord_ms, e->ord_seq);
            break;
        case SRC_TIME:
            r = buf_printf(a, "%" PRIu64, e->ord_ms);
            break;
        case SRC_FIELD:
            f = stream_entry_field(e, c->field);
            if (f == NULL) {
                r = buf_printf(a, "\\N");
                break;
            }
            if (sink_field_check("value", f->name, f->name_len, f->value,
                                 f->value_len, reason, reasonlen) < 0)
                goto out;
            r = sink_copy_text(a, f->value, f->value_len);
            break;
        default: /* SRC_JSON */
            r = append_json_value(a, json_walk(trees[c->json], c));
            if (r == -2) {
                snprintf(reason, reasonlen,
                         "field %s: the value at %s is not valid UTF-8",
                         c->field, c->pair->value);
                goto out;
            }
        }
        if (r < 0)
            goto oom;
    }
    if (buf_reserve(a, 1) < 0)
        goto oom;
    a->p[a->len++] = '\n';
    ts->items[ts->nitems].off = start;
    ts->items[ts->nitems].len = a->len - start;
    e->sink_state = (void *)(uintptr_t)(++ts->nitems);
    ts->live++;
    rc = 0;
    goto out;
oom:
    snprintf(reason, reasonlen, "table sink: out of memory");
out:
    if (rc < 0)
        a->len = start;
    for (int j = 0; j < ts->njfields; j++)
        cJSON_Delete(trees[j]);
    return rc;
}

/* ---- apply ------------------------------------------------------------- */

/* Show value v (NULL: none) in at most TBL_SHOW_MAX bytes, whole UTF-8
 * characters. */
static void
show_value(const char *v, char *out, size_t outlen)
{
    size_t len;

    if (v == NULL) {
        snprintf(out, outlen, "NULL");
        return;
    }
    len = strlen(v);
    if (len <= TBL_SHOW_MAX) {
        snprintf(out, outlen, "'%s'", v);
        return;
    }
    len = TBL_SHOW_MAX;
    while (len > 0 && ((unsigned char)v[len] & 0xC0) == 0x80)
        len--;
    snprintf(out, outlen, "'%.*s'... (%zu bytes)", (int)len, v, strlen(v));
}

/*
 * The lone entry e's insert failed with a data error (orig: PostgreSQL's
 * result, msg: its message), under the savepoint: find the column at
 * fault and write the reason into err. The transaction may be left
 * aborted (the worker rolls back).
 */
static void
diagnose(struct tbl_sink *ts, PGconn *conn, const struct stream_entry *e,
         const PGresult *orig, const char *msg, char *err, size_t errlen)
{
    const char *state = PQresultErrorField(orig, PG_DIAG_SQLSTATE);
    const char *colname = PQresultErrorField(orig, PG_DIAG_COLUMN_NAME);
    struct buf sql = {0};
    PGresult *row = NULL;
    char shown[TBL_SHOW_MAX + 32], why[512];
    int culprit = -1;

    snprintf(err, errlen, "entry %s: %s", e->id, msg);
    if (pg_command(conn, "ROLLBACK TO SAVEPOINT " TBL_SAVEPOINT, why,
                   sizeof(why)) != PG_FAULT_NONE)
        return;
    if (buf_printf(&sql, "SELECT ") < 0)
        goto out;
    for (int i = 0; i < ts->ncols; i++)
        if (buf_printf(&sql, "%sc%d", i ? ", " : "", i + 1) < 0)
            goto out;
    if (buf_printf(&sql, " FROM " TBL_STAGE) < 0)
        goto out;
    row = pg_exec(conn, sql.p);
    if (PQresultStatus(row) != PGRES_TUPLES_OK || PQntuples(row) != 1)
        goto out;
    strlcpy(why, msg, sizeof(why));
    if (state != NULL && strcmp(state, "23502") == 0 && colname != NULL) {
        for (int i = 0; i < ts->ncols && culprit < 0; i++)
            if (strcmp(ts->cols[i].pair->name, colname) == 0)
                culprit = i;
    }
    for (int i = 0; i < ts->ncols && culprit < 0; i++) {
        const struct tbl_col *c = &ts->cols[i];
        const char *v[1];
        PGresult *res;
        if (PQgetisnull(row, 0, i))
            continue;
        v[0] = PQgetvalue(row, 0, i);
        sql.len = 0;
        if (buf_printf(&sql, "SELECT ") < 0 ||
            append_value_expr(&sql, c, "$1::text") < 0 ||
            buf_printf(&sql, " IS DISTINCT FROM CAST(") < 0 ||
            append_value_expr(&sql, c, "$1::text") < 0 ||
            buf_printf(&sql, " AS %s)", c->fulltype) < 0)
            goto out;
        res = pg_exec_params(conn, sql.p, 1, v);
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            /* converts; a value too long for varchar(n) only shows as a
             * change when cast with the modifier */
            if (state != NULL && strcmp(state, "22001") == 0 &&
                PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0)
                culprit = i;
        } else if (pg_fault_of(conn, res, why, sizeof(why)) == PG_FAULT_DATA) {
            culprit = i;
        } else {
            strlcpy(why, msg, sizeof(why));
        }
        PQclear(res);
        if (culprit < 0 && PQtransactionStatus(conn) == PQTRANS_INERROR)
            break; /* something else failed: keep PostgreSQL's message */
    }
    if (culprit >= 0) {
        const struct tbl_col *c = &ts->cols[culprit];
        show_value(PQgetisnull(row, 0, culprit) ? NULL
                                                : PQgetvalue(row, 0, culprit),
                   shown, sizeof(shown));
        snprintf(err, errlen, "entry %s: column %s (%s, from %s) value %s: %s",
                 e->id, c->pair->name, c->fulltype, c->pair->value, shown, why);
    }
out:
    PQclear(row);
    buf_free(&sql);
}

static enum sink_result
tbl_apply(struct sink *sink, PGconn *conn, struct stream_entry *const *entries,
          size_t n, char *err, size_t errlen)
{
    struct tbl_sink *ts = (struct tbl_sink *)sink;
    PGresult *res;
    enum sink_result r;

    if (n == 0)
        return SINK_OK;
    r = sink_copy_in(conn, "COPY " TBL_STAGE " FROM STDIN", TBL_STAGE,
                     ts->arena.p, ts->items, sizeof(ts->items[0]), entries, n,
                     err, errlen);
    if (r != SINK_OK)
        return r;
    if (n == 1 && pg_command(conn, "SAVEPOINT " TBL_SAVEPOINT, err, errlen) !=
                      PG_FAULT_NONE)
        return SINK_RETRY;
    res = pg_exec_prepared(conn, TBL_INSERT_STMT, 0, NULL);
    r = sink_result_of_pg(conn, res, err, errlen);
    if (r == SINK_DATA_ERROR && n == 1) {
        char msg[512];
        strlcpy(msg, err, sizeof(msg));
        diagnose(ts, conn, entries[0], res, msg, err, errlen);
    }
    PQclear(res);
    return r;
}

static void
tbl_release(struct sink *sink, struct stream_entry *e)
{
    struct tbl_sink *ts = (struct tbl_sink *)sink;

    if (e->sink_state == NULL)
        return;
    e->sink_state = NULL;
    if (ts->live > 0 && --ts->live == 0) {
        /* the batch is done: reuse the arena from the start */
        ts->arena.len = 0;
        ts->nitems = 0;
    }
}

const struct sink_type sink_table_type = {
    .name = "table",
    .create = tbl_create,
    .destroy = tbl_destroy,
    /* the table is the user's; table_create = yes builds DDL (ddl_for) */
    .ddl = "SELECT 1",
    .on_connect = tbl_on_connect,
    .prepare = tbl_prepare,
    .apply = tbl_apply,
    .release = tbl_release,
    .ddl_for = tbl_ddl_for,
};
