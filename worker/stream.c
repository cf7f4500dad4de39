/*
 * stream.c: consumer-group commands and the parsing of their replies (see
 * stream.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bsd/string.h>

#include "shared/stats.h"
#include "worker/stream.h"

void
stream_init(struct stream *s, struct redis_conn *rc, const char *key,
            const char *group, const char *consumer, const char *start_id,
            const char *dead_key)
{
    memset(s, 0, sizeof(*s));
    s->rc = rc;
    s->key = key;
    s->group = group;
    s->consumer = consumer;
    s->start_id = start_id;
    s->dead_key = dead_key;
    strlcpy(s->claim_cursor, "0-0", sizeof(s->claim_cursor));
}

void
stream_free(struct stream *s)
{
    free(s->argv);
    free(s->argvlen);
    s->argv = NULL;
    s->argvlen = NULL;
    s->argv_cap = 0;
}

/* Make room for n arguments in the reusable argv. 0 or -1. */
static int
stream_argv_reserve(struct stream *s, size_t n)
{
    const char **a;
    size_t *l;
    size_t cap = s->argv_cap ? s->argv_cap : 64;

    if (n <= s->argv_cap)
        return 0;
    while (cap < n)
        cap *= 2;
    a = realloc(s->argv, cap * sizeof(*a));
    if (a == NULL)
        return -1;
    s->argv = a;
    l = realloc(s->argvlen, cap * sizeof(*l));
    if (l == NULL)
        return -1;
    s->argvlen = l;
    s->argv_cap = cap;
    return 0;
}

/* The status of a reply; sets s->err for everything but STREAM_OK. */
static enum stream_status
stream_status_of(struct stream *s, const redisReply *r, const char *cmd)
{
    if (r == NULL) {
        snprintf(s->err, sizeof(s->err), "%s: %s", cmd, s->rc->err);
        return STREAM_DOWN;
    }
    if (r->type != REDIS_REPLY_ERROR)
        return STREAM_OK;
    snprintf(s->err, sizeof(s->err), "%s: %.*s", cmd, (int)r->len, r->str);
    if (redis_reply_is_error(r, "NOGROUP"))
        return STREAM_NOGROUP;
    return STREAM_ERROR;
}

enum stream_status
stream_group_create(struct stream *s, int *created)
{
    const char *argv[] = {"XGROUP", "CREATE",    s->key,
                          s->group, s->start_id, "MKSTREAM"};
    size_t argvlen[6];
    redisReply *r;
    enum stream_status st;

    for (int i = 0; i < 6; i++)
        argvlen[i] = strlen(argv[i]);
    *created = 0;
    r = redis_conn_command(s->rc, 6, argv, argvlen);
    if (redis_reply_is_error(r, "BUSYGROUP")) {
        freeReplyObject(r);
        return STREAM_OK;
    }
    st = stream_status_of(s, r, "XGROUP CREATE");
    if (st == STREAM_OK)
        *created = 1;
    if (r != NULL)
        freeReplyObject(r);
    return st;
}

enum stream_status
stream_consumer_seen(struct stream *s, long long *idle_ms, long long *pending)
{
    const char *argv[] = {"XINFO", "CONSUMERS", s->key, s->group};
    size_t argvlen[4];
    redisReply *r;
    enum stream_status st;

    for (int i = 0; i < 4; i++)
        argvlen[i] = strlen(argv[i]);
    *idle_ms = -1;
    *pending = 0;
    r = redis_conn_command(s->rc, 4, argv, argvlen);
    st = stream_status_of(s, r, "XINFO CONSUMERS");
    if (st == STREAM_NOGROUP || (st == STREAM_ERROR && r != NULL &&
                                 redis_reply_is_error(r, "ERR no such key"))) {
        freeReplyObject(r);
        return STREAM_OK;
    }
    if (st == STREAM_OK && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *c = r->element[i];
            long long idle = -1, pend = 0;
            int mine = 0;
            if (c->type != REDIS_REPLY_ARRAY)
                continue;
            for (size_t k = 0; k + 1 < c->elements; k += 2) {
                const redisReply *key = c->element[k], *v = c->element[k + 1];
                if (key->type != REDIS_REPLY_STRING)
                    continue;
                if (strcmp(key->str, "name") == 0)
                    mine = v->type == REDIS_REPLY_STRING &&
                           strcmp(v->str, s->consumer) == 0;
                else if (strcmp(key->str, "idle") == 0 &&
                         v->type == REDIS_REPLY_INTEGER)
                    idle = v->integer;
                else if (strcmp(key->str, "pending") == 0 &&
                         v->type == REDIS_REPLY_INTEGER)
                    pend = v->integer;
            }
            if (mine) {
                *idle_ms = idle < 0 ? 0 : idle;
                *pending = pend;
                break;
            }
        }
    }
    if (r != NULL)
        freeReplyObject(r);
    return st;
}

