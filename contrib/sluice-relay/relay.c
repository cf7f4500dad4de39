/*
 * relay.c: sluice-relay, a recorded firehose played back as a relay.
 *
 * It serves com.atproto.sync.subscribeRepos over plain WebSocket (ws://)
 * from a capture of relay frames, so that the firehose reader (sluiced
 * --firehose) can be benchmarked without the network, and so that a user
 * can replay what a relay once sent:
 *
 *   zstd -dc frames.bin.zst | sluice-relay -n 100 -
 *   ws://127.0.0.1:40123
 *
 * The capture is repeated records of [u32 little-endian length][frame],
 * one frame being one binary WebSocket message as a relay sends it. It is
 * held in memory whole; nothing else grows with it or with the loops.
 *
 * With -n LOOPS the capture is played LOOPS times (0: for ever) and every
 * frame's seq is rewritten so that the seqs keep rising: the k-th frame
 * sent (k = 0, 1, ...) carries base + k, base being the first frame's
 * seq. A frame whose seq can't be read goes as it is and takes no seq.
 * ?cursor=C starts a connection with the frame of seq C + 1, as a relay
 * does; once every loop is played the connection stays open and idle, a
 * relay with nothing new. -c N closes each connection after N frames, to
 * exercise the reader's reconnects.
 *
 * One thread, one ppoll() loop, non-blocking sockets. Each connection has
 * its own position and an output buffer of a few dozen frames that is
 * rendered again only when the socket has taken all of it, so a slow
 * reader costs one buffer, not the capture, and a fast one gets large
 * writes. What a client sends after the handshake is read and dropped,
 * except its close frame, which ends the connection. Any path is served;
 * a request that is not a WebSocket upgrade gets 400.
 *
 * It prints the URL it listens on (ws://HOST:PORT, one line) to stdout,
 * and on SIGTERM or SIGINT a one-line summary to stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <openssl/evp.h>

#include "shared/buf.h"
#include "shared/exitcode.h"
#include "worker/firehose_frame.h"

#define REQ_MAX      8192  /* bytes of a request's line and headers */
#define BATCH_BYTES  65536 /* render no more once a batch holds this */
#define BATCH_FRAMES 64    /* frames of one batch at most */
#define TURN_WRITES  16    /* send() calls for one client in one turn */
#define MAX_CLIENTS  512
#define WS_GUID      "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static volatile sig_atomic_t stop_requested;

