/*
 * sink_atproto.c: the AT Protocol sink (sink = atproto), which indexes
 * firehose events into the appview schema of etc/sql/atproto/.
 *
 * The work is split so that PostgreSQL does what it does best:
 *
 *   prepare()  decodes one stream entry (type/data/seq, or a Jetstream v1
 *              line with input_format = jetstream), checks it, brings its
 *              records to one form (camelCase keys, "$type", canonical blob
 *              references, createdAt in UTC) and encodes it as rows of the
 *              staging table in COPY text format, one row per operation,
 *              into an arena that lives as long as the batch. An entry
 *              that fails any check is refused whole, with a reason: it
 *              is dead-lettered and writes nothing.
 *   apply()    streams the rows of the given entries into the session's
 *              temp table sluice_stage with one COPY, then calls
 *              sluice_apply_stage(), which applies them set-based (see the
 *              comment atop etc/sql/atproto/00-base.sql for the ordering
 *              rules that make the result independent of order, batching
 *              and replays). Two statements per batch, whatever its size; any
 *              subset of a batch applies on its own.
 *
 * A staged row: ord_ms, ord_seq (the stream entry ID; for an entry
 * sluice-deadletter requeued, the original one, its orig_id), op_idx (the op's
 * index in the commit), kind (create, update, delete, identity, account,
 * or actor for a commit without ops), did, collection, rkey, uri, cid,
 * record (jsonb), created_at, handle, active, status, commit_seq,
 * commit_rev, commit_time.
 *
 * createdAt missing or unparsable: the time of the stream entry ID, which
 * is when the event was indexed into the stream, and unlike the wall clock
 * the same on every redelivery.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/buf.h"
#include "shared/json.h"
#include "shared/pg_conn.h"
#include "shared/stats.h"
#include "worker/atproto_record.h"
#include "worker/sink.h"

extern const char sql_atproto[];

#define STAGE_COLUMNS                                                          \
    "ord_ms, ord_seq, op_idx, kind, did, collection, rkey, uri, cid, "         \
    "record, created_at, handle, active, status, commit_seq, commit_rev, "     \
    "commit_time"

/* One prepared entry: its staged rows at an offset of the arena, and its
 * actor's DID in dids. */
struct atp_item {
    size_t off, len; /* the COPY line (first: sink_copy_in() reads them) */
    size_t did_off, did_len;
};

struct atp_sink {
    struct sink base;
    int jetstream;    /* input_format = jetstream */
    struct buf arena; /* COPY rows of the live entries */
    struct atp_item *items;
    size_t nitems, items_cap, live;
    struct buf json;   /* a record printed as JSON */
    struct buf dids;   /* the actors of the live entries */
    struct buf actors; /* before_apply()'s array literal */
    /* plan refresh (see plans_refresh_due()): batches staged in this
     * session, the count that triggers the next refresh, and when the
     * last one was */
    uint64_t batches, next_refresh;
    int64_t refreshed_ms;
};

/* What every row of one entry shares. */
struct entry_ctx {
    const struct stream_entry *e;
    const char *did;
    const char *commit_seq;         /* NULL: none */
    const char *commit_rev;         /* NULL: none */
    char commit_time[ATP_TIME_LEN]; /* "": none */
    char id_time[ATP_TIME_LEN];     /* the stream ID's time */
};

/* ---- COPY text format --------------------------------------------------
 * Columns separated by tabs, rows ended by newlines, NULL as \N; a
 * backslash, tab, newline or carriage return inside a value is escaped. */

static int
col_sep(struct buf *b, int first)
{
    if (first)
        return 0;
    if (buf_reserve(b, 1) < 0)
        return -1;
    b->p[b->len++] = '\t';
    return 0;
}

static int
col_text(struct buf *b, int first, const char *s, size_t len)
{
    if (col_sep(b, first) < 0)
        return -1;
    return sink_copy_text(b, s, len);
}

/* A C string, or NULL as \N. */
static int
col_str(struct buf *b, int first, const char *s)
{
    if (s == NULL) {
        if (col_sep(b, first) < 0 || buf_reserve(b, 2) < 0)
            return -1;
        b->p[b->len++] = '\\';
        b->p[b->len++] = 'N';
        return 0;
    }
    return col_text(b, first, s, strlen(s));
}