/* The consumer's pending list and its removal in one step: a consumer that
 * holds an entry is never removed (its entries would be lost to the group). */
static const char remove_idle_script[] =
    "if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 "
    "then return 0 end "
    "redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) "
    "return 1";

enum stream_status
stream_consumer_remove_idle(struct stream *s, int *removed)
{
    const char *argv[] = {"EVAL", remove_idle_script, "1",
                          s->key, s->group,           s->consumer};
    size_t argvlen[6];
    redisReply *r;
    enum stream_status st;

    for (int i = 0; i < 6; i++)
        argvlen[i] = strlen(argv[i]);
    *removed = 0;
    r = redis_conn_command(s->rc, 6, argv, argvlen);
    st = stream_status_of(s, r, "XGROUP DELCONSUMER");
    if (st == STREAM_OK && r->type == REDIS_REPLY_INTEGER && r->integer == 1)
        *removed = 1;
    if (r != NULL)
        freeReplyObject(r);
    return st;
}

/*
 * Entries trimmed before the group read them, in one step on the server.
 * While the group's last-delivered ID is below the stream's first entry,
 * entries-added - length - entries-read is how many entries were ever
 * deleted without the group having read them (Redis counts entries-read
 * as entries delivered, and trimming does not move it). The hash KEYS[2]
 * keeps, per group, how many of those were counted already, so that of
 * the workers that look only one counts a loss, and a second loss counts
 * only itself. Returns the entries newly found lost, 0 when none, or -1
 * when some were lost but Redis can't tell how many (a group without
 * entries-read: then each gap, by its last-delivered ID, is told once).
 */
static const char trimmed_unread_script[] =
    "local function f(t, k) for i = 1, #t, 2 do if t[i] == k then "
    "return t[i + 1] end end end "
    "local function id(s) local ms, sq = string.match(s, '(%d+)-(%d+)') "
    "return tonumber(ms), tonumber(sq) end "
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "
    "local st = redis.call('XINFO', 'STREAM', KEYS[1]) "
    "local first = f(st, 'first-entry') "
    "if not first then return 0 end "
    "local g "
    "for _, x in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do "
    "if f(x, 'name') == ARGV[1] then g = x end end "
    "if not g then return 0 end "
    "local ld = f(g, 'last-delivered-id') "
    "local lms, lsq = id(ld) local fms, fsq = id(first[1]) "
    "if lms > fms or (lms == fms and lsq >= fsq) then return 0 end "
    "local read = f(g, 'entries-read') "
    "if type(read) ~= 'number' then "
    "local field = ARGV[1] .. ' unknown' "
    "if redis.call('HGET', KEYS[2], field) == ld then return 0 end "
    "redis.call('HSET', KEYS[2], field, ld) return -1 end "
    "local lost = f(st, 'entries-added') - f(st, 'length') - read "
    "local counted = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') "
    "if lost <= counted then return 0 end "
    "redis.call('HSET', KEYS[2], ARGV[1], lost) "
    "return lost - counted";

enum stream_status
stream_trimmed_unread(struct stream *s, long long *lost)
{
    char marker[1024];
    const char *argv[] = {"EVAL",  trimmed_unread_script, "2", s->key, marker,
                          s->group};
    size_t argvlen[6];
    redisReply *r;
    enum stream_status st;

    if ((size_t)snprintf(marker, sizeof(marker), "%s:trimmed-unread", s->key) >=
        sizeof(marker)) {
        snprintf(s->err, sizeof(s->err), "stream key too long");
        return STREAM_ERROR;
    }
    for (int i = 0; i < 6; i++)
        argvlen[i] = strlen(argv[i]);
    *lost = 0;
    r = redis_conn_command(s->rc, 6, argv, argvlen);
    st = stream_status_of(s, r, "trimmed-unread check");
    if (st == STREAM_OK && r->type == REDIS_REPLY_INTEGER)
        *lost = r->integer;
    if (r != NULL)
        freeReplyObject(r);
    return st;
}

