/*
 * http.c: the supervisor's HTTP listener: GET /healthz, /readyz and
 * /metrics (http_listen). It lives in the supervisor, not in a worker, so
 * that a stuck worker cannot hide behind its own health check.
 *
 * Why not libmicrohttpd: it either runs its own threads (a threaded
 * supervisor that forks workers inherits locks held by threads that do
 * not exist in the child, and the flags-only signal handling of the loop
 * would have to be shared with them) or, in its external-loop mode, hands
 * its fds out as select() fd_sets (FD_SETSIZE-bound, and foreign to the
 * single ppoll() that takes the signals atomically). What is needed here
 * is far smaller than a general server: one request a connection, GET
 * only, a few fixed answers. So this is a minimal HTTP/1.0-style server
 * whose sockets sit in the supervisor's one ppoll() beside nothing else.
 *
 * Bounds (a slow or malicious client can never stall the loop):
 *   - every socket is non-blocking; each readiness gets one read() or
 *     write(), never a loop that waits;
 *   - the request line and headers: at most HTTP_MAX_REQUEST bytes, else
 *     431 and the connection closes;
 *   - a connection lives at most HTTP_DEADLINE_MS (monotonic clock) from
 *     its accept, whatever it is doing, then it is closed;
 *   - at most HTTP_MAX_CONNS connections at once. Another one is always
 *     accepted, and the oldest open connection is closed to make room.
 *     Leaving the newcomer in the kernel's backlog would make a health
 *     probe wait behind idle connections for up to their deadline, and
 *     closing the newcomer at once would refuse every probe while an
 *     attacker holds the table full; closing the oldest keeps a prompt
 *     probe answered (it needs the slot for milliseconds) while the
 *     number of fds stays bounded.
 *
 * Every answer carries Connection: close and ends the connection: the
 * write side is shut down, and what the client still sends is read and
 * dropped until it closes or the deadline passes, so that a client that
 * sent too much still reads its 431 instead of a reset.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <bsd/string.h>
#include <netinet/in.h>

#include "shared/clock.h"
#include "shared/log.h"
#include "supervisor/http.h"

#define ACCEPT_PER_TURN 16 /* accept() calls per readiness of the listener */

enum conn_state { CONN_READ, CONN_WRITE, CONN_DRAIN };

struct http_conn {
    int fd;
    enum conn_state state;
    int64_t deadline; /* monotonic ms */
    int64_t accepted; /* monotonic ms, for "the oldest" */
    size_t len;       /* bytes of req */
    char req[HTTP_MAX_REQUEST + 1];
    char *out; /* the answer, malloc'd */
    size_t out_len, out_off;
};

static void
conn_close(struct http_server *srv, int i)
{
    struct http_conn *c = &srv->conns[i];

    close(c->fd);
    free(c->out);
    /* the last one takes the free place */
    if (i != srv->nconns - 1)
        srv->conns[i] = srv->conns[srv->nconns - 1];
    srv->nconns--;
}

static const char *
reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 400:
        return "Bad Request";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

/* Build the answer into c->out and switch to writing. */
static void
conn_answer(struct http_conn *c, int status, const char *ctype,
            const char *body, size_t body_len)
{
    char head[256];
    int n;

    n = snprintf(head, sizeof(head),
                 "HTTP/1.0 %d %s\r\nContent-Type: %s\r\n"
                 "Content-Length: %zu\r\n%sConnection: close\r\n\r\n",
                 status, reason_phrase(status), ctype, body_len,
                 status == 405 ? "Allow: GET\r\n" : "");
    free(c->out);
    c->out = malloc((size_t)n + body_len);
    if (c->out == NULL) {
        c->out_len = 0; /* nothing to say: closes */
    } else {
        memcpy(c->out, head, (size_t)n);
        if (body_len > 0)
            memcpy(c->out + n, body, body_len);
        c->out_len = (size_t)n + body_len;
    }
    c->out_off = 0;
    c->state = CONN_WRITE;
}

