/*
 * notify.h: telling the init system how the service is doing.
 *
 * systemd (Type=notify): the sd_notify datagrams READY=1, RELOADING=1,
 * STOPPING=1, STATUS=<line> and WATCHDOG=1, sent to $NOTIFY_SOCKET.
 * s6 (notification-fd): one newline written to a descriptor the service
 * directory names, once the service is ready, and the descriptor closed.
 * runit needs nothing from here (its check script asks sluicectl).
 *
 * Every call is a no-op when the init system asked for nothing, and none
 * can fail in a way the caller must handle: a lost notification is
 * logged, never fatal.
 */
#ifndef SLUICE_NOTIFY_H
#define SLUICE_NOTIFY_H

/*
 * Read what the init system asked for: NOTIFY_SOCKET, WATCHDOG_USEC and
 * WATCHDOG_PID from the environment (then removed from it, so that the
 * children do not inherit them), and ready_fd (-1: none) for s6. Call
 * once, in the supervisor, before the first fork.
 */
void notify_init(int ready_fd);

/* The service does its job now (READY=1 with the status line; s6's
 * newline, the first time only). */
void notify_ready(const char *status);

/* A reload begins (RELOADING=1); notify_ready() says when it is done. */
void notify_reloading(void);

/* A stop begins (STOPPING=1). */
void notify_stopping(void);

/* The one-line status systemctl status shows (STATUS=). */
void notify_status(const char *status);

/* How often the watchdog wants WATCHDOG=1, in ms (half its timeout), or
 * 0 when no watchdog is set for this process. */
long notify_watchdog_ms(void);

/* The loop is alive (WATCHDOG=1). */
void notify_watchdog(void);

#endif