/* Add the entries of an entries array ([id, fields] pairs) to b. */
static int
stream_add_entries(struct batch *b, const redisReply *arr, size_t *nadded,
                   size_t *ngone)
{
    if (arr->type != REDIS_REPLY_ARRAY)
        return 0;
    for (size_t i = 0; i < arr->elements; i++) {
        const redisReply *e = arr->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            e->element[0]->type != REDIS_REPLY_STRING)
            continue; /* Redis 6.2 reports a deleted claimed entry as nil */
        const redisReply *id = e->element[0], *fields = e->element[1];
        if (fields->type != REDIS_REPLY_ARRAY) {
            /* pending, but trimmed from the stream: only ack it */
            if (batch_add_gone(b, id->str, id->len) < 0)
                return -1;
            (*ngone)++;
            continue;
        }
        if (batch_add(b, id->str, id->len, fields) == NULL)
            return -1;
        (*nadded)++;
    }
    return 0;
}

enum stream_status
stream_read(struct stream *s, struct batch *b, const char *after, int count,
            long block_ms, size_t *nread, size_t *ngone)
{
    char countbuf[16], blockbuf[24];
    const char *argv[12];
    size_t argvlen[12];
    int argc = 0;
    redisReply *r;
    enum stream_status st;

    *nread = 0;
    *ngone = 0;
    snprintf(countbuf, sizeof(countbuf), "%d", count);
    argv[argc++] = "XREADGROUP";
    argv[argc++] = "GROUP";
    argv[argc++] = s->group;
    argv[argc++] = s->consumer;
    argv[argc++] = "COUNT";
    argv[argc++] = countbuf;
    if (block_ms >= 0) {
        snprintf(blockbuf, sizeof(blockbuf), "%ld", block_ms);
        argv[argc++] = "BLOCK";
        argv[argc++] = blockbuf;
    }
    argv[argc++] = "STREAMS";
    argv[argc++] = s->key;
    argv[argc++] = after;
    for (int i = 0; i < argc; i++)
        argvlen[i] = strlen(argv[i]);

    r = redis_conn_command(s->rc, argc, argv, argvlen);
    st = stream_status_of(s, r, "XREADGROUP");
    if (st != STREAM_OK) {
        if (r != NULL)
            freeReplyObject(r);
        return st;
    }
    if (r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *sr = r->element[i];
            if (sr->type == REDIS_REPLY_ARRAY && sr->elements == 2 &&
                stream_add_entries(b, sr->element[1], nread, ngone) < 0) {
                freeReplyObject(r);
                snprintf(s->err, sizeof(s->err), "XREADGROUP: out of memory");
                return STREAM_ERROR;
            }
        }
    }
    if (*nread == 0) {
        freeReplyObject(r);
    } else if (batch_keep_reply(b, r) < 0) {
        snprintf(s->err, sizeof(s->err), "XREADGROUP: out of memory");
        return STREAM_ERROR;
    }
    return STREAM_OK;
}

enum stream_status
stream_autoclaim(struct stream *s, struct batch *b, long min_idle_ms, int count,
                 size_t *nclaimed, size_t *ngone, int *pass_done)
{
    char idlebuf[24], countbuf[16];
    const char *argv[8];
    size_t argvlen[8];
    redisReply *r;
    enum stream_status st;

    *nclaimed = 0;
    *ngone = 0;
    *pass_done = 0;
    snprintf(idlebuf, sizeof(idlebuf), "%ld", min_idle_ms);
    snprintf(countbuf, sizeof(countbuf), "%d", count);
    argv[0] = "XAUTOCLAIM";
    argv[1] = s->key;
    argv[2] = s->group;
    argv[3] = s->consumer;
    argv[4] = idlebuf;
    argv[5] = s->claim_cursor;
    argv[6] = "COUNT";
    argv[7] = countbuf;
    for (int i = 0; i < 8; i++)
        argvlen[i] = strlen(argv[i]);

    r = redis_conn_command(s->rc, 8, argv, argvlen);
    st = stream_status_of(s, r, "XAUTOCLAIM");
    if (st != STREAM_OK) {
        if (r != NULL)
            freeReplyObject(r);
        return st;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        snprintf(s->err, sizeof(s->err), "XAUTOCLAIM: unexpected reply");
        return STREAM_ERROR;
    }
    if (r->element[0]->len < sizeof(s->claim_cursor))
        strlcpy(s->claim_cursor, r->element[0]->str, sizeof(s->claim_cursor));
    else
        strlcpy(s->claim_cursor, "0-0", sizeof(s->claim_cursor));
    *pass_done = strcmp(s->claim_cursor, "0-0") == 0;

    if (stream_add_entries(b, r->element[1], nclaimed, ngone) < 0)
        goto oom;
    /* Redis 7: the IDs it found deleted (it already dropped them from the
     * pending list; acking them again is harmless and covers 6.2). */
    if (r->elements >= 3 && r->element[2]->type == REDIS_REPLY_ARRAY) {
        const redisReply *del = r->element[2];
        for (size_t i = 0; i < del->elements; i++) {
            if (del->element[i]->type != REDIS_REPLY_STRING)
                continue;
            if (batch_add_gone(b, del->element[i]->str, del->element[i]->len) <
                0)
                goto oom;
            (*ngone)++;
        }
    }
    b->nclaimed += *nclaimed;
    if (*nclaimed == 0) {
        freeReplyObject(r);
    } else if (batch_keep_reply(b, r) < 0) {
        snprintf(s->err, sizeof(s->err), "XAUTOCLAIM: out of memory");
        return STREAM_ERROR;
    }
    return STREAM_OK;
oom:
    freeReplyObject(r);
    snprintf(s->err, sizeof(s->err), "XAUTOCLAIM: out of memory");
    return STREAM_ERROR;
}

