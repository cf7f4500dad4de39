/*
 * relay_conn.c: the firehose reader's WebSocket client, on libwebsockets.
 *
 * libwebsockets runs everything from callbacks inside lws_service(). This
 * module keeps that inside: relay_conn_service() waits for the socket
 * with a poll() of its own, bounded by the caller's wait, then turns the
 * library once without letting it wait (lws_service() with a negative
 * timeout). The library's own wait can't be bounded: 4.1 ignores its
 * timeout and a scheduled timer did not shorten it, so a quiet relay held
 * the reader in it for the 30 s of the library's connection timer, with
 * no heartbeat, trimming, cursor save or lock renewal meanwhile. The
 * receive callback reassembles fragments into one buffer that never
 * grows past max_frame. The library's own log lines go to ours, errors
 * and warnings only.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bsd/string.h>
#include <libwebsockets.h>

#include "shared/buf.h"
#include "shared/log.h"
#include "worker/relay_conn.h"

#define SUBSCRIBE_PATH "/xrpc/com.atproto.sync.subscribeRepos"
/* What libwebsockets hands over at most per callback. */
#define RX_CHUNK 65536
/* What one read takes from the socket (libwebsockets' service buffer). */
#define RX_READ 262144

struct relay_conn {
    struct lws_context *ctx;
    struct lws *wsi;
    enum relay_state state;
    char error[256];
    size_t max_frame;
    relay_message_fn fn;
    void *arg;
    struct buf msg; /* the message being reassembled */
    int oversize;   /* it passed max_frame: only its start is kept */
    int binary;     /* its first fragment was binary */
    uint64_t bytes;
    char host[256];
    char path[1024];
};

int
relay_url_parse(const char *url, int *tls, char *host, size_t hostlen,
                int *port, char *path, size_t pathlen, char *err, size_t errlen)
{
    const char *p, *slash, *colon;
    size_t n;

    if (strncmp(url, "wss://", 6) == 0) {
        *tls = 1;
        *port = 443;
        p = url + 6;
    } else if (strncmp(url, "ws://", 5) == 0) {
        *tls = 0;
        *port = 80;
        p = url + 5;
    } else {
        snprintf(err, errlen, "not a ws:// or wss:// URL: '%s'", url);
        return -1;
    }
    slash = strchr(p, '/');
    n = slash ? (size_t)(slash - p) : strlen(p);
    colon = memchr(p, ':', n);
    if (colon != NULL) {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (end != p + n || v < 1 || v > 65535) {
            snprintf(err, errlen, "bad port in '%s'", url);
            return -1;
        }
        *port = (int)v;
        n = (size_t)(colon - p);
    }
    if (n == 0 || n >= hostlen) {
        snprintf(err, errlen, "no host in '%s'", url);
        return -1;
    }
    memcpy(host, p, n);
    host[n] = '\0';
    if (slash == NULL || strcmp(slash, "/") == 0)
        slash = SUBSCRIBE_PATH;
    if (strlcpy(path, slash, pathlen) >= pathlen) {
        snprintf(err, errlen, "path too long in '%s'", url);
        return -1;
    }
    return 0;
}

/* libwebsockets' log lines, into ours. */
static void
lws_log_line(int level, const char *line)
{
    size_t n = strlen(line);

    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (level & LLL_ERR)
        log_warnx("relay: libwebsockets: %.*s", (int)n, line);
    else
        log_debug("relay: libwebsockets: %.*s", (int)n, line);
}

static void
closed_with(struct relay_conn *rc, const char *fmt, const char *what)
{
    rc->state = RELAY_CLOSED;
    rc->wsi = NULL;
    if (rc->error[0] == '\0')
        snprintf(rc->error, sizeof(rc->error), fmt, what ? what : "");
}

/* One fragment of a message: append it, or only count it past the
 * limit; hand the message over at its last fragment. Returns -1 to close. */
static int
on_receive(struct relay_conn *rc, struct lws *wsi, const void *in, size_t len)
{
    int rv = 0;

    rc->bytes += len;
    if (lws_is_first_fragment(wsi)) {
        rc->msg.len = 0;
        rc->oversize = 0;
        rc->binary = lws_frame_is_binary(wsi);
    }
    if (!rc->oversize && rc->msg.len + len > rc->max_frame) {
        rc->oversize = 1; /* from here on only its start is kept */
        if (rc->msg.len > RELAY_OVERSIZE_KEEP)
            rc->msg.len = RELAY_OVERSIZE_KEEP;
    }
    size_t room = rc->oversize ? (rc->msg.len < RELAY_OVERSIZE_KEEP
                                      ? RELAY_OVERSIZE_KEEP - rc->msg.len
                                      : 0)
                               : len;
    if (room > len)
        room = len;
    if (room > 0) {
        if (buf_reserve(&rc->msg, room) < 0) {
            snprintf(rc->error, sizeof(rc->error),
                     "out of memory for a message of %zu bytes",
                     rc->msg.len + room);
            return -1;
        }
        memcpy(rc->msg.p + rc->msg.len, in, room);
        rc->msg.len += room;
    }
    if (!lws_is_final_fragment(wsi))
        return 0;
    if (!rc->binary) {
        log_warnx("relay: a text message of %zu bytes, not a frame; "
                  "skipped",
                  rc->msg.len);
    } else if (rc->fn(rc->arg, (const uint8_t *)rc->msg.p, rc->msg.len,
                      rc->oversize) != 0) {
        snprintf(rc->error, sizeof(rc->error), "closed by the reader");
        rv = -1;
    }
    rc->msg.len = 0;
    rc->oversize = 0;
    /* A message that was large leaves a large buffer: give it back. */
    if (rc->msg.cap > 4 * RX_CHUNK * 16)
        buf_free(&rc->msg);
    return rv;
}

