/*
 * notify.c: readiness and liveness for systemd and s6 (see notify.h).
 *
 * The sd_notify protocol is a few lines: one datagram of "KEY=value"
 * lines on an AF_UNIX socket whose path is $NOTIFY_SOCKET (a leading '@'
 * names an abstract socket). It is spoken here rather than through
 * libsystemd, which would add a library (and its own dependencies) to
 * every installation for one sendto(), and which is absent where systemd
 * is not the init.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/socket.h>
#include <sys/un.h>

#include "shared/log.h"
#include "supervisor/notify.h"

static struct sockaddr_un notify_addr;
static socklen_t notify_addrlen; /* 0: no NOTIFY_SOCKET */
static int notify_fd = -1;       /* our datagram socket */
static int ready_fd = -1;        /* s6's notification fd, until used */
static long watchdog_ms;

void
notify_init(int fd)
{
    const char *path = getenv("NOTIFY_SOCKET");
    const char *usec = getenv("WATCHDOG_USEC");
    const char *wpid = getenv("WATCHDOG_PID");

    ready_fd = fd;
    if (path != NULL && path[0] != '\0' &&
        strlen(path) < sizeof(notify_addr.sun_path)) {
        size_t len = strlen(path);
        memset(&notify_addr, 0, sizeof(notify_addr));
        notify_addr.sun_family = AF_UNIX;
        memcpy(notify_addr.sun_path, path, len);
        if (path[0] == '@')
            notify_addr.sun_path[0] = '\0'; /* abstract namespace */
        notify_addrlen =
            (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
        notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (notify_fd < 0) {
            log_warn("NOTIFY_SOCKET %s: socket", path);
            notify_addrlen = 0;
        }
    } else if (path != NULL && path[0] != '\0') {
        log_warnx("NOTIFY_SOCKET is too long; systemd will not hear from "
                  "sluiced");
    }
    if (usec != NULL &&
        (wpid == NULL || strtol(wpid, NULL, 10) == (long)getpid())) {
        long long us = strtoll(usec, NULL, 10);
        if (us > 0)
            watchdog_ms = (long)(us / 2000);
        if (us > 0 && watchdog_ms == 0)
            watchdog_ms = 1;
    }
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

/* Send one datagram of lines; logged when it can't go. */
static void
notify_send(const char *msg)
{
    if (notify_addrlen == 0)
        return;
    if (sendto(notify_fd, msg, strlen(msg), MSG_NOSIGNAL,
               (const struct sockaddr *)&notify_addr, notify_addrlen) < 0)
        log_warn("sd_notify: %.40s", msg);
}

void
notify_ready(const char *status)
{
    char msg[512];

    snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", status ? status : "");
    notify_send(msg);
    if (ready_fd >= 0) {
        ssize_t n;
        do
            n = write(ready_fd, "\n", 1);
        while (n < 0 && errno == EINTR);
        if (n != 1)
            log_warn("readiness fd %d", ready_fd);
        close(ready_fd);
        ready_fd = -1;
    }
}

void
notify_reloading(void)
{
    notify_send("RELOADING=1\nSTATUS=reloading the configuration");
}

void
notify_stopping(void)
{
    notify_send("STOPPING=1\nSTATUS=stopping");
}

void
notify_status(const char *status)
{
    char msg[512];

    snprintf(msg, sizeof(msg), "STATUS=%s", status ? status : "");
    notify_send(msg);
}

long
notify_watchdog_ms(void)
{
    return notify_addrlen != 0 ? watchdog_ms : 0;
}

void
notify_watchdog(void)
{
    if (watchdog_ms > 0)
        notify_send("WATCHDOG=1");
}