enum stream_status
stream_fetch_deliveries(struct stream *s, struct batch *b, size_t from)
{
    enum stream_status st = STREAM_OK;
    size_t i;

    for (i = from; i < b->n; i++) {
        const char *id = b->entries[i].id;
        const char *argv[6] = {"XPENDING", s->key, s->group, id, id, "1"};
        size_t argvlen[6];
        for (int k = 0; k < 6; k++)
            argvlen[k] = strlen(argv[k]);
        if (redis_conn_append(s->rc, 6, argv, argvlen) < 0) {
            snprintf(s->err, sizeof(s->err), "XPENDING: %s", s->rc->err);
            return STREAM_DOWN;
        }
    }
    for (i = from; i < b->n; i++) {
        redisReply *r = redis_conn_reply(s->rc);
        enum stream_status one = stream_status_of(s, r, "XPENDING");
        if (one == STREAM_DOWN)
            return STREAM_DOWN;
        if (one != STREAM_OK && st == STREAM_OK)
            st = one;
        /* [[id, consumer, idle, deliveries]] */
        if (one == STREAM_OK && r->type == REDIS_REPLY_ARRAY &&
            r->elements == 1 && r->element[0]->type == REDIS_REPLY_ARRAY &&
            r->element[0]->elements == 4 &&
            r->element[0]->element[3]->type == REDIS_REPLY_INTEGER)
            b->entries[i].deliveries =
                (unsigned)r->element[0]->element[3]->integer;
        freeReplyObject(r);
    }
    return st;
}

enum stream_status
stream_pending_next(struct stream *s, const char *after, unsigned *deliveries)
{
    char start[STREAM_ID_MAX + 2];
    const char *argv[7] = {"XPENDING", s->key, s->group,   start,
                           "+",        "1",    s->consumer};
    size_t argvlen[7];
    redisReply *r;
    enum stream_status st;

    *deliveries = 0;
    if (strcmp(after, "0") == 0)
        snprintf(start, sizeof(start), "-");
    else
        snprintf(start, sizeof(start), "(%s", after);
    for (int k = 0; k < 7; k++)
        argvlen[k] = strlen(argv[k]);
    r = redis_conn_command(s->rc, 7, argv, argvlen);
    st = stream_status_of(s, r, "XPENDING");
    /* [[id, consumer, idle, deliveries]] */
    if (st == STREAM_OK && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY &&
        r->element[0]->elements == 4 &&
        r->element[0]->element[3]->type == REDIS_REPLY_INTEGER)
        *deliveries = (unsigned)r->element[0]->element[3]->integer;
    if (r != NULL)
        freeReplyObject(r);
    return st;
}

/* The UTC time now as "2026-11-22T09:00:00.123Z". */
static void
format_now(char *buf, size_t len)
{
    int64_t ms = stats_now_ms();
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    char base[32];

    gmtime_r(&secs, &tm);
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03dZ", base, (int)(ms % 1000));
}