/* SIGTERM, SIGINT: the loop ends at its next turn. */
static void
on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* A one-line error on stderr, then exit(code). */
static void __attribute__((format(printf, 2, 3), noreturn))
die(int code, const char *fmt, ...)
{
    va_list ap;

    fputs("sluice-relay: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

/* ---- the capture ---------------------------------------------------- */

struct frame_ref {
    size_t off, len; /* in capture.data */
    int has_seq;     /* its seq could be read: it is renumbered */
};

struct capture {
    struct buf data;
    struct frame_ref *frames;
    size_t nframes;
    size_t *counted; /* indexes of the frames with a seq, in order */
    size_t ncounted;
    int64_t base; /* the first readable seq (0 when none is) */
};

/* Read all of f into b. Exits on a read error or when memory runs out. */
static void
read_all(FILE *f, const char *name, struct buf *b)
{
    for (;;) {
        if (buf_reserve(b, 65536) < 0)
            die(EXIT_SOFTWARE, "out of memory reading %s", name);
        size_t n = fread(b->p + b->len, 1, b->cap - b->len, f);
        b->len += n;
        if (n == 0) {
            if (ferror(f))
                die(EXIT_USAGE, "can't read %s: %s", name, strerror(errno));
            return;
        }
    }
}

/* Load and index the capture of path ("-" is stdin). The capture owns
 * everything it holds for the life of the program. Exits on a missing,
 * truncated or empty file. */
static void
capture_load(struct capture *cap, const char *path)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    size_t at = 0, room = 0;

    if (f == NULL)
        die(EXIT_USAGE, "can't open %s: %s", path, strerror(errno));
    read_all(f, path, &cap->data);
    if (f != stdin)
        fclose(f);

    const uint8_t *p = (const uint8_t *)cap->data.p;
    while (at < cap->data.len) {
        if (cap->data.len - at < 4)
            die(EXIT_USAGE, "%s: a truncated length at byte %zu", path, at);
        size_t len = (size_t)p[at] | (size_t)p[at + 1] << 8 |
                     (size_t)p[at + 2] << 16 | (size_t)p[at + 3] << 24;
        at += 4;
        if (len > cap->data.len - at)
            die(EXIT_USAGE,
                "%s: frame %zu of %zu bytes runs past the end of the file",
                path, cap->nframes, len);
        if (cap->nframes == room) {
            room = room ? room * 2 : 1024;
            cap->frames = realloc(cap->frames, room * sizeof(*cap->frames));
            cap->counted = realloc(cap->counted, room * sizeof(*cap->counted));
            if (cap->frames == NULL || cap->counted == NULL)
                die(EXIT_SOFTWARE, "out of memory indexing %s", path);
        }
        struct frame_ref *fr = &cap->frames[cap->nframes];
        int64_t seq;
        fr->off = at;
        fr->len = len;
        fr->has_seq = frame_seq(p + at, len, &seq) == 0 && seq >= 0;
        if (fr->has_seq) {
            if (cap->ncounted == 0)
                cap->base = seq;
            cap->counted[cap->ncounted++] = cap->nframes;
        }
        cap->nframes++;
        at += len;
    }
    if (cap->nframes == 0)
        die(EXIT_USAGE, "%s: no frames", path);
}

/* ---- connections ---------------------------------------------------- */

struct client {
    int fd;
    char *req; /* the request until the handshake is done, then NULL */
    size_t req_len;

    struct buf out;            /* what to send: the 101 response, then frames */
    size_t off;                /* of out, sent already */
    size_t ends[BATCH_FRAMES]; /* end offsets in out of its frames */
    unsigned nends, ends_sent;

    /* The next frame: capture index idx of loop `loop`; k is the count of
     * renumbered frames before it (its seq is base + k). */
    int more; /* a next frame exists */
    uint64_t loop;
    size_t idx;
    int64_t k;
    uint64_t sent;     /* frames sent whole on this connection */
    uint64_t rendered; /* frames put into out on this connection */

    /* Client frames, skipped: their header so far, then payload left. */
    uint8_t hdr[14];
    unsigned hdr_len;
    uint64_t skip;
};

struct relay {
    struct capture cap;
    uint64_t loops;       /* 0: for ever */
    uint64_t close_after; /* 0: never */
    struct buf scratch;   /* frame_with_seq()'s output, reused */
    struct client *clients[MAX_CLIENTS];
    size_t nclients;
    uint64_t connections, frames_sent, bytes_sent;
};

/* Close and free c. Can't fail. */
static void
client_free(struct client *c)
{
    close(c->fd);
    free(c->req);
    buf_free(&c->out);
    free(c);
}

/* Place c's next frame at the renumbered frame k0 (the start when k0 <=
 * 0 or the capture has no seqs). Can't fail. */
static void
client_seek(const struct relay *r, struct client *c, int64_t k0)
{
    const struct capture *cap = &r->cap;

    c->more = 1;
    c->loop = 0;
    c->idx = 0;
    c->k = 0;
    if (k0 <= 0 || cap->ncounted == 0)
        return;
    c->loop = (uint64_t)k0 / cap->ncounted;
    c->idx = cap->counted[(uint64_t)k0 % cap->ncounted];
    c->k = k0;
    if (r->loops != 0 && c->loop >= r->loops)
        c->more = 0;
}

/* Append n bytes to c's output. 0, or -1 when memory runs out. */
static int
out_put(struct client *c, const void *p, size_t n)
{
    if (buf_reserve(&c->out, n) < 0)
        return -1;
    memcpy(c->out.p + c->out.len, p, n);
    c->out.len += n;
    return 0;
}

/* Append the next frame to c's output as one binary message, and move
 * on. 0, or -1 when memory runs out (the connection is to be dropped). */
static int
client_render_one(struct relay *r, struct client *c)
{
    const struct capture *cap = &r->cap;
    const struct frame_ref *fr = &cap->frames[c->idx];
    const uint8_t *msg = (const uint8_t *)cap->data.p + fr->off;
    size_t len = fr->len;
    uint8_t head[10];
    size_t hn;

    if (fr->has_seq) {
        if (frame_with_seq(msg, len, cap->base + c->k, &r->scratch) < 0)
            return -1;
        msg = (const uint8_t *)r->scratch.p;
        len = r->scratch.len;
        c->k++;
    }
    head[0] = 0x82; /* FIN, binary */
    if (len < 126) {
        head[1] = (uint8_t)len;
        hn = 2;
    } else if (len <= 0xffff) {
        head[1] = 126;
        head[2] = (uint8_t)(len >> 8);
        head[3] = (uint8_t)len;
        hn = 4;
    } else {
        head[1] = 127;
        for (int i = 0; i < 8; i++)
            head[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        hn = 10;
    }
    if (buf_reserve(&c->out, hn + len) < 0)
        return -1;
    memcpy(c->out.p + c->out.len, head, hn);
    memcpy(c->out.p + c->out.len + hn, msg, len);
    c->out.len += hn + len;
    c->ends[c->nends++] = c->out.len;
    c->rendered++;

    if (++c->idx == cap->nframes) {
        c->idx = 0;
        c->loop++;
        if (r->loops != 0 && c->loop >= r->loops)
            c->more = 0;
    }
    return 0;
}

/* Render c's next batch of frames into its output, sent whole (the
 * caller checks). 0, or -1 when memory runs out. */
static int
client_fill(struct relay *r, struct client *c)
{
    c->out.len = 0;
    c->off = 0;
    c->nends = 0;
    c->ends_sent = 0;
    while (c->more && c->nends < BATCH_FRAMES && c->out.len < BATCH_BYTES &&
           (r->close_after == 0 || c->rendered < r->close_after))
        if (client_render_one(r, c) < 0)
            return -1;
    return 0;
}

/* Whether c has bytes to send. */
static int
client_pending(const struct client *c)
{
    return c->off < c->out.len;
}

/* Render c's next batch when the last one is sent whole, so that
 * client_pending() says whether c has more to send. 0, or -1 when the
 * connection is to be dropped: memory, or the -c count reached. */
static int
client_refill(struct relay *r, struct client *c)
{
    if (client_pending(c))
        return 0;
    if (r->close_after != 0 && c->sent >= r->close_after)
        return -1;
    return client_fill(r, c);
}

/* Send what c's output holds and render more while the socket takes it
 * (at most TURN_WRITES send() calls, so that other clients get their
 * turn). 0, or -1 when the connection is to be dropped: a send error,
 * memory, or the -c count reached. */
static int
client_write(struct relay *r, struct client *c)
{
    for (int i = 0; i < TURN_WRITES && client_pending(c); i++) {
        ssize_t n =
            send(c->fd, c->out.p + c->off, c->out.len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
        c->off += (size_t)n;
        r->bytes_sent += (uint64_t)n;
        while (c->ends_sent < c->nends && c->ends[c->ends_sent] <= c->off) {
            c->ends_sent++;
            c->sent++;
            r->frames_sent++;
        }
        if (client_refill(r, c) < 0)
            return -1;
    }
    return 0;
}

/* Skip the client's frames in n bytes of input. -1 at its close frame. */
static int
client_input(struct client *c, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (c->skip > 0) {
            size_t k = c->skip < n ? (size_t)c->skip : n;
            c->skip -= k;
            p += k;
            n -= k;
            continue;
        }
        c->hdr[c->hdr_len++] = *p++;
        n--;
        if (c->hdr_len < 2)
            continue;
        unsigned l7 = c->hdr[1] & 0x7f;
        unsigned ext = l7 == 126 ? 2 : l7 == 127 ? 8 : 0;
        unsigned need = 2 + ext + (c->hdr[1] & 0x80 ? 4 : 0);
        if (c->hdr_len < need)
            continue;
        if ((c->hdr[0] & 0x0f) == 0x8)
            return -1;
        uint64_t len = l7;
        if (ext > 0) {
            len = 0;
            for (unsigned i = 0; i < ext; i++)
                len = len << 8 | c->hdr[2 + i];
        }
        c->skip = len;
        c->hdr_len = 0;
    }
    return 0;
}

/* Trim spaces and tabs around s (in place); returns the start. */
static char *
trim(char *s)
{
    size_t n;

    while (*s == ' ' || *s == '\t')
        s++;
    n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

/* The cursor of a request path: 1 and *cursor when ?cursor=C (or
 * &cursor=C) is there, 0 when it isn't, -1 when it is not a number. */
static int
path_cursor(const char *path, int64_t *cursor)
{
    const char *q = strchr(path, '?');

    while (q != NULL) {
        q++;
        if (strncmp(q, "cursor=", 7) == 0) {
            char *end;
            errno = 0;
            long long v = strtoll(q + 7, &end, 10);
            if (end == q + 7 || (*end != '\0' && *end != '&') || errno != 0)
                return -1;
            *cursor = v;
            return 1;
        }
        q = strchr(q, '&');
    }
    return 0;
}

/* Sec-WebSocket-Accept for key into accept (29 bytes). 0, or -1 when the
 * digest fails. */
static int
ws_accept(const char *key, char *accept)
{
    char in[256];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int n = snprintf(in, sizeof(in), "%s%s", key, WS_GUID);

    if (n < 0 || (size_t)n >= sizeof(in))
        return -1;
    if (EVP_Digest(in, (size_t)n, md, &mdlen, EVP_sha1(), NULL) != 1 ||
        mdlen != 20)
        return -1;
    EVP_EncodeBlock((unsigned char *)accept, md, 20);
    return 0;
}

/* Refuse c's request: a 400 response, best effort (it fits any fresh
 * socket buffer). The caller drops the connection. */
static void
client_refuse(struct client *c, const char *why)
{
    char resp[256];
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
                     "Content-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "\r\n%s\n",
                     strlen(why) + 1, why);

    if (n > 0 && (size_t)n < sizeof(resp) &&
        send(c->fd, resp, (size_t)n, MSG_NOSIGNAL) < 0) {
        /* nothing to do: the connection goes anyway */
    }
    shutdown(c->fd, SHUT_WR);
}

/* Answer c's complete request (NUL-terminated, hlen bytes up to and with
 * the blank line): the 101 response and the first frames, positioned at
 * the cursor. 0, or -1 when the connection is to be dropped (refused, or
 * out of memory). */
static int
client_handshake(struct relay *r, struct client *c)
{
    char *line, *save = NULL, *path, *key = NULL;
    int upgrade = 0, hc;
    int64_t cursor = 0;
    char accept[32], resp[256];

    line = strtok_r(c->req, "\r\n", &save);
    if (line == NULL || strncmp(line, "GET ", 4) != 0) {
        client_refuse(c, "only GET");
        return -1;
    }
    path = line + 4;
    char *sp = strchr(path, ' ');
    if (sp == NULL || strncmp(sp + 1, "HTTP/1.", 7) != 0) {
        client_refuse(c, "not an HTTP/1 request line");
        return -1;
    }
    *sp = '\0';
    while ((line = strtok_r(NULL, "\r\n", &save)) != NULL) {
        char *colon = strchr(line, ':');
        if (colon == NULL)
            continue;
        *colon = '\0';
        char *name = trim(line), *value = trim(colon + 1);
        if (strcasecmp(name, "Upgrade") == 0 && strcasestr(value, "websocket"))
            upgrade = 1;
        else if (strcasecmp(name, "Sec-WebSocket-Key") == 0)
            key = value;
    }
    if (!upgrade || key == NULL || *key == '\0') {
        client_refuse(c, "not a WebSocket upgrade");
        return -1;
    }
    if (ws_accept(key, accept) < 0) {
        client_refuse(c, "bad Sec-WebSocket-Key");
        return -1;
    }
    hc = path_cursor(path, &cursor);
    if (hc < 0) {
        client_refuse(c, "cursor is not a number");
        return -1;
    }
    /* ?cursor=C: the frame of seq C + 1 */
    client_seek(r, c,
                hc == 1 && r->cap.ncounted > 0 && cursor >= r->cap.base
                    ? cursor - r->cap.base + 1
                    : 0);

    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    if (out_put(c, resp, (size_t)n) < 0)
        return -1;
    free(c->req);
    c->req = NULL;
    return client_refill(r, c);
}

/* Read what c sent: the request until it is complete, then client frames
 * to skip. 0, or -1 when the connection is to be dropped (closed, an
 * error, a request over REQ_MAX, refused, a close frame). */
static int
client_read(struct relay *r, struct client *c)
{
    uint8_t tmp[16384];

    for (;;) {
        uint8_t *dst = tmp;
        size_t room = sizeof(tmp);
        if (c->req != NULL) {
            if (c->req_len >= REQ_MAX)
                return -1; /* headers over the bound: dropped */
            dst = (uint8_t *)c->req + c->req_len;
            room = REQ_MAX - c->req_len;
        }
        ssize_t n = recv(c->fd, dst, room, 0);
        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
        if (c->req == NULL) {
            if (client_input(c, tmp, (size_t)n) < 0)
                return -1;
            continue;
        }
        size_t from = c->req_len >= 3 ? c->req_len - 3 : 0;
        c->req_len += (size_t)n;
        c->req[c->req_len] = '\0';
        char *end = strstr(c->req + from, "\r\n\r\n");
        if (end == NULL)
            continue;
        /* what follows the blank line are already client frames */
        size_t hlen = (size_t)(end - c->req) + 4;
        uint8_t rest[REQ_MAX];
        size_t nrest = c->req_len - hlen;
        memcpy(rest, c->req + hlen, nrest);
        end[2] = '\0';
        if (client_handshake(r, c) < 0)
            return -1;
        if (client_input(c, rest, nrest) < 0)
            return -1;
    }
}

/* Accept every waiting connection. Exits only when memory runs out. */
static void
relay_accept(struct relay *r, int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                fprintf(stderr, "sluice-relay: accept: %s\n", strerror(errno));
            return;
        }
        if (r->nclients == MAX_CLIENTS) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct client *c = calloc(1, sizeof(*c));
        if (c == NULL || (c->req = malloc(REQ_MAX + 1)) == NULL)
            die(EXIT_SOFTWARE, "out of memory");
        c->fd = fd;
        r->clients[r->nclients++] = c;
        r->connections++;
    }
}

