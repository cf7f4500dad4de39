/*
 * worker.h: one consumer-group worker: the loop that reads a Redis stream
 * in a consumer group, hands batches to the sink, commits them in
 * PostgreSQL and acks them afterwards.
 */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <signal.h>

#include "shared/config.h"
#include "shared/stats.h"

struct worker_options {
    const struct config *cfg;
    const char *name;        /* consumer name, e.g. "host-a-3" */
    struct stats_slot *slot; /* where to publish counters; the worker owns
                                it while it runs (a private one if NULL) */
    int parent_fd;           /* read end of the supervisor's pipe, or -1:
                                EOF means the supervisor died */
    int name_known;          /* this supervisor ran a worker under this
                                name before: it is ours, skip the check
                                that no other client reads under it */
};

/* Set by signal handlers (installed by worker_run). */
extern volatile sig_atomic_t worker_stop_requested; /* TERM/INT: drain */
extern volatile sig_atomic_t worker_quit_requested; /* QUIT: now */
extern volatile sig_atomic_t worker_reopen_logs;    /* USR1 */

/* Install the handlers of the flags above (TERM, INT, QUIT, USR1) and
 * ignore SIGPIPE. No SA_RESTART, for poll's sake: libpq, hiredis and
 * libwebsockets retry their own reads and writes on EINTR. Can't fail. */
void worker_signals_install(void);

/* 1 when the supervisor's pipe *parent_fd (-1: none) is at EOF: the
 * supervisor died; the fd is closed and set to -1, and it is logged.
 * 0 otherwise. Never blocks. */
int worker_parent_gone(int *parent_fd);

/*
 * Run until told to stop. Returns the process exit code (exitcode.h):
 * EXIT_OK after a graceful stop (the current batch committed and acked),
 * EXIT_CONFIG when the configuration can't work (e.g. unknown sink),
 * EXIT_SOFTWARE on an internal error. Server outages never end the worker:
 * it backs off and reconnects.
 */
int worker_run(const struct worker_options *opt);

/* `sluiced --init-schema`: apply the configured sink's DDL under an
 * advisory lock, idempotently. Returns an exit code. */
int worker_init_schema(const struct config *cfg);

/* `sluiced --recount`: set the atproto sink's counters from the rows, in
 * chunks of one transaction each, beside running workers (recount.c).
 * Returns an exit code: EXIT_OK when every chunk was recounted. */
int worker_recount(const struct config *cfg);

/* `sluiced --check[=SCAN]`: print what in the atproto sink's tables
 * disagrees with itself, reading at most scan rows of each table (0: all)
 * in one snapshot (check.c). Returns EXIT_OK when nothing does,
 * EXIT_FOUND when something does, or another exit code. */
int worker_check(const struct config *cfg, long long scan);

#endif
