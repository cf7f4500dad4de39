/*
 * redis_conn.c: a blocking hiredis connection that is thrown away and
 * rebuilt after any fault (see redis_conn.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <bsd/string.h>

#include "shared/redis_conn.h"

#define REDIS_READER_KEEP (4u << 20)

static int
copy_part(char *dst, size_t dstlen, const char *src, size_t len)
{
    if (len >= dstlen)
        return -1;
    memcpy(dst, src, len);
    dst[len] = '\0';
    return 0;
}

/* Undo %XX escapes in place (passwords may hold reserved characters). */
static int
percent_decode(char *s)
{
    char *r = s, *w = s;

    while (*r != '\0') {
        if (*r == '%') {
            unsigned v;
            if (sscanf(r + 1, "%2x", &v) != 1 || r[1] == '\0' || r[2] == '\0')
                return -1;
            *w++ = (char)v;
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return 0;
}

static int
parse_db(const char *s, int *db)
{
    char *end;
    long v;

    if (*s == '\0')
        return 0;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0 || v > 1000000)
        return -1;
    *db = (int)v;
    return 0;
}

int
redis_url_parse(const char *url, struct redis_target *t, char *err,
                size_t errlen)
{
    const char *p, *at, *hostpart, *slash;
    int is_unix;

    memset(t, 0, sizeof(*t));
    t->port = 6379;
    if (strncmp(url, "redis://", 8) == 0) {
        is_unix = 0;
        p = url + 8;
    } else if (strncmp(url, "unix://", 7) == 0) {
        is_unix = 1;
        p = url + 7;
    } else {
        snprintf(err, errlen,
                 "redis_url: scheme must be redis:// or unix:// (TLS "
                 "is not supported)");
        return -1;
    }
    t->is_unix = is_unix;

    /* userinfo: everything before the last '@' ahead of the path */
    slash = is_unix ? strstr(p, "@/") : strchr(p, '/');
    at = NULL;
    for (const char *q = p; *q != '\0' && (slash == NULL || q <= slash); q++)
        if (*q == '@')
            at = q;
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon == NULL) {
            /* "redis://secret@host": a password alone, as redis-cli */
            if (copy_part(t->password, sizeof(t->password), p,
                          (size_t)(at - p)) < 0)
                goto toolong;
        } else {
            if (copy_part(t->user, sizeof(t->user), p, (size_t)(colon - p)) <
                    0 ||
                copy_part(t->password, sizeof(t->password), colon + 1,
                          (size_t)(at - colon - 1)) < 0)
                goto toolong;
        }
        if (percent_decode(t->user) < 0 || percent_decode(t->password) < 0) {
            snprintf(err, errlen, "redis_url: bad %%-escape in user info");
            return -1;
        }
        hostpart = at + 1;
    } else {
        hostpart = p;
    }

    if (is_unix) {
        const char *q = strchr(hostpart, '?');
        size_t len = q ? (size_t)(q - hostpart) : strlen(hostpart);
        if (len == 0 || hostpart[0] != '/') {
            snprintf(err, errlen, "redis_url: unix:// needs an absolute path");
            return -1;
        }
        if (copy_part(t->path, sizeof(t->path), hostpart, len) < 0)
            goto toolong;
        if (q != NULL) {
            if (strncmp(q, "?db=", 4) != 0 || parse_db(q + 4, &t->db) < 0) {
                snprintf(err, errlen, "redis_url: bad query, expected ?db=N");
                return -1;
            }
        }
        return 0;
    }

    /* host[:port][/db]; an IPv6 host is written [::1] */
    const char *end = strchr(hostpart, '/');
    size_t hlen = end ? (size_t)(end - hostpart) : strlen(hostpart);
    const char *portp = NULL;
    if (hlen > 0 && hostpart[0] == '[') {
        const char *rb = memchr(hostpart, ']', hlen);
        if (rb == NULL)
            goto badhost;
        if (copy_part(t->host, sizeof(t->host), hostpart + 1,
                      (size_t)(rb - hostpart - 1)) < 0)
            goto toolong;
        if (rb + 1 < hostpart + hlen) {
            if (rb[1] != ':')
                goto badhost;
            portp = rb + 2;
        }
    } else {
        const char *colon = memchr(hostpart, ':', hlen);
        size_t nlen = colon ? (size_t)(colon - hostpart) : hlen;
        if (copy_part(t->host, sizeof(t->host), hostpart, nlen) < 0)
            goto toolong;
        if (colon != NULL)
            portp = colon + 1;
    }
    if (t->host[0] == '\0')
        strlcpy(t->host, "localhost", sizeof(t->host));
    if (portp != NULL) {
        char buf[16], *e;
        size_t plen = (size_t)(hostpart + hlen - portp);
        long v;
        if (plen == 0 || copy_part(buf, sizeof(buf), portp, plen) < 0)
            goto badport;
        errno = 0;
        v = strtol(buf, &e, 10);
        if (errno != 0 || *e != '\0' || v < 1 || v > 65535)
            goto badport;
        t->port = (int)v;
    }
    if (end != NULL && parse_db(end + 1, &t->db) < 0) {
        snprintf(err, errlen, "redis_url: database must be a number");
        return -1;
    }
    return 0;

toolong:
    snprintf(err, errlen, "redis_url: a part of the URL is too long");
    return -1;