enum stream_status
stream_dead_letter(struct stream *s, struct batch *b, size_t *nadded)
{
    char when[40];
    size_t ndead = 0, queued = 0, got = 0;
    enum stream_status st = STREAM_OK;
    char **names;
    size_t *idx;

    *nadded = 0;
    for (size_t i = 0; i < b->n; i++)
        ndead += b->items[i].fate == ENTRY_DEAD;
    if (ndead == 0)
        return STREAM_OK;
    format_now(when, sizeof(when));
    names = calloc(ndead, sizeof(*names));
    idx = calloc(ndead, sizeof(*idx));
    if (names == NULL || idx == NULL) {
        free(names);
        free(idx);
        snprintf(s->err, sizeof(s->err), "dead letter: out of memory");
        return STREAM_ERROR;
    }
    for (size_t i = 0, k = 0; i < b->n; i++)
        if (b->items[i].fate == ENTRY_DEAD)
            idx[k++] = i;

    for (; queued < ndead; queued++) {
        size_t i = idx[queued];
        const struct stream_entry *e = &b->entries[i];
        char deliveries[16];
        size_t namelen = 0, argc = 0, off = 0;
        char *nb;

        for (size_t k = 0; k < e->nfields; k++)
            namelen += e->fields[k].name_len + 2;
        nb = malloc(namelen + 1);
        if (nb == NULL || stream_argv_reserve(s, 13 + 2 * e->nfields) < 0) {
            free(nb);
            snprintf(s->err, sizeof(s->err), "dead letter: out of memory");
            st = STREAM_ERROR;
            break;
        }
        names[queued] = nb;
        snprintf(deliveries, sizeof(deliveries), "%u", e->deliveries);
        const char *fixed[] = {"XADD",
                               s->dead_key,
                               "*",
                               "id",
                               e->id,
                               "reason",
                               batch_reason(b, i),
                               "deliveries",
                               deliveries,
                               "consumer",
                               s->consumer,
                               "time",
                               when};
        for (size_t k = 0; k < 13; k++) {
            s->argv[argc] = fixed[k];
            s->argvlen[argc++] = strlen(fixed[k]);
        }
        for (size_t k = 0; k < e->nfields; k++) {
            const struct stream_field *f = &e->fields[k];
            nb[off] = 'f';
            nb[off + 1] = ':';
            memcpy(nb + off + 2, f->name, f->name_len);
            s->argv[argc] = nb + off;
            s->argvlen[argc++] = f->name_len + 2;
            s->argv[argc] = f->value;
            s->argvlen[argc++] = f->value_len;
            off += f->name_len + 2;
        }
        if (redis_conn_append(s->rc, (int)argc, s->argv, s->argvlen) < 0) {
            snprintf(s->err, sizeof(s->err), "XADD dead letter: %s",
                     s->rc->err);
            st = STREAM_DOWN;
            break;
        }
    }

    /* The replies of what was queued, in order (none if the connection
     * already failed: the pipeline is lost with the context). */
    for (; st != STREAM_DOWN && got < queued; got++) {
        redisReply *r = redis_conn_reply(s->rc);
        enum stream_status one = stream_status_of(s, r, "XADD dead letter");
        if (one == STREAM_DOWN)
            break;
        if (one == STREAM_OK) {
            (*nadded)++;
        } else {
            b->items[idx[got]].fate = ENTRY_READ; /* stays unacked */
            if (st == STREAM_OK)
                st = one;
        }
        freeReplyObject(r);
    }
    if (got < ndead) {
        /* not confirmed: stays unacked, is read and refused again later */
        for (size_t k = got; k < ndead; k++)
            b->items[idx[k]].fate = ENTRY_READ;
        if (st == STREAM_OK || s->rc->ctx == NULL)
            st = s->rc->ctx == NULL ? STREAM_DOWN : STREAM_ERROR;
    }
    for (size_t k = 0; k < ndead; k++)
        free(names[k]);
    free(names);
    free(idx);
    return st;
}

enum stream_status
stream_ack(struct stream *s, const char *const *ids, size_t n,
           long long *nacked)
{
    redisReply *r;
    enum stream_status st;

    *nacked = 0;
    if (n == 0)
        return STREAM_OK;
    if (stream_argv_reserve(s, n + 3) < 0) {
        snprintf(s->err, sizeof(s->err), "XACK: out of memory");
        return STREAM_ERROR;
    }
    s->argv[0] = "XACK";
    s->argvlen[0] = 4;
    s->argv[1] = s->key;
    s->argvlen[1] = strlen(s->key);
    s->argv[2] = s->group;
    s->argvlen[2] = strlen(s->group);
    for (size_t i = 0; i < n; i++) {
        s->argv[3 + i] = ids[i];
        s->argvlen[3 + i] = strlen(ids[i]);
    }
    r = redis_conn_command(s->rc, (int)(n + 3), s->argv, s->argvlen);
    st = stream_status_of(s, r, "XACK");
    if (st == STREAM_OK && r->type == REDIS_REPLY_INTEGER)
        *nacked = r->integer;
    if (r != NULL)
        freeReplyObject(r);
    return st;
}
