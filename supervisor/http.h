/*
 * http.h: the supervisor's small HTTP listener (health and metrics), run
 * inside the supervisor's ppoll() loop. See http.c.
 */
#ifndef SLUICE_HTTP_H
#define SLUICE_HTTP_H

#include <poll.h>
#include <stdint.h>
#include <stdio.h>

#define HTTP_MAX_REQUEST 8192 /* request line and headers, bytes */
#define HTTP_DEADLINE_MS 5000 /* a connection's whole life, monotonic */
#define HTTP_MAX_CONNS   64   /* open at once */
#define HTTP_NPOLLFD     (HTTP_MAX_CONNS + 1)

/*
 * Answers a GET for path (the query string removed): writes the body to
 * body, sets *ctype (a static string) and returns the status code. It
 * runs inside the loop, so it must not block.
 */
typedef int (*http_handler)(void *arg, const char *path, FILE *body,
                            const char **ctype);

struct http_conn;

struct http_server {
    int fd; /* listener, -1 when off */
    char unix_path[108];
    http_handler handler;
    void *arg;
    struct http_conn *conns; /* HTTP_MAX_CONNS of them */
    int nconns;
};

/*
 * Bind and listen on `listen` (host:port, [v6]:port or an absolute path
 * for a Unix socket). Returns 0, or -1 with a message in err.
 */
int http_open(struct http_server *srv, const char *listen, http_handler h,
              void *arg, char *err, size_t errlen);

/* The bound address, as "127.0.0.1:9187" or the path, into buf. */
void http_local_address(const struct http_server *srv, char *buf, size_t len);

/* Fill pfd (room for HTTP_NPOLLFD) with the fds to wait for; returns how
 * many (0 when off). */
int http_pollfds(const struct http_server *srv, struct pollfd *pfd);

/* After ppoll(): accept, read, answer, write and close what is due, and
 * close connections past their deadline. pfd and n as http_pollfds()
 * filled them (revents set). Never blocks. */
void http_serve(struct http_server *srv, const struct pollfd *pfd, int n);

/* timeout, or less when a connection's deadline comes sooner. */
long http_wait_ms(const struct http_server *srv, long timeout);

/* Close everything; unlink a Unix socket when unlink_path. In a forked
 * child: close the fds only (unlink_path 0). */
void http_close(struct http_server *srv, int unlink_path);

#endif