badhost:
    snprintf(err, errlen, "redis_url: malformed host");
    return -1;
badport:
    snprintf(err, errlen, "redis_url: port must be 1..65535");
    return -1;
}

void
redis_conn_init(struct redis_conn *rc, const struct redis_target *t,
                long connect_timeout_ms, long io_timeout_ms)
{
    memset(rc, 0, sizeof(*rc));
    rc->target = *t;
    rc->connect_timeout_ms = connect_timeout_ms;
    rc->io_timeout_ms = io_timeout_ms;
}

void
redis_conn_close(struct redis_conn *rc)
{
    if (rc->ctx != NULL) {
        redisFree(rc->ctx);
        rc->ctx = NULL;
    }
}

static struct timeval
ms_to_tv(long ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

/* Record why the context failed and drop it. */
static void
redis_conn_fail(struct redis_conn *rc, const char *what)
{
    if (rc->ctx != NULL && rc->ctx->err != 0)
        snprintf(rc->err, sizeof(rc->err), "%s: %s", what, rc->ctx->errstr);
    else
        snprintf(rc->err, sizeof(rc->err), "%s: connection lost", what);
    redis_conn_close(rc);
}

int
redis_conn_connect(struct redis_conn *rc)
{
    const struct redis_target *t = &rc->target;
    redisReply *r;

    redis_conn_close(rc);
    if (t->is_unix)
        rc->ctx = redisConnectUnixWithTimeout(t->path,
                                              ms_to_tv(rc->connect_timeout_ms));
    else
        rc->ctx = redisConnectWithTimeout(t->host, t->port,
                                          ms_to_tv(rc->connect_timeout_ms));
    if (rc->ctx == NULL) {
        snprintf(rc->err, sizeof(rc->err), "connect: out of memory");
        return -1;
    }
    if (rc->ctx->err != 0) {
        redis_conn_fail(rc, "connect");
        return -1;
    }
    if (redisSetTimeout(rc->ctx, ms_to_tv(rc->io_timeout_ms)) != REDIS_OK) {
        redis_conn_fail(rc, "set timeout");
        return -1;
    }
    if (!t->is_unix)
        (void)redisEnableKeepAlive(rc->ctx);
    /* hiredis frees its read buffer whenever it is empty and more than
     * 16 KiB of it is unused, so every batch-sized reply would grow it
     * anew; keep up to REDIS_READER_KEEP of it between replies. */
    rc->ctx->reader->maxbuf = REDIS_READER_KEEP;

    if (t->password[0] != '\0') {
        const char *argv[3] = {"AUTH", t->user, t->password};
        size_t argvlen[3] = {4, strlen(t->user), strlen(t->password)};
        int argc = 3;
        if (t->user[0] == '\0') {
            argv[1] = t->password;
            argvlen[1] = argvlen[2];
            argc = 2;
        }
        r = redis_conn_command(rc, argc, argv, argvlen);
        if (r == NULL)
            return -1;
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(rc->err, sizeof(rc->err), "AUTH refused: %.*s",
                     (int)r->len, r->str);
            freeReplyObject(r);
            redis_conn_close(rc);
            return -1;
        }
        freeReplyObject(r);
    }
    if (t->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", t->db);
        const char *argv[2] = {"SELECT", db};
        size_t argvlen[2] = {6, strlen(db)};
        r = redis_conn_command(rc, 2, argv, argvlen);
        if (r == NULL)
            return -1;
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(rc->err, sizeof(rc->err), "SELECT %d refused: %.*s", t->db,
                     (int)r->len, r->str);
            freeReplyObject(r);
            redis_conn_close(rc);
            return -1;
        }
        freeReplyObject(r);
    }
    rc->err[0] = '\0';
    return 0;
}

redisReply *
redis_conn_command(struct redis_conn *rc, int argc, const char **argv,
                   const size_t *argvlen)
{
    if (redis_conn_append(rc, argc, argv, argvlen) < 0)
        return NULL;
    return redis_conn_reply(rc);
}

int
redis_conn_append(struct redis_conn *rc, int argc, const char **argv,
                  const size_t *argvlen)
{
    if (rc->ctx == NULL) {
        snprintf(rc->err, sizeof(rc->err), "not connected");
        return -1;
    }
    if (redisAppendCommandArgv(rc->ctx, argc, argv, argvlen) != REDIS_OK) {
        redis_conn_fail(rc, argv[0]);
        return -1;
    }
    return 0;
}

redisReply *
redis_conn_reply(struct redis_conn *rc)
{
    void *reply = NULL;

    if (rc->ctx == NULL) {
        snprintf(rc->err, sizeof(rc->err), "not connected");
        return NULL;
    }
    if (redisGetReply(rc->ctx, &reply) != REDIS_OK || reply == NULL) {
        if (reply != NULL)
            freeReplyObject(reply);
        redis_conn_fail(rc, "reply");
        return NULL;
    }
    return reply;
}

int
redis_reply_is_error(const redisReply *reply, const char *code)
{
    size_t len = strlen(code);

    return reply != NULL && reply->type == REDIS_REPLY_ERROR &&
           reply->len >= len && memcmp(reply->str, code, len) == 0 &&
           (reply->len == len || reply->str[len] == ' ');
}
