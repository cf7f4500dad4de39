/*
 * log.h: the one logging module of sluice.
 *
 * Every line carries a timestamp, the level, the process role and, for a
 * worker, its consumer name:
 *
 *   2026-11-22T09:00:00.123Z info  worker host-a-3[4242]: batch of 500 ...
 *
 * Output goes to stderr (the default, for runit and systemd), to a file that
 * log_reopen() reopens after rotation (SIGUSR1), or to syslog.
 * None of these functions allocate on the heap; all are safe to call before
 * log_init() (they then write to stderr at level info).
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdarg.h>

enum log_level {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO,
    LOG_LEVEL_NOTICE,
    LOG_LEVEL_WARN,
    LOG_LEVEL_ERROR,
};

/* Parse "debug", "info", "notice", "warn"/"warning", "error" (any case).
 * Returns 0 and sets *out, or -1 for an unknown name. */
int log_level_parse(const char *name, enum log_level *out);
const char *log_level_name(enum log_level level);

/*
 * Set the destination: target is "stderr", "syslog" or an absolute file
 * path (opened for append, created 0640). Returns 0, or -1 with errno set
 * when the file can't be opened (the previous destination stays).
 */
int log_init(const char *target, enum log_level level);
void log_set_level(enum log_level level);

/* Role and name shown on every line: ("supervisor", NULL), ("worker",
 * "host-a-3"), ("sluicectl", NULL). The strings are copied. */
void log_set_identity(const char *role, const char *name);

/* Reopen the log file (after logrotate moved it). No-op for stderr and
 * syslog. Returns 0, or -1 with errno set; the old file stays open then. */
int log_reopen(void);

void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* log_warn appends ": strerror(errno)"; log_warnx does not. */
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Log at error level and exit(code). */
void fatal(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
void fatalx(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

void log_vlog(enum log_level level, const char *fmt, va_list ap);

#endif