static int
col_u64(struct buf *b, int first, uint64_t v)
{
    char num[24];
    size_t n = sizeof(num);

    do {
        num[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return col_text(b, first, num + n, sizeof(num) - n);
}

static int
row_end(struct buf *b)
{
    if (buf_reserve(b, 1) < 0)
        return -1;
    b->p[b->len++] = '\n';
    return 0;
}

/* The columns every row starts with: ord_ms, ord_seq, op_idx, kind, did. */
static int
row_begin(struct buf *b, const struct entry_ctx *cx, unsigned op_idx,
          const char *kind)
{
    return col_u64(b, 1, cx->e->ord_ms) < 0 ||
                   col_u64(b, 0, cx->e->ord_seq) < 0 ||
                   col_u64(b, 0, op_idx) < 0 || col_str(b, 0, kind) < 0 ||
                   col_str(b, 0, cx->did) < 0
               ? -1
               : 0;
}

/* n NULL columns. */
static int
col_nulls(struct buf *b, int n)
{
    for (int i = 0; i < n; i++)
        if (col_str(b, 0, NULL) < 0)
            return -1;
    return 0;
}

/* ---- decoding ---------------------------------------------------------- */

/* Print a record as compact JSON into s->json (NUL-terminated). 0 or -1. */
static int
record_print(struct atp_sink *s, const cJSON *rec, size_t hint)
{
    size_t want = hint * 2 + 256;
    char *p;

    s->json.len = 0;
    if (buf_reserve(&s->json, want) < 0)
        return -1;
    if (cJSON_PrintPreallocated((cJSON *)rec, s->json.p, (int)s->json.cap, 0)) {
        s->json.len = strlen(s->json.p);
        return 0;
    }
    p = cJSON_PrintUnformatted(rec);
    if (p == NULL)
        return -1;
    s->json.len = strlen(p);
    if (buf_reserve(&s->json, s->json.len + 1) < 0) {
        free(p);
        return -1;
    }
    memcpy(s->json.p, p, s->json.len + 1);
    free(p);
    return 0;
}

enum op_action { OP_CREATE, OP_UPDATE, OP_DELETE };

/*
 * Stage one record operation: collection/rkey of cx->did, with its cid and
 * record for a create or update. The record is normalized in place.
 * Returns 0, -1 with a reason (refused), or -2 (out of memory).
 */
static int
stage_op(struct atp_sink *s, const struct entry_ctx *cx, unsigned op_idx,
         enum op_action action, const char *coll, size_t coll_len,
         const char *rkey, size_t rkey_len, const char *cid, cJSON *record,
         size_t size_hint, char *reason, size_t reasonlen)
{
    static const char *const kinds[] = {"create", "update", "delete"};
    struct buf *b = &s->arena;
    char collection[320], uri[ATP_URI_MAX + 1], created[ATP_TIME_LEN];
    const char *at;
    size_t did_len;
    char *w;

    if (!atp_nsid_valid(coll, coll_len)) {
        snprintf(reason, reasonlen, "op %u: collection '%.*s' is not an NSID",
                 op_idx, (int)(coll_len > 80 ? 80 : coll_len), coll);
        return -1;
    }
    if (!atp_rkey_valid(rkey, rkey_len)) {
        snprintf(reason, reasonlen, "op %u: record key '%.*s' is not valid",
                 op_idx, (int)(rkey_len > 80 ? 80 : rkey_len), rkey);
        return -1;
    }
    memcpy(collection, coll, coll_len);
    collection[coll_len] = '\0';
    did_len = strlen(cx->did);
    if (5 + did_len + 1 + coll_len + 1 + rkey_len > ATP_URI_MAX) {
        snprintf(reason, reasonlen, "op %u: the record URI is longer than %d",
                 op_idx, ATP_URI_MAX);
        return -1;
    }
    w = uri;
    memcpy(w, "at://", 5);
    memcpy(w += 5, cx->did, did_len);
    *(w += did_len) = '/';
    memcpy(++w, coll, coll_len);
    *(w += coll_len) = '/';
    memcpy(++w, rkey, rkey_len);
    w[rkey_len] = '\0';
    if (action != OP_DELETE) {
        if (!cJSON_IsObject(record)) {
            snprintf(reason, reasonlen,
                     "op %u: %s of %s without a record object", op_idx,
                     kinds[action], collection);
            return -1;
        }
        if (cid == NULL || cid[0] == '\0' || strlen(cid) > ATP_CID_MAX) {
            snprintf(reason, reasonlen,
                     "op %u: %s of %s without a cid (or one over %d bytes)",
                     op_idx, kinds[action], collection, ATP_CID_MAX);
            return -1;
        }
        if (atp_record_normalize(record,
                                 atp_collection_is_bluesky(collection)) < 0)
            return -2;
        char why[SINK_REASON_MAX];
        if (atp_record_check(collection, record, why, sizeof(why)) < 0) {
            snprintf(reason, reasonlen, "op %u: %s", op_idx, why);
            return -1;
        }
        at = json_get_string(record, "createdAt");
        if (atp_time_to_utc(at, created) < 0)
            memcpy(created, cx->id_time, ATP_TIME_LEN);
        if (record_print(s, record, size_hint) < 0)
            return -2;
    }

    if (row_begin(b, cx, op_idx, kinds[action]) < 0 ||
        col_str(b, 0, collection) < 0 || col_text(b, 0, rkey, rkey_len) < 0 ||
        col_str(b, 0, uri) < 0)
        return -2;
    if (action == OP_DELETE) {
        if (col_nulls(b, 6) < 0)
            return -2;
    } else if (col_str(b, 0, cid) < 0 ||
               col_text(b, 0, s->json.p, s->json.len) < 0 ||
               col_str(b, 0, created) < 0 || col_nulls(b, 3) < 0) {
        return -2;
    }
    if (col_str(b, 0, cx->commit_seq) < 0 ||
        col_str(b, 0, cx->commit_rev) < 0 ||
        col_str(b, 0, cx->commit_time[0] ? cx->commit_time : NULL) < 0 ||
        row_end(b) < 0)
        return -2;
    return 0;
}

/* A row with only the actor (a commit without ops) or an identity or
 * account event. handle/active/status may be NULL. */
static int
stage_actor(struct atp_sink *s, const struct entry_ctx *cx, const char *kind,
            const char *handle, int active, const char *status)
{
    struct buf *b = &s->arena;

    if (row_begin(b, cx, 0, kind) < 0 || col_nulls(b, 6) < 0 ||
        col_str(b, 0, handle) < 0 ||
        col_str(b, 0,
                active < 0 ? NULL
                : active   ? "t"
                           : "f") < 0 ||
        col_str(b, 0, status) < 0 || col_nulls(b, 3) < 0 || row_end(b) < 0)
        return -2;
    return 0;
}

static int
parse_action(const char *a, enum op_action *out)
{
    if (a == NULL)
        return -1;
    if (strcmp(a, "create") == 0)
        *out = OP_CREATE;
    else if (strcmp(a, "update") == 0)
        *out = OP_UPDATE;
    else if (strcmp(a, "delete") == 0)
        *out = OP_DELETE;
    else
        return -1;
    return 0;
}

/* A DID member that must be valid. NULL with a reason otherwise. */
static const char *
need_did(const cJSON *obj, const char *key, const char *what, char *reason,
         size_t reasonlen)
{
    const char *did = json_get_string(obj, key);

    if (!atp_did_valid(did)) {
        snprintf(reason, reasonlen, "%s: %s %s", what, key,
                 did == NULL ? "is missing or not a string" : "is not a DID");
        return NULL;
    }
    return did;
}

/* identity {did, handle|null} and account {did, active, status?}. */
static int
stage_identity(struct atp_sink *s, struct entry_ctx *cx, const cJSON *obj,
               char *reason, size_t reasonlen)
{
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(obj, "handle");

    cx->did = need_did(obj, "did", "identity", reason, reasonlen);
    if (cx->did == NULL)
        return -1;
    if (h != NULL && !cJSON_IsNull(h) && !cJSON_IsString(h)) {
        snprintf(reason, reasonlen,
                 "identity: handle is neither a string nor null");
        return -1;
    }
    return stage_actor(s, cx, "identity",
                       cJSON_IsString(h) && h->valuestring[0] ? h->valuestring
                                                              : NULL,
                       -1, NULL);
}

static int
stage_account(struct atp_sink *s, struct entry_ctx *cx, const cJSON *obj,
              char *reason, size_t reasonlen)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(obj, "status");
    int active = json_get_bool(obj, "active");

    cx->did = need_did(obj, "did", "account", reason, reasonlen);
    if (cx->did == NULL)
        return -1;
    if (active < 0) {
        snprintf(reason, reasonlen,
                 "account: active is missing or not a boolean");
        return -1;
    }
    if (st != NULL && !cJSON_IsNull(st) && !cJSON_IsString(st)) {
        snprintf(reason, reasonlen,
                 "account: status is neither a string nor null");
        return -1;
    }
    return stage_actor(s, cx, "account", NULL, active,
                       cJSON_IsString(st) ? st->valuestring : NULL);
}

/* A string no longer than max, or NULL. */
static const char *
short_string(const cJSON *obj, const char *key, size_t max)
{
    const char *v = json_get_string(obj, key);

    return v != NULL && v[0] != '\0' && strlen(v) <= max ? v : NULL;
}

/* The stream format's commit: {repo, ops: [{action, path, cid, record}],
 * rev?, time?}. */
static int
stage_commit(struct atp_sink *s, struct entry_ctx *cx, const cJSON *data,
             size_t size_hint, char *reason, size_t reasonlen)
{
    const cJSON *ops = cJSON_GetObjectItemCaseSensitive(data, "ops");
    const cJSON *op;
    unsigned idx = 0;

    cx->did = need_did(data, "repo", "commit", reason, reasonlen);
    if (cx->did == NULL)
        return -1;
    if (!cJSON_IsArray(ops)) {
        snprintf(reason, reasonlen, "commit: ops is missing or not an array");
        return -1;
    }
    cx->commit_rev = short_string(data, "rev", 64);
    if (atp_time_to_utc(json_get_string(data, "time"), cx->commit_time) < 0)
        cx->commit_time[0] = '\0';
    if (ops->child == NULL)
        return stage_actor(s, cx, "actor", NULL, -1, NULL);
    cJSON_ArrayForEach(op, ops)
    {
        enum op_action action;
        const char *path, *slash;
        int r;

        if (!cJSON_IsObject(op)) {
            snprintf(reason, reasonlen, "op %u: not an object", idx);
            return -1;
        }
        if (parse_action(json_get_string(op, "action"), &action) < 0) {
            snprintf(reason, reasonlen,
                     "op %u: action is not create, update or delete", idx);
            return -1;
        }
        path = json_get_string(op, "path");
        slash = path ? strchr(path, '/') : NULL;
        if (slash == NULL || strchr(slash + 1, '/') != NULL) {
            snprintf(reason, reasonlen,
                     "op %u: path is missing or not collection/rkey", idx);
            return -1;
        }
        r = stage_op(s, cx, idx, action, path, (size_t)(slash - path),
                     slash + 1, strlen(slash + 1), json_get_string(op, "cid"),
                     cJSON_GetObjectItemCaseSensitive(op, "record"), size_hint,
                     reason, reasonlen);
        if (r != 0)
            return r;
        idx++;
    }
    return 0;
}

/* A Jetstream v1 line: {did, time_us, kind, commit|identity|account}. */
static int
stage_jetstream(struct atp_sink *s, struct entry_ctx *cx, const cJSON *line,
                size_t size_hint, char *reason, size_t reasonlen)
{
    const char *kind = json_get_string(line, "kind");
    const cJSON *tus = cJSON_GetObjectItemCaseSensitive(line, "time_us");
    const cJSON *c;
    enum op_action action;
    const char *coll, *rkey;

    if (kind == NULL) {
        snprintf(reason, reasonlen, "jetstream: kind is missing");
        return -1;
    }
    if (strcmp(kind, "identity") == 0 || strcmp(kind, "account") == 0) {
        const cJSON *obj = json_get_object(line, kind);
        if (obj == NULL) {
            snprintf(reason, reasonlen, "jetstream: %s object is missing",
                     kind);
            return -1;
        }
        return kind[0] == 'i' ? stage_identity(s, cx, obj, reason, reasonlen)
                              : stage_account(s, cx, obj, reason, reasonlen);
    }
    if (strcmp(kind, "commit") != 0) {
        snprintf(reason, reasonlen, "jetstream: unknown kind '%.40s'", kind);
        return -1;
    }
    cx->did = need_did(line, "did", "jetstream", reason, reasonlen);
    if (cx->did == NULL)
        return -1;
    c = json_get_object(line, "commit");
    if (c == NULL) {
        snprintf(reason, reasonlen, "jetstream: commit object is missing");
        return -1;
    }
    if (parse_action(json_get_string(c, "operation"), &action) < 0) {
        snprintf(reason, reasonlen,
                 "jetstream: operation is not create, update or delete");
        return -1;
    }
    coll = json_get_string(c, "collection");
    rkey = json_get_string(c, "rkey");
    if (coll == NULL || rkey == NULL) {
        snprintf(reason, reasonlen, "jetstream: collection or rkey is missing");
        return -1;
    }
    cx->commit_rev = short_string(c, "rev", 64);
    if (cJSON_IsNumber(tus) && tus->valuedouble > 0)
        atp_time_from_ms((uint64_t)(tus->valuedouble / 1000), cx->commit_time);
    return stage_op(s, cx, 0, action, coll, strlen(coll), rkey, strlen(rkey),
                    json_get_string(c, "cid"),
                    cJSON_GetObjectItemCaseSensitive(c, "record"), size_hint,
                    reason, reasonlen);
}

/* A field's value as a NUL-terminated copy in buf, or NULL when absent or
 * too long for buf. */
static const char *
field_copy(const struct stream_field *f, char *buf, size_t buflen)
{
    if (f == NULL || f->value_len >= buflen)
        return NULL;
    memcpy(buf, f->value, f->value_len);
    buf[f->value_len] = '\0';
    return buf;
}

static int
atp_prepare(struct sink *sink, struct stream_entry *e, char *reason,
            size_t reasonlen)
{
    struct atp_sink *s = (struct atp_sink *)sink;
    const struct stream_field *data = stream_entry_field(e, "data");
    struct entry_ctx cx = {.e = e};
    size_t mark = s->arena.len;
    char why[SINK_REASON_MAX], type[16], seq[40];
    cJSON *tree;
    int r;

    if (s->nitems == s->items_cap) {
        size_t cap = s->items_cap ? s->items_cap * 2 : 256;
        struct atp_item *n = realloc(s->items, cap * sizeof(*n));
        if (n == NULL)
            goto oom;
        s->items = n;
        s->items_cap = cap;
    }
    if (data == NULL) {
        snprintf(reason, reasonlen, "no data field");
        return -1;
    }
    tree = json_parse(data->value, data->value_len, why, sizeof(why));
    if (tree == NULL) {
        snprintf(reason, reasonlen, "data: %s", why);
        return -1;
    }
    if (!cJSON_IsObject(tree)) {
        snprintf(reason, reasonlen, "data: not a JSON object");
        cJSON_Delete(tree);
        return -1;
    }
    atp_time_from_ms(e->id_ms, cx.id_time);

    if (s->jetstream) {
        r = stage_jetstream(s, &cx, tree, data->value_len, reason, reasonlen);
    } else {
        const char *t =
            field_copy(stream_entry_field(e, "type"), type, sizeof(type));
        const char *sq =
            field_copy(stream_entry_field(e, "seq"), seq, sizeof(seq));
        /* the relay's sequence number: digits, at most varchar(32) */
        if (sq != NULL && (sq[0] == '\0' || strlen(sq) > 32 ||
                           strspn(sq, "0123456789") != strlen(sq)))
            sq = NULL;
        cx.commit_seq = sq;
        if (t == NULL) {
            snprintf(reason, reasonlen, "type field is missing or unknown");
            r = -1;
        } else if (strcmp(t, "commit") == 0) {
            r = stage_commit(s, &cx, tree, data->value_len, reason, reasonlen);
        } else if (strcmp(t, "identity") == 0) {
            r = stage_identity(s, &cx, tree, reason, reasonlen);
        } else if (strcmp(t, "account") == 0) {
            r = stage_account(s, &cx, tree, reason, reasonlen);
        } else {
            snprintf(reason, reasonlen, "unknown event type '%s'", t);
            r = -1;
        }
    }
    if (r == 0) {
        /* the actor, for before_apply() (cx.did points into the tree); a
         * DID has no character an array literal would need quoted */
        size_t dlen = strlen(cx.did);
        if (buf_reserve(&s->dids, dlen) < 0) {
            r = -2;
        } else {
            s->items[s->nitems].did_off = s->dids.len;
            s->items[s->nitems].did_len = dlen;
            memcpy(s->dids.p + s->dids.len, cx.did, dlen);
            s->dids.len += dlen;
        }
    }
    cJSON_Delete(tree);
    if (r == -2)
        goto oom;
    if (r < 0) {
        s->arena.len = mark; /* nothing of a refused entry is staged */
        return -1;
    }
    s->items[s->nitems].off = mark;
    s->items[s->nitems].len = s->arena.len - mark;
    e->sink_state = (void *)(uintptr_t)(s->nitems + 1);
    s->nitems++;
    s->live++;
    return 0;
oom:
    s->arena.len = mark;
    snprintf(reason, reasonlen, "out of memory while decoding");
    return -1;
}

/* ---- writing ------------------------------------------------------------ */

/*
 * PL/pgSQL plans each statement of sluice_apply_stage() once per session
 * and keeps that plan, made for the sizes the tables had then and for
 * what the planner knows of the staged rows. Two things went wrong:
 *   - a session that started on small tables (a new database, a bench)
 *     went on reading whole tables where an index lookup is right once
 *     they have grown: in a 60,000-event run from empty tables, 3,390
 *     scans of users alone;
 *   - the temp table sluice_stage is never analyzed by autovacuum, so
 *     the planner guessed that a filter on kind or collection keeps a
 *     handful of its rows and joined them by nested loops, 500 x 500.
 * So the stage is analyzed on a real batch (after its COPY; about 1 ms)
 * and the session's plans are dropped (DISCARD PLANS; the next statements
 * plan again, about 12 ms a batch) at its batches 1, 2, 4, 8, ... 1024 --
 * tables that grow from empty double with the batch count -- and then at
 * most every PLAN_REFRESH_MS. Called once a batch is staged; returns
 * whether this batch is one of them.
 */
#define PLAN_REFRESH_MS           60000
#define PLAN_REFRESH_DOUBLING_MAX 1024

static int
plans_refresh_due(struct atp_sink *s)
{
    int64_t now = stats_now_ms();

    s->batches++;
    if (s->batches < s->next_refresh &&
        (s->next_refresh <= PLAN_REFRESH_DOUBLING_MAX ||
         now - s->refreshed_ms < PLAN_REFRESH_MS))
        return 0;
    s->refreshed_ms = now;
    if (s->next_refresh <= PLAN_REFRESH_DOUBLING_MAX)
        s->next_refresh = 2 * s->batches;
    else
        s->next_refresh = UINT64_MAX;
    return 1;
}

static enum sink_result
atp_on_connect(struct sink *sink, PGconn *conn, char *err, size_t errlen)
{
    struct atp_sink *s = (struct atp_sink *)sink;
    PGresult *res;
    enum sink_result r;

    s->batches = 0; /* a new session plans afresh */
    s->next_refresh = 1;
    s->refreshed_ms = stats_now_ms();
    res = pg_exec(conn, "CREATE TEMP TABLE IF NOT EXISTS sluice_stage (LIKE "
                        "sluice_stage_template INCLUDING DEFAULTS) "
                        "ON COMMIT DELETE ROWS");
    r = sink_result_of_pg(conn, res, err, errlen);
    PQclear(res);
    if (r != SINK_OK) {
        size_t used = strlen(err);
        if (used + 1 < errlen)
            snprintf(err + used, errlen - used,
                     " (is the schema applied? sluiced --init-schema)");
        return SINK_RETRY; /* the operator's to fix: never dead letters */
    }
    return SINK_OK;
}

static enum sink_result
atp_apply(struct sink *sink, PGconn *conn, struct stream_entry *const *entries,
          size_t n, char *err, size_t errlen)
{
    struct atp_sink *s = (struct atp_sink *)sink;
    PGresult *res;
    enum sink_result r;

    if (n == 0)
        return SINK_OK;
    r = sink_copy_in(conn, "COPY sluice_stage (" STAGE_COLUMNS ") FROM STDIN",
                     "sluice_stage", s->arena.p, s->items, sizeof(s->items[0]),
                     entries, n, err, errlen);
    if (r != SINK_OK)
        return r;
    if (plans_refresh_due(s)) {
        res = pg_exec(conn, "ANALYZE sluice_stage; DISCARD PLANS");
        r = sink_result_of_pg(conn, res, err, errlen);
        PQclear(res);
        if (r != SINK_OK)
            return r;
    }
    res = pg_exec(conn, "SELECT sluice_apply_stage()");
    r = sink_result_of_pg(conn, res, err, errlen);
    PQclear(res);
    return r;
}

/*
 * Every event ensures its actor in users. Inside the batch's transaction
 * a new users row that another worker has just inserted makes this one
 * wait for that worker's whole batch, so the rows are inserted first in a
 * transaction of their own (ON CONFLICT DO NOTHING: idempotent). It may
 * commit asynchronously: the batch's transaction ensures the same rows
 * again and commits synchronously, which flushes this one's WAL too.
 */
static enum sink_result
atp_before_apply(struct sink *sink, PGconn *conn,
                 struct stream_entry *const *entries, size_t n, char *err,
                 size_t errlen)
{
    struct atp_sink *s = (struct atp_sink *)sink;
    struct buf *a = &s->actors;
    const char *values[1];
    PGresult *res;
    enum sink_result r;

    a->len = 0;
    for (size_t i = 0; i < n; i++) {
        const struct atp_item *it =
            &s->items[(uintptr_t)entries[i]->sink_state - 1];
        if (buf_reserve(a, it->did_len + 3) < 0) {
            snprintf(err, errlen, "atproto sink: out of memory");
            return SINK_RETRY;
        }
        a->p[a->len++] = i == 0 ? '{' : ',';
        memcpy(a->p + a->len, s->dids.p + it->did_off, it->did_len);
        a->len += it->did_len;
    }
    if (n == 0)
        return SINK_OK;
    a->p[a->len++] = '}';
    a->p[a->len] = '\0';
    values[0] = a->p;

    res = pg_exec(conn, "BEGIN; SET LOCAL synchronous_commit TO off");
    r = sink_result_of_pg(conn, res, err, errlen);
    PQclear(res);
    if (r == SINK_OK) {
        res = pg_exec_params(conn,
                             "INSERT INTO users (did, handle) "
                             "SELECT DISTINCT d, 'handle.invalid' "
                             "FROM unnest($1::text[]) d ORDER BY 1 "
                             "ON CONFLICT (did) DO NOTHING",
                             1, values);
        r = sink_result_of_pg(conn, res, err, errlen);
        PQclear(res);
    }
    res = pg_exec(conn, r == SINK_OK ? "COMMIT" : "ROLLBACK");
    if (r == SINK_OK)
        r = sink_result_of_pg(conn, res, err, errlen);
    PQclear(res);
    return r == SINK_RETRY ? SINK_RETRY : SINK_OK;
}

/*
 * Fold the committed counter deltas (sluice_fold_counters(), one session
 * at a time). Work is left pending when this call folded something (more
 * may have been committed meanwhile) or found another worker folding
 * (deltas committed after that fold began are not in it).
 */
static enum sink_result
atp_maintain(struct sink *sink, PGconn *conn, int *pending, char *err,
             size_t errlen)
{
    PGresult *res;
    enum sink_result r;

    (void)sink;
    *pending = 0;
    res = pg_exec(conn, "SELECT sluice_fold_counters(false)");
    r = sink_result_of_pg(conn, res, err, errlen);
    if (r == SINK_OK && PQntuples(res) == 1)
        *pending = strtoll(PQgetvalue(res, 0, 0), NULL, 10) != 0;
    PQclear(res);
    return r == SINK_OK ? SINK_OK : SINK_RETRY;
}

static void
atp_release(struct sink *sink, struct stream_entry *e)
{
    struct atp_sink *s = (struct atp_sink *)sink;

    if (e->sink_state == NULL)
        return;
    e->sink_state = NULL;
    if (s->live > 0 && --s->live == 0) {
        /* the batch is done: reuse the arena from the start */
        s->arena.len = 0;
        s->dids.len = 0;
        s->nitems = 0;
    }
}

static struct sink *
atp_create(const struct config *cfg, char *err, size_t errlen)
{
    struct atp_sink *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        snprintf(err, errlen, "atproto sink: out of memory");
        return NULL;
    }
    s->jetstream = strcmp(cfg->input_format, "jetstream") == 0;
    s->base.maintain_ms = cfg->counter_fold_ms;
    return &s->base;
}

static void
atp_destroy(struct sink *sink)
{
    struct atp_sink *s = (struct atp_sink *)sink;

    if (s == NULL)
        return;
    free(s->items);
    buf_free(&s->arena);
    buf_free(&s->json);
    buf_free(&s->dids);
    buf_free(&s->actors);
    free(s);
}

const struct sink_type sink_atproto_type = {
    .name = "atproto",
    .create = atp_create,
    .destroy = atp_destroy,
    .ddl = sql_atproto,
    .on_connect = atp_on_connect,
    .prepare = atp_prepare,
    .apply = atp_apply,
    .release = atp_release,
    .before_apply = atp_before_apply,
    .maintain = atp_maintain,
};
