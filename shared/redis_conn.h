/*
 * redis_conn.h: one blocking Redis connection (hiredis 0.14) that knows how
 * to come back after a fault.
 *
 * hiredis 0.14 rules this module enforces: a context that returned an
 * error is never used again (it is freed and the next call reconnects from
 * scratch); the socket timeout is set again on every new context; AUTH and
 * SELECT are sent on every (re)connect.
 *
 * URLs: redis://[[user]:password@]host[:port][/db], and for a Unix socket
 * unix://[[user]:password@]/path/to/socket[?db=N]. The default port is 6379,
 * the default db 0.
 */
#ifndef SLUICE_REDIS_CONN_H
#define SLUICE_REDIS_CONN_H

#include <stddef.h>

#include <hiredis/hiredis.h>

struct redis_target {
    int is_unix; /* 1: path, 0: host and port */
    char host[256];
    int port;
    char path[256];
    char user[128];     /* "" = AUTH with the password only */
    char password[256]; /* "" = no AUTH */
    int db;
};

struct redis_conn {
    redisContext *ctx; /* NULL while disconnected */
    struct redis_target target;
    long connect_timeout_ms;
    long io_timeout_ms; /* socket timeout; must exceed any BLOCK used */
    char err[256];      /* the last fault, for logs */
};

/*
 * Parse url into t. Returns 0, or -1 with a message in err (the message
 * never contains the password). Unknown schemes (rediss: TLS) are refused.
 */
int redis_url_parse(const char *url, struct redis_target *t, char *err,
                    size_t errlen);

/* Set up rc (not connected yet). Can't fail. */
void redis_conn_init(struct redis_conn *rc, const struct redis_target *t,
                     long connect_timeout_ms, long io_timeout_ms);

/* Connect, set the socket timeout, AUTH and SELECT. Returns 0, or -1 with
 * rc->err set and rc->ctx NULL. Closes an existing context first. */
int redis_conn_connect(struct redis_conn *rc);

/* Free the context (no-op when disconnected). Can't fail. */
void redis_conn_close(struct redis_conn *rc);

/*
 * Send one command and wait for its reply. Returns the reply, which the
 * caller frees with freeReplyObject() (it may be an error reply: the
 * connection is still good then), or NULL when the connection failed: the
 * context is then freed, rc->err says why, and the caller reconnects.
 */
redisReply *redis_conn_command(struct redis_conn *rc, int argc,
                               const char **argv, const size_t *argvlen);

/* Pipelining: queue a command (0, or -1 when out of memory / disconnected,
 * with the context freed), then fetch the replies in order with
 * redis_conn_reply() (NULL on a connection fault, as above). */
int redis_conn_append(struct redis_conn *rc, int argc, const char **argv,
                      const size_t *argvlen);
redisReply *redis_conn_reply(struct redis_conn *rc);

/* 1 if reply is an error reply starting with the code (e.g. "NOGROUP"). */
int redis_reply_is_error(const redisReply *reply, const char *code);

#endif