static void
conn_answer_text(struct http_conn *c, int status, const char *text)
{
    conn_answer(c, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* A whole request head is in c->req (NUL-terminated): answer it. */
static void
conn_dispatch(struct http_server *srv, struct http_conn *c)
{
    char *sp1, *sp2, *q, *body = NULL;
    size_t body_len = 0;
    const char *ctype = "text/plain; charset=utf-8";
    FILE *f;
    int status;

    sp1 = strchr(c->req, ' ');
    if (sp1 == NULL || sp1 == c->req) {
        conn_answer_text(c, 400, "bad request\n");
        return;
    }
    *sp1 = '\0';
    sp2 = strpbrk(sp1 + 1, " \r\n");
    if (sp2 == NULL || *sp2 != ' ' || sp1[1] != '/') {
        conn_answer_text(c, 400, "bad request\n");
        return;
    }
    *sp2 = '\0';
    if (strcmp(c->req, "GET") != 0) {
        conn_answer_text(c, 405, "only GET\n");
        return;
    }
    if ((q = strchr(sp1 + 1, '?')) != NULL)
        *q = '\0';
    if ((f = open_memstream(&body, &body_len)) == NULL) {
        conn_answer_text(c, 500, "out of memory\n");
        return;
    }
    status = srv->handler(srv->arg, sp1 + 1, f, &ctype);
    if (fclose(f) != 0 || body == NULL) {
        free(body);
        conn_answer_text(c, 500, "out of memory\n");
        return;
    }
    conn_answer(c, status, ctype, body, body_len);
    free(body);
}

/* The end of the head: "\r\n\r\n" (or "\n\n" from a lax client). */
static int
head_complete(const char *buf)
{
    return strstr(buf, "\r\n\r\n") != NULL || strstr(buf, "\n\n") != NULL;
}

/* One readiness of connection i. Returns 1 when it was closed. */
static int
conn_step(struct http_server *srv, int i, short revents)
{
    struct http_conn *c = &srv->conns[i];
    char sink[4096];
    ssize_t n;

    switch (c->state) {
    case CONN_READ:
        if (!(revents & (POLLIN | POLLHUP | POLLERR)))
            return 0;
        n = read(c->fd, c->req + c->len, HTTP_MAX_REQUEST - c->len);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        if (n <= 0) {
            conn_close(srv, i);
            return 1;
        }
        c->len += (size_t)n;
        c->req[c->len] = '\0';
        if (memchr(c->req, '\0', c->len) != NULL) {
            conn_answer_text(c, 400, "bad request\n");
        } else if (head_complete(c->req)) {
            conn_dispatch(srv, c);
        } else if (c->len >= HTTP_MAX_REQUEST) {
            conn_answer_text(c, 431, "request head over 8 KiB\n");
        }
        return 0;
    case CONN_WRITE:
        if (revents & (POLLERR | POLLHUP) && !(revents & POLLOUT)) {
            conn_close(srv, i);
            return 1;
        }
        if (!(revents & POLLOUT))
            return 0;
        if (c->out_off < c->out_len) {
            n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                     MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
            if (n < 0) {
                conn_close(srv, i);
                return 1;
            }
            c->out_off += (size_t)n;
        }
        if (c->out_off >= c->out_len) {
            shutdown(c->fd, SHUT_WR);
            c->state = CONN_DRAIN;
        }
        return 0;
    case CONN_DRAIN:
        if (!(revents & (POLLIN | POLLHUP | POLLERR)))
            return 0;
        n = read(c->fd, sink, sizeof(sink));
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        if (n <= 0) {
            conn_close(srv, i);
            return 1;
        }
        return 0;
    }
    return 0;
}

/* Accept what waits, up to ACCEPT_PER_TURN; the oldest connection makes
 * room when the table is full (see the top of this file). */
static void
accept_some(struct http_server *srv)
{
    for (int k = 0; k < ACCEPT_PER_TURN; k++) {
        int fd = accept4(srv->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct http_conn *c;
        int64_t now;

        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                errno != ECONNABORTED)
                log_warn("http: accept");
            return;
        }
        now = clock_mono_ms();
        if (srv->nconns == HTTP_MAX_CONNS) {
            int oldest = 0;
            for (int i = 1; i < srv->nconns; i++)
                if (srv->conns[i].accepted < srv->conns[oldest].accepted)
                    oldest = i;
            conn_close(srv, oldest);
        }
        c = &srv->conns[srv->nconns++];
        c->fd = fd;
        c->state = CONN_READ;
        c->accepted = now;
        c->deadline = now + HTTP_DEADLINE_MS;
        c->len = 0;
        c->req[0] = '\0';
        c->out = NULL;
        c->out_len = c->out_off = 0;
    }
}

/* Split "host:port" / "[v6]:port" into host and port. Returns 0 or -1. */
static int
split_host_port(const char *in, char *host, size_t hostlen, char *port,
                size_t portlen)
{
    const char *colon = strrchr(in, ':');
    size_t hl;

    if (colon == NULL || colon == in || colon[1] == '\0')
        return -1;
    if (in[0] == '[') {
        if (colon[-1] != ']')
            return -1;
        in++;
        hl = (size_t)(colon - 1 - in);
    } else {
        hl = (size_t)(colon - in);
    }
    if (hl == 0 || hl >= hostlen)
        return -1;
    memcpy(host, in, hl);
    host[hl] = '\0';
    strlcpy(port, colon + 1, portlen);
    return 0;
}

static int
open_unix(struct http_server *srv, const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    struct stat st;
    int fd, probe;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlcpy(sa.sun_path, path, sizeof(sa.sun_path)) >=
        sizeof(sa.sun_path)) {
        snprintf(err, errlen, "http_listen %s: path too long", path);
        return -1;
    }
    /* A socket left by a supervisor that died goes; a live one stays. */
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 &&
            connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            close(probe);
            snprintf(err, errlen,
                     "http_listen %s: in use by a running "
                     "process",
                     path);
            return -1;
        }
        if (probe >= 0)
            close(probe);
        unlink(path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(fd, 128) < 0) {
        snprintf(err, errlen, "http_listen %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    srv->fd = fd;
    strlcpy(srv->unix_path, path, sizeof(srv->unix_path));
    return 0;
}

int
http_open(struct http_server *srv, const char *listen_on, http_handler h,
          void *arg, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL, *ai;
    char host[256], port[16];
    int fd = -1, rc, one = 1, saved = 0;

    memset(srv, 0, sizeof(*srv));
    srv->fd = -1;
    srv->handler = h;
    srv->arg = arg;
    srv->conns = calloc(HTTP_MAX_CONNS, sizeof(*srv->conns));
    if (srv->conns == NULL) {
        snprintf(err, errlen, "http_listen: out of memory");
        return -1;
    }
    if (listen_on[0] == '/') {
        if (open_unix(srv, listen_on, err, errlen) == 0)
            return 0;
        goto fail;
    }
    if (split_host_port(listen_on, host, sizeof(host), port, sizeof(port)) <
        0) {
        snprintf(err, errlen, "http_listen %s: not host:port", listen_on);
        goto fail;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
        snprintf(err, errlen, "http_listen %s: %s", listen_on,
                 gai_strerror(rc));
        goto fail;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 128) == 0)
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "http_listen %s: %s", listen_on, strerror(saved));
        goto fail;
    }
    srv->fd = fd;
    return 0;

