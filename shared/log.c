/*
 * log.c: the one logging module of sluice (interface in log.h).
 *
 * A line is formatted into a stack buffer and written with a single
 * write(2), so that lines from the supervisor and its workers, which share
 * stderr or an O_APPEND file, never interleave inside a line. Nothing here
 * allocates; a line longer than the buffer is cut and ends in "...".
 *
 * The destination is one of: stderr (the default: runit's svlogd and
 * systemd's journal add nothing we need), a file opened O_APPEND that
 * log_reopen() opens again after logrotate moved it, or syslog(3) with the
 * facility daemon.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "shared/log.h"

#define LOG_LINE_MAX 4096

enum log_dest { LOG_DEST_STDERR, LOG_DEST_FILE, LOG_DEST_SYSLOG };

static struct {
    enum log_dest dest;
    enum log_level level;
    int fd; /* stderr or the file */
    char path[1024];
    char role[32];
    char name[128];
} logger = {LOG_DEST_STDERR, LOG_LEVEL_INFO, STDERR_FILENO, "", "", ""};

static const char *const level_names[] = {"debug", "info", "notice", "warn",
                                          "error"};

int
log_level_parse(const char *name, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    if (strcasecmp(name, "warning") == 0) {
        *out = LOG_LEVEL_WARN;
        return 0;
    }
    return -1;
}

const char *
log_level_name(enum log_level level)
{
    if ((unsigned)level >= sizeof(level_names) / sizeof(level_names[0]))
        return "?";
    return level_names[level];
}

/* Open path for appending; the descriptor is not inherited by exec'd
 * programs. Returns the descriptor or -1 with errno set. */
static int
log_open_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int
log_init(const char *target, enum log_level level)
{
    if (target == NULL || target[0] == '\0' || strcmp(target, "stderr") == 0) {
        if (logger.dest == LOG_DEST_FILE)
            close(logger.fd);
        if (logger.dest == LOG_DEST_SYSLOG)
            closelog();
        logger.dest = LOG_DEST_STDERR;
        logger.fd = STDERR_FILENO;
        logger.path[0] = '\0';
    } else if (strcmp(target, "syslog") == 0) {
        if (logger.dest == LOG_DEST_FILE)
            close(logger.fd);
        if (logger.dest != LOG_DEST_SYSLOG)
            openlog("sluiced", LOG_PID | LOG_NDELAY, LOG_DAEMON);
        logger.dest = LOG_DEST_SYSLOG;
        logger.fd = -1;
        logger.path[0] = '\0';
    } else {
        if (target[0] != '/' || strlen(target) >= sizeof(logger.path)) {
            errno = EINVAL;
            return -1;
        }
        int fd = log_open_file(target);
        if (fd < 0)
            return -1;
        if (logger.dest == LOG_DEST_FILE)
            close(logger.fd);
        if (logger.dest == LOG_DEST_SYSLOG)
            closelog();
        logger.dest = LOG_DEST_FILE;
        logger.fd = fd;
        snprintf(logger.path, sizeof(logger.path), "%s", target);
    }
    logger.level = level;
    return 0;
}

void
log_set_level(enum log_level level)
{
    logger.level = level;
}

void
log_set_identity(const char *role, const char *name)
{
    snprintf(logger.role, sizeof(logger.role), "%s", role ? role : "");
    snprintf(logger.name, sizeof(logger.name), "%s", name ? name : "");
}

int
log_reopen(void)
{
    if (logger.dest != LOG_DEST_FILE)
        return 0;
    int fd = log_open_file(logger.path);
    if (fd < 0)
        return -1;
    /* Keep the descriptor number: forked workers hold the same one. */
    if (dup2(fd, logger.fd) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    close(fd);
    return 0;
}

/* Write all of buf; gives up quietly on an error (there is nowhere left to
 * report it). */
static void
log_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* Format one line and send it. errnum >= 0 appends ": strerror(errnum)". */
static void
log_emit(enum log_level level, int errnum, const char *fmt, va_list ap)
{
    char line[LOG_LINE_MAX];
    size_t len = 0, cap = sizeof(line) - 2; /* room for "\n" and NUL */
    int n;

    if (level < logger.level)
        return;

    if (logger.dest != LOG_DEST_SYSLOG) {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        len = strftime(line, cap, "%Y-%m-%dT%H:%M:%S", &tm);
        n = snprintf(line + len, cap - len, ".%03ldZ %-6s ",
                     ts.tv_nsec / 1000000L, log_level_name(level));
        len += (size_t)n;
    }
    if (logger.role[0] != '\0') {
        if (logger.name[0] != '\0')
            n = snprintf(line + len, cap - len, "%s %s[%ld]: ", logger.role,
                         logger.name, (long)getpid());
        else
            n = snprintf(line + len, cap - len, "%s[%ld]: ", logger.role,
                         (long)getpid());
        if (n > 0)
            len += (size_t)n < cap - len ? (size_t)n : cap - len - 1;
    }
    n = vsnprintf(line + len, cap - len, fmt, ap);
    if (n > 0)
        len += (size_t)n < cap - len ? (size_t)n : cap - len - 1;
    if (errnum >= 0 && len < cap - 1) {
        n = snprintf(line + len, cap - len, ": %s", strerror(errnum));
        if (n > 0)
            len += (size_t)n < cap - len ? (size_t)n : cap - len - 1;
    }
    if (len >= cap - 1)
        memcpy(line + cap - 4, "...", 3), len = cap - 1;
    /* One entry is one line: a newline inside a message would let a
     * value forge a line of its own. */
    for (size_t i = 0; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';

    if (logger.dest == LOG_DEST_SYSLOG) {
        static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_NOTICE, LOG_WARNING,
                                   LOG_ERR};
        line[len] = '\0';
        syslog(prio[level], "%s", line);
        return;
    }
    line[len++] = '\n';
    log_write_all(logger.fd, line, len);
}

void
log_vlog(enum log_level level, const char *fmt, va_list ap)
{
    log_emit(level, -1, fmt, ap);
}

#define LOG_FUNCTION(fn, level, with_errno)                                    \
    void fn(const char *fmt, ...)                                              \
    {                                                                          \
        int saved = errno;                                                     \
        va_list ap;                                                            \
        va_start(ap, fmt);                                                     \
        log_emit(level, with_errno ? saved : -1, fmt, ap);                     \
        va_end(ap);                                                            \
        errno = saved;                                                         \
    }

LOG_FUNCTION(log_debug, LOG_LEVEL_DEBUG, 0)
LOG_FUNCTION(log_info, LOG_LEVEL_INFO, 0)
LOG_FUNCTION(log_notice, LOG_LEVEL_NOTICE, 0)
LOG_FUNCTION(log_warn, LOG_LEVEL_WARN, 1)
LOG_FUNCTION(log_warnx, LOG_LEVEL_WARN, 0)
LOG_FUNCTION(log_error, LOG_LEVEL_ERROR, 0)

void
fatal(int code, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    log_emit(LOG_LEVEL_ERROR, saved, fmt, ap);
    va_end(ap);
    exit(code);
}

void
fatalx(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_emit(LOG_LEVEL_ERROR, -1, fmt, ap);
    va_end(ap);
    exit(code);
}