static int
relay_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
               void *in, size_t len)
{
    struct relay_conn *rc = lws_context_user(lws_get_context(wsi));

    (void)user;
    if (rc == NULL)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        rc->state = RELAY_OPEN;
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        return on_receive(rc, wsi, in, len);
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        closed_with(rc, "connection failed: %s", in ? (const char *)in : "?");
        break;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        closed_with(rc, "the relay closed the connection%s", "");
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
        closed_with(rc, "connection closed%s", "");
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"sluice-firehose", relay_callback, 0, RX_CHUNK, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

struct relay_conn *
relay_conn_open(const char *url, int64_t cursor, size_t max_frame,
                relay_message_fn fn, void *arg, char *err, size_t errlen)
{
    struct lws_context_creation_info info;
    struct lws_client_connect_info ci;
    struct relay_conn *rc;
    char path[sizeof(rc->path) - 32];
    int tls, port;

    if ((rc = calloc(1, sizeof(*rc))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (relay_url_parse(url, &tls, rc->host, sizeof(rc->host), &port, path,
                        sizeof(path), err, errlen) < 0) {
        free(rc);
        return NULL;
    }
    if (cursor > 0)
        snprintf(rc->path, sizeof(rc->path), "%s%scursor=%lld", path,
                 strchr(path, '?') ? "&" : "?", (long long)cursor);
    else
        strlcpy(rc->path, path, sizeof(rc->path));
    rc->max_frame = max_frame;
    rc->fn = fn;
    rc->arg = arg;

    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_line);
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.user = rc;
    info.gid = (gid_t)-1;
    info.uid = (uid_t)-1;
    info.options = tls ? LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT : 0;
    info.fd_limit_per_thread = 8;
    /* what one read takes from the socket: a few whole frames (they
     * average 5 KB), not the library's 4 KiB default, which cost a
     * service turn, and so a Redis round trip, for every frame */
    info.pt_serv_buf_size = RX_READ;
    info.timeout_secs = 30; /* connect, TLS and upgrade */
    if ((rc->ctx = lws_create_context(&info)) == NULL) {
        snprintf(err, errlen, "libwebsockets: can't create a context");
        free(rc);
        return NULL;
    }
    memset(&ci, 0, sizeof(ci));
    ci.context = rc->ctx;
    ci.address = rc->host;
    ci.port = port;
    ci.ssl_connection = tls ? LCCSCF_USE_SSL : 0;
    ci.path = rc->path;
    ci.host = rc->host;
    ci.origin = rc->host;
    ci.protocol = NULL;
    ci.local_protocol_name = protocols[0].name;
    ci.pwsi = &rc->wsi;
    rc->state = RELAY_CONNECTING;
    if (lws_client_connect_via_info(&ci) == NULL && rc->state != RELAY_CLOSED)
        closed_with(rc, "can't start connecting to %.200s", rc->host);
    return rc;
}

void
relay_conn_service(struct relay_conn *rc, long wait_ms)
{
    int fd;

    if (rc == NULL || rc->ctx == NULL)
        return;
    fd = rc->wsi != NULL ? (int)lws_get_socket_fd(rc->wsi) : -1;
    if (wait_ms > 0 && fd >= 0) {
        /* while connecting, writability moves the handshake on too */
        struct pollfd p = {
            .fd = fd,
            .events = (short)(POLLIN |
                              (rc->state == RELAY_CONNECTING ? POLLOUT : 0))};
        (void)poll(&p, 1, (int)wait_ms);
    } else if (wait_ms > 0) {
        (void)poll(NULL, 0, wait_ms < 10 ? (int)wait_ms : 10);
    }
    lws_service(rc->ctx, -1);
}

enum relay_state
relay_conn_state(const struct relay_conn *rc)
{
    return rc ? rc->state : RELAY_CLOSED;
}

const char *
relay_conn_error(const struct relay_conn *rc)
{
    return rc && rc->state == RELAY_CLOSED ? rc->error : "";
}

uint64_t
relay_conn_bytes(const struct relay_conn *rc)
{
    return rc ? rc->bytes : 0;
}

void
relay_conn_close(struct relay_conn *rc)
{
    if (rc == NULL)
        return;
    if (rc->ctx != NULL) {
        /* No callback may reach rc while the context goes. */
        rc->fn = NULL;
        lws_context_destroy(rc->ctx);
    }
    buf_free(&rc->msg);
    free(rc);
}