fail:
    free(srv->conns);
    srv->conns = NULL;
    return -1;
}

void
http_local_address(const struct http_server *srv, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN], port[16];

    if (srv->unix_path[0] != '\0') {
        strlcpy(buf, srv->unix_path, len);
        return;
    }
    if (getsockname(srv->fd, (struct sockaddr *)&ss, &sl) < 0 ||
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port,
                    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        strlcpy(buf, "?", len);
        return;
    }
    snprintf(buf, len, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host,
             port);
}

int
http_pollfds(const struct http_server *srv, struct pollfd *pfd)
{
    int n = 0;

    if (srv->fd < 0)
        return 0;
    pfd[n].fd = srv->fd;
    pfd[n].events = POLLIN;
    pfd[n++].revents = 0;
    for (int i = 0; i < srv->nconns; i++) {
        pfd[n].fd = srv->conns[i].fd;
        pfd[n].events = srv->conns[i].state == CONN_WRITE ? POLLOUT : POLLIN;
        pfd[n++].revents = 0;
    }
    return n;
}

void
http_serve(struct http_server *srv, const struct pollfd *pfd, int n)
{
    int64_t now;

    if (srv->fd < 0)
        return;
    /* Connections first (by fd: conn_close() reorders the table), then
     * the listener, then the deadlines. */
    for (int k = 1; k < n; k++) {
        if (pfd[k].revents == 0)
            continue;
        for (int i = 0; i < srv->nconns; i++)
            if (srv->conns[i].fd == pfd[k].fd) {
                conn_step(srv, i, pfd[k].revents);
                break;
            }
    }
    if (n > 0 && (pfd[0].revents & POLLIN))
        accept_some(srv);
    now = clock_mono_ms();
    for (int i = srv->nconns - 1; i >= 0; i--)
        if (now >= srv->conns[i].deadline)
            conn_close(srv, i);
}

long
http_wait_ms(const struct http_server *srv, long timeout)
{
    int64_t now;

    if (srv->fd < 0 || srv->nconns == 0)
        return timeout;
    now = clock_mono_ms();
    for (int i = 0; i < srv->nconns; i++) {
        int64_t left = srv->conns[i].deadline - now;
        if (left < 0)
            left = 0;
        if (left < timeout)
            timeout = (long)left;
    }
    return timeout;
}

void
http_close(struct http_server *srv, int unlink_path)
{
    if (srv->conns != NULL)
        while (srv->nconns > 0)
            conn_close(srv, srv->nconns - 1);
    free(srv->conns);
    srv->conns = NULL;
    if (srv->fd >= 0) {
        close(srv->fd);
        srv->fd = -1;
        if (unlink_path && srv->unix_path[0] != '\0')
            unlink(srv->unix_path);
    }
}