/* ---- listening ------------------------------------------------------ */

/* Listen on spec (HOST:PORT, [V6]:PORT) and print its ws:// URL. Returns
 * the socket; exits when the address is bad or can't be bound. */
static int
listen_on(const char *spec)
{
    char host[256], port[16], nhost[NI_MAXHOST], nport[NI_MAXSERV];
    const char *colon = strrchr(spec, ':');
    struct addrinfo hints, *res, *ai;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    size_t hl;
    int fd = -1, rc;

    if (colon == NULL || colon == spec || strlen(colon + 1) == 0 ||
        strlen(colon + 1) >= sizeof(port))
        die(EXIT_USAGE, "-l wants HOST:PORT, not '%s'", spec);
    hl = (size_t)(colon - spec);
    if (spec[0] == '[' && hl >= 2 && spec[hl - 1] == ']') {
        spec++;
        hl -= 2;
    }
    if (hl >= sizeof(host))
        die(EXIT_USAGE, "host too long in '%s'", spec);
    memcpy(host, spec, hl);
    host[hl] = '\0';
    strcpy(port, colon + 1);

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((rc = getaddrinfo(host, port, &hints, &res)) != 0)
        die(EXIT_USAGE, "-l %s:%s: %s", host, port, gai_strerror(rc));
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        int one = 1;
        fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 128) == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        die(EXIT_TEMPFAIL, "can't listen on %s:%s: %s", host, port,
            strerror(errno));
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 ||
        getnameinfo((struct sockaddr *)&ss, sl, nhost, sizeof(nhost), nport,
                    sizeof(nport), NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        die(EXIT_SOFTWARE, "can't name the listening address");
    if (ss.ss_family == AF_INET6)
        printf("ws://[%s]:%s\n", nhost, nport);
    else
        printf("ws://%s:%s\n", nhost, nport);
    fflush(stdout);
    return fd;
}

