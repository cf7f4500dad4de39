/*
 * relay_conn.h: one WebSocket connection to a relay's
 * com.atproto.sync.subscribeRepos, for the firehose reader.
 *
 * It hides libwebsockets: the reader opens a connection with a cursor,
 * turns relay_conn_service() in its loop, and gets every complete binary
 * message through a callback, already reassembled from its fragments and
 * bounded: a message longer than max_frame is not kept whole; the callback
 * gets its first RELAY_OVERSIZE_KEEP bytes and oversize = 1, so that the
 * reader can name (by its seq) the frame it skips.
 *
 * Each connection has a libwebsockets context of its own, made by
 * relay_conn_open() and destroyed by relay_conn_close(): a reconnect starts
 * from nothing, and closing (to pause, to reload, to stop) is immediate.
 *
 *   ws://host[:port][/path]   wss://host[:port][/path]
 * A URL without a path gets /xrpc/com.atproto.sync.subscribeRepos.
 */
#ifndef SLUICE_RELAY_CONN_H
#define SLUICE_RELAY_CONN_H

#include <stddef.h>
#include <stdint.h>

#define RELAY_OVERSIZE_KEEP 65536

enum relay_state {
    RELAY_CLOSED = 0, /* never opened, closed, or failed: see error */
    RELAY_CONNECTING, /* TCP, TLS and the HTTP upgrade under way */
    RELAY_OPEN,       /* messages flow */
};

/* Called for each message; a non-zero return closes the connection (the
 * reader asks for that when Redis failed under it). */
typedef int (*relay_message_fn)(void *arg, const uint8_t *msg, size_t len,
                                int oversize);

struct relay_conn;

/*
 * Check url and split it (the caller's buffers). Returns 0, or -1 with a
 * one-line reason in err. Used for the configuration check too.
 */
int relay_url_parse(const char *url, int *tls, char *host, size_t hostlen,
                    int *port, char *path, size_t pathlen, char *err,
                    size_t errlen);

/*
 * Start connecting to url, asking for the events after cursor (cursor <= 0:
 * no cursor, the relay's live tail). Messages go to fn(arg, ...). Returns
 * the connection (the caller frees it with relay_conn_close()), or NULL
 * with err set when the URL is bad or libwebsockets can't start.
 */
struct relay_conn *relay_conn_open(const char *url, int64_t cursor,
                                   size_t max_frame, relay_message_fn fn,
                                   void *arg, char *err, size_t errlen);

/*
 * Wait for network activity for at most wait_ms and handle it (messages
 * reach the callback from inside this call). A signal ends the wait early.
 * Can't fail: a broken connection shows in relay_conn_state().
 */
void relay_conn_service(struct relay_conn *rc, long wait_ms);

enum relay_state relay_conn_state(const struct relay_conn *rc);

/* Why the connection is RELAY_CLOSED ("" while it is not). */
const char *relay_conn_error(const struct relay_conn *rc);

/* Bytes of WebSocket payload received on this connection. */
uint64_t relay_conn_bytes(const struct relay_conn *rc);

/* Close the connection and free everything. rc may be NULL. */
void relay_conn_close(struct relay_conn *rc);

#endif