/* ---- main ----------------------------------------------------------- */

/* The usage text, to f. Can't fail. */
static void
usage(FILE *f)
{
    fputs("usage: sluice-relay [-l HOST:PORT] [-n LOOPS] [-c CLOSE_AFTER] "
          "FILE\n"
          "  Plays FILE ([u32 LE length][frame] records; - for stdin) as a\n"
          "  relay's com.atproto.sync.subscribeRepos over ws://.\n"
          "  -l HOST:PORT  listen there (127.0.0.1:0: a free port); the URL\n"
          "                is printed on stdout\n"
          "  -n LOOPS      play the capture LOOPS times with rising seq\n"
          "                (1; 0: for ever)\n"
          "  -c N          close each connection after N frames (0: never)\n"
          "Exit: 0 stopped by TERM/INT, 64 usage or bad file, 75 can't "
          "listen.\n",
          f);
}

/* A count option's value (decimal, >= 0); exits when it isn't one. */
static uint64_t
parse_count(const char *s, const char *what)
{
    char *end;

    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s == '\0' || *s == '-' || *end != '\0' || errno != 0)
        die(EXIT_USAGE, "%s wants a count, not '%s'", what, s);
    return v;
}

int
main(int argc, char **argv)
{
    static struct relay r;
    static struct pollfd pfd[MAX_CLIENTS + 1];
    const char *listen_spec = "127.0.0.1:0";
    struct sigaction sa;
    sigset_t block, orig;
    int ch, lfd;

    r.loops = 1;
    while ((ch = getopt(argc, argv, "l:n:c:h")) != -1) {
        switch (ch) {
        case 'l':
            listen_spec = optarg;
            break;
        case 'n':
            r.loops = parse_count(optarg, "-n");
            break;
        case 'c':
            r.close_after = parse_count(optarg, "-c");
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return EXIT_USAGE;
    }
    capture_load(&r.cap, argv[optind]);

    /* TERM and INT only while ppoll() waits: a flag, checked every turn */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &orig);
    sigdelset(&orig, SIGTERM);
    sigdelset(&orig, SIGINT);

    lfd = listen_on(listen_spec);

    while (!stop_requested) {
        size_t n = 0;
        pfd[n].fd = r.nclients < MAX_CLIENTS ? lfd : -1;
        pfd[n++].events = POLLIN;
        for (size_t i = 0; i < r.nclients; i++) {
            pfd[n].fd = r.clients[i]->fd;
            pfd[n].revents = 0;
            pfd[n++].events =
                (short)(POLLIN | (client_pending(r.clients[i]) ? POLLOUT : 0));
        }
        if (ppoll(pfd, n, NULL, &orig) < 0) {
            if (errno == EINTR)
                continue;
            die(EXIT_SOFTWARE, "poll: %s", strerror(errno));
        }
        /* clients first: pfd[1 + i] is clients[i] until one is dropped */
        size_t kept = 0;
        for (size_t i = 0; i < r.nclients; i++) {
            struct client *c = r.clients[i];
            short ev = pfd[1 + i].revents;
            int drop = 0;
            if (ev & (POLLIN | POLLHUP | POLLERR))
                drop = client_read(&r, c) < 0;
            if (!drop && (ev & POLLOUT))
                drop = client_write(&r, c) < 0;
            if (drop)
                client_free(c);
            else
                r.clients[kept++] = c;
        }
        r.nclients = kept;
        if (pfd[0].revents & POLLIN)
            relay_accept(&r, lfd);
    }
    for (size_t i = 0; i < r.nclients; i++)
        client_free(r.clients[i]);
    close(lfd);
    fprintf(stderr,
            "sluice-relay: %" PRIu64 " connections, %" PRIu64
            " frames sent (%" PRIu64 " bytes)\n",
            r.connections, r.frames_sent, r.bytes_sent);
    return EXIT_OK;
}
