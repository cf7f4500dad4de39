/*
 * worker.c: one consumer-group worker. It reads batches from a Redis
 * stream in a consumer group, has the sink write each batch in one
 * PostgreSQL transaction, and acks the batch only after COMMIT.
 *
 * The loop, one batch per turn:
 *
 *   1. Make sure Redis is connected (else back off) and the group exists.
 *   2. Fill a batch: after a (re)connect, this consumer's own pending
 *      entries first (read from ID 0 onwards until none are left; one
 *      at a time once they were read again before, since a worker that
 *      died holding them may have died of one of them, and each read
 *      counts a delivery of every entry it returns); then
 *      every claim_interval_ms an XAUTOCLAIM of entries idle longer than
 *      claim_idle_ms under any consumer (walking its cursor); otherwise
 *      new entries (`>`), COUNT
 *      batch_size, BLOCK block_ms (at most 1 s, so that signals, the
 *      parent pipe and the heartbeat are looked at every second), reading
 *      on until the batch is full or batch_timeout_ms passed.
 *   3. Decide each entry: delivered more than max_deliveries times, or
 *      refused by the sink's prepare(): dead letter. The rest is applied
 *      in one transaction. A transient PostgreSQL fault (connection,
 *      deadlock, serialization failure, shutdown: shared/pg_conn.h) rolls
 *      back and retries the same entries after a backoff, never acking and
 *      never dead-lettering them. A data error (PostgreSQL refused some
 *      entry's value) splits the entries in halves, each applied in its
 *      own transaction, recursively, until the culprit is alone: it is
 *      dead-lettered with PostgreSQL's message and the rest commits.
 *   4. XADD the dead letters, then one XACK of every committed or
 *      dead-lettered ID. If Redis fails at that point, the committed IDs
 *      are kept and acked after the reconnect (a redelivery in between is
 *      harmless: every write is idempotent); dead letters not confirmed by
 *      Redis stay unacked and are decided again when read again.
 *
 * A lost group (NOGROUP: Redis restarted empty, the group or the stream
 * deleted) is recreated at group_start_id, the same ID a new group starts
 * at, not at `$`: entries added while the group was missing, or never
 * processed, must not be skipped. If the stream survived, this replays it,
 * which costs time but changes nothing in the database because every
 * write is idempotent and counters move only when a row really appears or
 * disappears. The replay is logged with the stream's length.
 *
 * Signals only set flags (worker.h). TERM/INT: finish the current batch
 * (commit, ack) and exit 0; if a server is down at that moment the batch
 * is abandoned unacked (it stays pending for the next worker) rather than
 * waiting forever. QUIT: exit at the next check, nothing more is
 * committed. USR1: reopen the log. EOF on the parent pipe: as TERM.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bsd/string.h>

#include "shared/backoff.h"
#include "shared/clock.h"
#include "shared/exitcode.h"
#include "shared/log.h"
#include "shared/pg_conn.h"
#include "shared/redis_conn.h"
#include "worker/batch.h"
#include "worker/sink.h"
#include "worker/stream.h"
#include "worker/worker.h"

volatile sig_atomic_t worker_stop_requested;
volatile sig_atomic_t worker_quit_requested;
volatile sig_atomic_t worker_reopen_logs;

#define WAIT_SLICE_MS        250  /* longest sleep between flag checks */
#define TRIM_CHECK_MS        1000 /* entries trimmed unread: how often */
#define GROUP_PUBLISH_MS     1000 /* the group's figures: how often */
#define BLOCK_MAX_MS         1000 /* longest XREADGROUP BLOCK */
#define SUMMARY_INTERVAL_MS  10000
#define BACKOFF_LOG_EVERY_MS 30000 /* once retries are slow, log this often */
#define ERR_MAX              1024
#define DRAIN_RETRIES        5 /* quick retries of a batch after TERM */

enum read_phase {
    PHASE_PENDING, /* re-reading this consumer's own pending entries */
    PHASE_NEW,     /* reading new entries */
};

struct worker {
    const struct config *cfg;
    const char *name;
    int name_checked; /* the consumer name is known to be ours to use */
    struct stats_slot *slot;
    int parent_fd;
    char dead_key[CONFIG_STR_MAX + 8];
    char redis_shown[CONFIG_STR_MAX]; /* redacted URLs for the logs */
    char pg_shown[CONFIG_STR_MAX];

    struct redis_conn rc;
    struct stream st;
    PGconn *pg;
    const struct sink_type *sink_type;
    struct sink *sink;

    struct batch b;
    struct stream_entry **plist; /* prepared entries, for apply() */
    size_t plist_cap;
    enum read_phase phase;
    char pending_after[STREAM_ID_MAX];
    int64_t next_claim_ms; /* monotonic */
    int claim_more;        /* XAUTOCLAIM cursor mid-way: go on at once */
    int pending_single;    /* re-reading pending entries one at a time */

    const char **ack_ids; /* XACK arguments, kept across batches */
    size_t ack_ids_cap;
    char (*backlog)[STREAM_ID_MAX]; /* committed, not acked yet */
    size_t nbacklog, backlog_cap;

    struct backoff redis_bo, pg_bo;
    int64_t redis_logged_ms, pg_logged_ms; /* last "still down" line */
    int64_t redis_down_since, pg_down_since;
    enum worker_state state;
    int reading;        /* came to its first read: connected, name checked */
    int config_refused; /* the database lacks what the settings name */
    int abandoning;     /* stop requested while a server was down */

    /* the periodic summary */
    int64_t summary_ms;
    uint64_t sum_batches, sum_applied, sum_dead, sum_claimed, sum_retries;
    uint64_t sum_deadlocks;

    /* the sink's maintenance (sink_type.maintain) */
    int maintain_pending;       /* committed work may be waiting for it */
    int64_t next_maintain_ms;   /* monotonic */
    int64_t next_trim_check_ms; /* monotonic */
    int64_t next_group_ms;      /* monotonic: group figures due */
    int64_t maintain_logged_ms;
};

static struct stats_slot private_slot;

static void
on_stop_signal(int sig)
{
    (void)sig;
    worker_stop_requested = 1;
}

static void
on_quit_signal(int sig)
{
    (void)sig;
    worker_quit_requested = 1;
}

static void
on_usr1_signal(int sig)
{
    (void)sig;
    worker_reopen_logs = 1;
}

void
worker_signals_install(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_quit_signal;
    sigaction(SIGQUIT, &sa, NULL);
    sa.sa_handler = on_usr1_signal;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL); /* a dead server's socket */
}

/* ---- the stats slot ------------------------------------------------- */

/* Publish state and heartbeat. Can't fail. */
static void
worker_heartbeat(struct worker *w, enum worker_state state)
{
    if (worker_stop_requested && state == WORKER_RUNNING)
        state = WORKER_DRAINING;
    w->state = state;
    stats_slot_write_begin(w->slot);
    w->slot->state = (uint32_t)state;
    w->slot->heartbeat_ms = stats_now_ms();
    stats_slot_write_end(w->slot);
}

/* pg_wait_hook_fn: a statement still runs, or waits on another session's
 * locks; the worker is alive, and its heartbeat says so. */
static void
worker_pg_waiting(void *arg)
{
    struct worker *w = arg;

    stats_slot_write_begin(w->slot);
    w->slot->heartbeat_ms = stats_now_ms();
    stats_slot_write_end(w->slot);
}

/* Record the last error in the slot. Can't fail. */
static void
worker_set_error(struct worker *w, const char *msg)
{
    stats_slot_write_begin(w->slot);
    strlcpy(w->slot->last_error, msg, sizeof(w->slot->last_error));
    w->slot->last_error_ms = stats_now_ms();
    stats_slot_write_end(w->slot);
}

/* Add to one counter of the slot. */
#define SLOT_ADD(w, field, n)                                                  \
    do {                                                                       \
        stats_slot_write_begin((w)->slot);                                     \
        (w)->slot->c.field += (n);                                             \
        stats_slot_write_end((w)->slot);                                       \
    } while (0)

/*
 * Look, at most every TRIM_CHECK_MS and before the first read, for
 * entries the stream lost before the group read them (a MAXLEN cap that
 * the backlog outgrew): count them, and log each loss once, across all
 * the workers of the group. A failure here is left to the reads that
 * follow. Can't fail.
 */
static void
worker_trim_check(struct worker *w)
{
    const struct config *cfg = w->cfg;
    int64_t now = clock_mono_ms();
    long long lost;
    char msg[CONFIG_STR_MAX + 128];

    if (now < w->next_trim_check_ms)
        return;
    w->next_trim_check_ms = now + TRIM_CHECK_MS;
    if (stream_trimmed_unread(&w->st, &lost) != STREAM_OK) {
        log_debug("trimmed-unread check: %s", w->st.err);
        return;
    }
    if (lost == 0)
        return;
    if (lost > 0) {
        SLOT_ADD(w, entries_trimmed_unread, (uint64_t)lost);
        snprintf(msg, sizeof(msg),
                 "%lld entries trimmed before group %s read them", lost,
                 cfg->consumer_group);
    } else {
        snprintf(msg, sizeof(msg),
                 "entries trimmed before group %s read them "
                 "(Redis can't tell how many)",
                 cfg->consumer_group);
    }
    worker_set_error(w, msg);
    log_error("%s: %s lost them. The stream's cap (XADD MAXLEN) is smaller "
              "than the group's backlog: raise it, or let sluice's firehose "
              "reader write the stream with stream_trim = acked, which never "
              "trims what a group has not acked",
              msg, cfg->stream_key);
}

/*
 * About once a second: the group's figures (XLEN, XINFO GROUPS) into this
 * worker's slot, where the supervisor reads them for its log line,
 * /metrics and /readyz, so that its loop never waits for Redis. Two
 * cheap commands on the connection this worker has open anyway. A
 * failure publishes nothing (the figures age); a broken connection is
 * found by the read that follows. Can't fail.
 */
static void
worker_group_publish(struct worker *w)
{
    struct stats_group_info gi;
    int64_t now = clock_mono_ms();

    if (now < w->next_group_ms || w->rc.ctx == NULL)
        return;
    w->next_group_ms = now + GROUP_PUBLISH_MS;
    if (stats_group_query(w->rc.ctx, w->cfg->stream_key, w->cfg->consumer_group,
                          &gi) < 0) {
        log_debug("group figures: %s", gi.error);
        return;
    }
    stats_slot_write_begin(w->slot);
    w->slot->group_length = gi.length;
    w->slot->group_pending = gi.pending;
    w->slot->group_lag = gi.lag;
    w->slot->group_consumers = gi.consumers;
    w->slot->group_ms = stats_now_ms();
    stats_slot_write_end(w->slot);
}

/* ---- flags, the parent pipe, waiting --------------------------------- */

/* Look at USR1 and the parent pipe. Can't fail. */
static void
worker_check_events(struct worker *w)
{
    if (worker_reopen_logs) {
        worker_reopen_logs = 0;
        if (log_reopen() < 0)
            log_warn("cannot reopen the log");
    }
    if (worker_parent_gone(&w->parent_fd))
        worker_stop_requested = 1;
}

int
worker_parent_gone(int *parent_fd)
{
    struct pollfd pfd = {.fd = *parent_fd, .events = POLLIN};

    if (*parent_fd < 0 || poll(&pfd, 1, 0) <= 0)
        return 0;
    char buf[64];
    ssize_t n = 1;
    if (pfd.revents & POLLIN)
        n = read(*parent_fd, buf, sizeof(buf));
    if (n != 0 && !(pfd.revents & (POLLHUP | POLLERR)))
        return 0;
    log_notice("supervisor gone: stopping");
    close(*parent_fd);
    *parent_fd = -1;
    return 1;
}

/*
 * Sleep ms milliseconds in slices, keeping the heartbeat fresh. Returns 0,
 * or -1 early when a stop or quit was requested.
 */
static int
worker_wait(struct worker *w, long ms, enum worker_state state)
{
    int64_t until = clock_mono_ms() + ms;

    for (;;) {
        int64_t left = until - clock_mono_ms();
        worker_check_events(w);
        worker_heartbeat(w, state);
        /* PostgreSQL down: the group's figures still flow (Redis up) */
        worker_group_publish(w);
        if (worker_quit_requested || worker_stop_requested)
            return -1;
        if (left <= 0)
            return 0;
        if (left > WAIT_SLICE_MS)
            left = WAIT_SLICE_MS;
        if (w->parent_fd >= 0) {
            struct pollfd pfd = {.fd = w->parent_fd, .events = POLLIN};
            (void)poll(&pfd, 1, (int)left);
        } else {
            (void)poll(NULL, 0, (int)left);
        }
    }
}

/* Log a server fault: every attempt at first, then once per
 * BACKOFF_LOG_EVERY_MS. */
static void
log_fault(int64_t *logged_ms, unsigned attempts, long delay_ms,
          int64_t down_since, const char *server, const char *err)
{
    int64_t now = clock_mono_ms();

    if (attempts < 4 || now - *logged_ms >= BACKOFF_LOG_EVERY_MS) {
        log_warnx("%s: %s; down for %" PRId64 " s, retry %u in %ld ms", server,
                  err, (now - down_since) / 1000, attempts, delay_ms);
        *logged_ms = now;
    }
}

/* ---- Redis ----------------------------------------------------------- */

static int
backlog_add(struct worker *w, const char *id)
{
    if (w->nbacklog == w->backlog_cap) {
        size_t cap = w->backlog_cap ? w->backlog_cap * 2 : 512;
        void *n = realloc(w->backlog, cap * sizeof(*w->backlog));
        if (n == NULL)
            return -1;
        w->backlog = n;
        w->backlog_cap = cap;
    }
    strlcpy(w->backlog[w->nbacklog++], id, STREAM_ID_MAX);
    return 0;
}

/* Ack the committed IDs Redis could not take earlier. */
static enum stream_status
backlog_flush(struct worker *w)
{
    const char **ids;
    long long nacked = 0;
    enum stream_status st;

    if (w->nbacklog == 0)
        return STREAM_OK;
    ids = malloc(w->nbacklog * sizeof(*ids));
    if (ids == NULL)
        return STREAM_ERROR;
    for (size_t i = 0; i < w->nbacklog; i++)
        ids[i] = w->backlog[i];
    st = stream_ack(&w->st, ids, w->nbacklog, &nacked);
    free(ids);
    if (st == STREAM_OK || st == STREAM_NOGROUP) {
        /* NOGROUP: the group is gone with its pending list: nothing to
         * ack any more. */
        log_info("acked %lld of %zu entries committed while Redis was "
                 "unreachable",
                 nacked, w->nbacklog);
        SLOT_ADD(w, acks, (uint64_t)nacked);
        w->nbacklog = 0;
        return STREAM_OK;
    }
    return st;
}

/* Create the group (BUSYGROUP is fine); logs a creation. */
static enum stream_status
worker_group_create(struct worker *w, int lost)
{
    int created = 0;
    enum stream_status st = stream_group_create(&w->st, &created);

    if (st == STREAM_OK && created) {
        if (lost) {
            const char *argv[2] = {"XLEN", w->cfg->stream_key};
            size_t argvlen[2] = {4, strlen(w->cfg->stream_key)};
            redisReply *r = redis_conn_command(&w->rc, 2, argv, argvlen);
            long long len =
                r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
            if (r != NULL)
                freeReplyObject(r);
            log_warnx("consumer group %s was lost: recreated at %s; the "
                      "stream holds %lld entries, which are read again "
                      "(writes are idempotent)",
                      w->cfg->consumer_group, w->cfg->group_start_id, len);
        } else {
            log_notice("created consumer group %s on %s at %s",
                       w->cfg->consumer_group, w->cfg->stream_key,
                       w->cfg->group_start_id);
        }
    }
    return st;
}

/*
 * Connect to Redis if needed, with backoff, then make sure the group
 * exists and ack the backlog. Returns 0, or -1 when a stop or quit was
 * requested while waiting.
 */
/*
 * How long a consumer may stay quiet (XINFO CONSUMERS idle) and still be
 * taken for a live client: a reader blocks for a while between its reads,
 * so twice the longest BLOCK of any sluice worker and then some, and never
 * less than NAME_QUIET_MIN_MS, for readers that block longer.
 */
#define NAME_QUIET_MIN_MS 10000

/*
 * Make sure no other live client reads the group under this worker's
 * consumer name (two readers of one name read each other's pending
 * entries). A name the group does not list, or whose last read is older
 * than the quiet time, is free. A name read from recently is watched for
 * the rest of the quiet time: if it stays quiet it was a process that is
 * gone (this name's last run crashed); if it is read again, someone else
 * uses it, and the worker refuses to start. Returns 0 (checked, or to be
 * checked after a Redis fault) or -1 when the name is taken or a stop was
 * requested while waiting.
 */
static int
worker_name_check(struct worker *w)
{
    long long quiet = 2LL * BLOCK_MAX_MS + 2000, idle, pending, idle2;
    enum stream_status st;

    if (quiet < NAME_QUIET_MIN_MS)
        quiet = NAME_QUIET_MIN_MS;
    st = stream_consumer_seen(&w->st, &idle, &pending);
    if (st == STREAM_OK && idle >= 0 && idle < quiet) {
        log_info("consumer %s was active %lld ms ago (%lld pending): "
                 "watching it for %lld ms before reading under that name",
                 w->name, idle, pending, quiet - idle);
        if (worker_wait(w, (long)(quiet - idle + 200), WORKER_STARTING) < 0)
            return -1;
        st = stream_consumer_seen(&w->st, &idle2, &pending);
        if (st == STREAM_OK && idle2 >= 0 && idle2 < quiet) {
            log_error("consumer name %s is in use: another client of group "
                      "%s read under it %lld ms ago; give this sluiced a "
                      "consumer_id of its own",
                      w->name, w->cfg->consumer_group, idle2);
            return -1;
        }
    }
    if (st == STREAM_DOWN) {
        log_warn("redis: %s (the consumer name is checked once connected)",
                 w->st.err);
        return 0;
    }
    if (st != STREAM_OK)
        log_warn("redis: %s: the consumer name %s could not be checked",
                 w->st.err, w->name);
    w->name_checked = 1;
    return 0;
}

static int
redis_ensure(struct worker *w)
{
    while (w->rc.ctx == NULL) {
        enum stream_status st;

        if (worker_quit_requested)
            return -1;
        if (redis_conn_connect(&w->rc) == 0) {
            st = worker_group_create(w, 0);
            if (st == STREAM_OK)
                st = backlog_flush(w);
            if (st == STREAM_OK) {
                if (w->redis_down_since != 0)
                    log_notice("redis: connected again to %s after %" PRId64
                               " s",
                               w->redis_shown,
                               (clock_mono_ms() - w->redis_down_since) / 1000);
                else
                    log_info("redis: connected to %s", w->redis_shown);
                backoff_reset(&w->redis_bo);
                w->redis_down_since = 0;
                w->phase = PHASE_PENDING;
                strlcpy(w->pending_after, "0", sizeof(w->pending_after));
                return 0;
            }
            if (st != STREAM_DOWN)
                redis_conn_close(&w->rc);
            strlcpy(w->rc.err, w->st.err, sizeof(w->rc.err));
        }
        if (w->redis_down_since == 0)
            w->redis_down_since = clock_mono_ms();
        SLOT_ADD(w, redis_errors, 1);
        worker_set_error(w, w->rc.err);
        long delay = backoff_next(&w->redis_bo);
        log_fault(&w->redis_logged_ms, w->redis_bo.attempts, delay,
                  w->redis_down_since, "redis", w->rc.err);
        if (worker_wait(w, delay, WORKER_BACKOFF) < 0)
            return -1;
    }
    return 0;
}

/*
 * React to a failed stream command: a lost connection is dropped (the
 * next redis_ensure() reconnects), a lost group is recreated, any other
 * error is logged and waited out. Returns -1 when told to stop while
 * waiting.
 */
static int
worker_redis_fault(struct worker *w, enum stream_status st)
{
    SLOT_ADD(w, redis_errors, 1);
    worker_set_error(w, w->st.err);
    switch (st) {
    case STREAM_OK:
        return 0;
    case STREAM_DOWN:
        log_warnx("redis: %s; reconnecting", w->st.err);
        redis_conn_close(&w->rc);
        if (w->redis_down_since == 0)
            w->redis_down_since = clock_mono_ms();
        return 0;
    case STREAM_NOGROUP:
        log_warnx("redis: %s", w->st.err);
        st = worker_group_create(w, 1);
        w->phase = PHASE_PENDING;
        strlcpy(w->pending_after, "0", sizeof(w->pending_after));
        if (st == STREAM_OK)
            return 0;
        return worker_redis_fault(w, st);
    case STREAM_ERROR:
    default: {
        long delay = backoff_next(&w->redis_bo);
        log_fault(&w->redis_logged_ms, w->redis_bo.attempts, delay,
                  clock_mono_ms(), "redis", w->st.err);
        return worker_wait(w, delay, WORKER_BACKOFF);
    }
    }
}

/* ---- PostgreSQL ------------------------------------------------------ */

static void
pg_notice(void *arg, const char *message)
{
    (void)arg;
    log_debug("postgresql: %.*s", (int)strcspn(message, "\n"), message);
}

static void
pg_drop(struct worker *w)
{
    if (w->pg != NULL) {
        PQfinish(w->pg);
        w->pg = NULL;
    }
}

/* Connect to PostgreSQL if needed, with backoff, and let the sink set the
 * session up. Returns 0, or -1 when a stop or quit was requested. */
static int
pg_ensure(struct worker *w)
{
    char err[ERR_MAX];

    while (w->pg == NULL || PQstatus(w->pg) != CONNECTION_OK) {
        char appname[96];

        pg_drop(w);
        if (worker_quit_requested)
            return -1;
        snprintf(appname, sizeof(appname), "sluice %s", w->name);
        w->pg =
            pg_connect(w->cfg->database_url, appname, 10000, err, sizeof(err));
        if (w->pg != NULL) {
            enum sink_result cr = SINK_OK;
            PQsetNoticeProcessor(w->pg, pg_notice, NULL);
            if (w->sink_type->on_connect != NULL)
                cr = w->sink_type->on_connect(w->sink, w->pg, err, sizeof(err));
            if (cr == SINK_CONFIG) {
                /* the database lacks what the settings name: no retry
                 * mends that, a reload may */
                log_error("configuration: %s", err);
                worker_set_error(w, err);
                pg_drop(w);
                w->config_refused = 1;
                return -1;
            }
            if (cr == SINK_OK) {
                if (w->pg_down_since != 0)
                    log_notice("postgresql: connected again to %s after "
                               "%" PRId64 " s",
                               w->pg_shown,
                               (clock_mono_ms() - w->pg_down_since) / 1000);
                else
                    log_info("postgresql: connected to %s", w->pg_shown);
                backoff_reset(&w->pg_bo);
                w->pg_down_since = 0;
                return 0;
            }
            pg_drop(w);
        }
        if (w->pg_down_since == 0)
            w->pg_down_since = clock_mono_ms();
        SLOT_ADD(w, pg_errors, 1);
        worker_set_error(w, err);
        long delay = backoff_next(&w->pg_bo);
        log_fault(&w->pg_logged_ms, w->pg_bo.attempts, delay, w->pg_down_since,
                  "postgresql", err);
        if (worker_wait(w, delay, WORKER_BACKOFF) < 0)
            return -1;
    }
    return 0;
}

/* BEGIN; apply; COMMIT. Rolls back on failure (when the connection still
 * stands). */
static enum sink_result
worker_transaction(struct worker *w, struct stream_entry *const *entries,
                   size_t n, char *err, size_t errlen)
{
    enum sink_result r;
    PGresult *res;

    if (w->sink_type->before_apply != NULL &&
        w->sink_type->before_apply(w->sink, w->pg, entries, n, err, errlen) ==
            SINK_RETRY)
        return SINK_RETRY;
    res = pg_exec(w->pg, "BEGIN");
    r = sink_result_of_pg(w->pg, res, err, errlen);
    PQclear(res);
    if (r != SINK_OK)
        return SINK_RETRY;
    r = w->sink_type->apply(w->sink, w->pg, entries, n, err, errlen);
    if (r == SINK_OK) {
        res = pg_exec(w->pg, "COMMIT");
        r = sink_result_of_pg(w->pg, res, err, errlen);
        PQclear(res);
        if (r == SINK_OK)
            return SINK_OK;
    }
    if (PQstatus(w->pg) == CONNECTION_OK &&
        PQtransactionStatus(w->pg) != PQTRANS_IDLE) {
        char rb[256];
        if (pg_command(w->pg, "ROLLBACK", rb, sizeof(rb)) != PG_FAULT_NONE)
            pg_drop(w);
    }
    return r;
}

/* Index of an entry of the batch. */
static size_t
entry_index(const struct worker *w, const struct stream_entry *e)
{
    return (size_t)(e - w->b.entries);
}

/* Account for committed entries. */
static void
worker_committed(struct worker *w, struct stream_entry *const *entries,
                 size_t n, int64_t took_us)
{
    int64_t now = stats_now_ms();

    stats_slot_write_begin(w->slot);
    for (size_t i = 0; i < n; i++) {
        int64_t lat = now - (int64_t)entries[i]->id_ms;
        w->b.items[entry_index(w, entries[i])].fate = ENTRY_COMMITTED;
        stats_hist_add(w->slot, lat > 0 ? (uint64_t)lat : 0);
    }
    w->slot->c.events_applied += n;
    w->slot->c.batches_committed++;
    w->slot->last_batch_size = (uint32_t)n;
    w->slot->last_batch_us = (uint64_t)took_us;
    w->slot->heartbeat_ms = now;
    w->slot->last_commit_ms = now;
    stats_slot_write_end(w->slot);
    w->sum_batches++;
    w->sum_applied += n;
    w->maintain_pending = 1;
}

/*
 * The sink's maintenance, outside any batch: after this worker committed,
 * at most every maintain_ms, and at once when the stream is idle; an idle
 * worker also runs it every maintain_ms when it committed nothing itself
 * (a worker that died may have left work behind). A failure is logged and
 * the work stays for a later run (it is held in committed rows: nothing
 * is lost, and no entry waits for it).
 */
static void
worker_maintain(struct worker *w, int idle)
{
    char err[ERR_MAX];
    int64_t now;
    int pending = 1;

    if (w->sink_type->maintain == NULL || w->pg == NULL ||
        PQstatus(w->pg) != CONNECTION_OK)
        return;
    now = clock_mono_ms();
    if (now < w->next_maintain_ms && !(idle && w->maintain_pending))
        return;
    if (!idle && !w->maintain_pending)
        return;
    w->next_maintain_ms = now + w->sink->maintain_ms;
    if (w->sink_type->maintain(w->sink, w->pg, &pending, err, sizeof(err)) !=
        SINK_OK) {
        if (now - w->maintain_logged_ms >= BACKOFF_LOG_EVERY_MS) {
            log_warnx("sink maintenance failed (trying again later): %s", err);
            w->maintain_logged_ms = now;
        }
        SLOT_ADD(w, pg_errors, 1);
        worker_set_error(w, err);
        if (PQstatus(w->pg) != CONNECTION_OK)
            pg_drop(w);
        return;
    }
    if (pending)
        SLOT_ADD(w, counter_folds, 1);
    w->maintain_pending = pending;
}

/*
 * Apply entries[0..n) in one transaction, retrying transient faults and
 * splitting on data errors (see the top of this file). Returns 0 when
 * every entry is decided (committed or dead), -1 when the worker must
 * stop first (nothing undecided gets acked).
 */
static int
worker_apply(struct worker *w, struct stream_entry *const *entries, size_t n)
{
    char err[ERR_MAX];
    int draining_retries = 0;

    for (;;) {
        int64_t t0;
        enum sink_result r;

        if (worker_quit_requested)
            return -1;
        if (pg_ensure(w) < 0)
            return -1;
        t0 = clock_mono_us();
        r = worker_transaction(w, entries, n, err, sizeof(err));
        if (r == SINK_OK) {
            worker_committed(w, entries, n, clock_mono_us() - t0);
            backoff_reset(&w->pg_bo);
            w->pg_down_since = 0;
            return 0;
        }
        SLOT_ADD(w, pg_errors, 1);
        worker_set_error(w, err);
        if (r == SINK_DATA_ERROR) {
            if (n == 1) {
                batch_set_dead(&w->b, entry_index(w, entries[0]), err);
                return 0;
            }
            log_debug("postgresql refused a value in %zu entries (%s): "
                      "splitting",
                      n, err);
            if (worker_apply(w, entries, n / 2) < 0)
                return -1;
            return worker_apply(w, entries + n / 2, n - n / 2);
        }
        /* transient: the same entries again, after a backoff */
        SLOT_ADD(w, batches_retried, 1);
        if (strncmp(err, "40P01", 5) == 0) {
            SLOT_ADD(w, deadlocks, 1);
            w->sum_deadlocks++;
        }
        w->sum_retries++;
        if (w->pg_down_since == 0)
            w->pg_down_since = clock_mono_ms();
        long delay = backoff_next(&w->pg_bo);
        log_fault(&w->pg_logged_ms, w->pg_bo.attempts, delay, w->pg_down_since,
                  "postgresql", err);
        if (w->pg != NULL && PQstatus(w->pg) != CONNECTION_OK)
            pg_drop(w);
        if (worker_stop_requested && w->pg != NULL &&
            draining_retries++ < DRAIN_RETRIES) {
            /* TERM while PostgreSQL still answers (a deadlock, a
             * serialization failure): finish the batch if a few quick
             * retries can; a server that is gone is not waited for. */
            (void)poll(NULL, 0, 50);
            continue;
        }
        if (worker_wait(w, delay, WORKER_BACKOFF) < 0)
            return -1;
    }
}

/* ---- one batch ------------------------------------------------------- */

/*
 * Fill w->b. Returns the status of the last Redis command; entries read
 * before a failure stay in the batch and are processed.
 */
static enum stream_status
worker_fill(struct worker *w)
{
    const struct config *cfg = w->cfg;
    struct batch *b = &w->b;
    size_t nread = 0, ngone = 0;
    enum stream_status st;
    int64_t now = clock_mono_ms();

    /* own pending entries first: claims only once they are done */
    if (w->phase == PHASE_NEW && (w->claim_more || now >= w->next_claim_ms)) {
        int done = 0;
        size_t nclaimed = 0;
        st = stream_autoclaim(&w->st, b, cfg->claim_idle_ms, cfg->batch_size,
                              &nclaimed, &ngone, &done);
        w->next_claim_ms = now + cfg->claim_interval_ms;
        w->claim_more = st == STREAM_OK && !done;
        if (st != STREAM_OK)
            return st;
        if (nclaimed > 0 || ngone > 0) {
            log_info("claimed %zu entries idle for more than %ld ms (%zu "
                     "no longer in the stream)",
                     nclaimed, cfg->claim_idle_ms, ngone);
            w->sum_claimed += nclaimed;
            SLOT_ADD(w, entries_claimed, nclaimed);
            return stream_fetch_deliveries(&w->st, b, 0);
        }
    }

    if (w->phase == PHASE_PENDING) {
        /* An entry read again before (delivered twice or more) and still
         * pending: a reader died holding it, maybe because of it. Such
         * entries are read one at a time, since each read counts as a
         * delivery of every entry it returns: an entry that kills its
         * worker reaches max_deliveries alone, and the others of its
         * batch are committed and acked on their own. */
        unsigned next = 0;
        int count = cfg->batch_size;
        st = stream_pending_next(&w->st, w->pending_after, &next);
        if (st != STREAM_OK)
            return st;
        if (next >= 2) {
            count = 1;
            if (!w->pending_single)
                log_notice("this consumer's pending entries were read "
                           "again before: re-reading them one at a time");
            w->pending_single = 1;
        }
        st =
            stream_read(&w->st, b, w->pending_after, count, -1, &nread, &ngone);
        if (st != STREAM_OK)
            return st;
        if (nread > 0 || ngone > 0) {
            /* go on after the last ID seen, entry or gone */
            const char *last = nread > 0 ? b->entries[b->n - 1].id : NULL;
            if (ngone > 0) {
                const char *g = b->gone[b->ngone - 1];
                uint64_t gms = 0, gseq = 0;
                (void)stream_id_parse(g, strlen(g), &gms, &gseq);
                if (last == NULL || gms > b->entries[b->n - 1].id_ms ||
                    (gms == b->entries[b->n - 1].id_ms &&
                     gseq > b->entries[b->n - 1].id_seq))
                    last = g;
            }
            strlcpy(w->pending_after, last, sizeof(w->pending_after));
            if (count == 1)
                log_debug("re-reading %zu of this consumer's pending "
                          "entries (%zu no longer in the stream)",
                          nread, ngone);
            else
                log_info("re-reading %zu of this consumer's pending entries "
                         "(%zu no longer in the stream)",
                         nread, ngone);
            return stream_fetch_deliveries(&w->st, b, 0);
        }
        w->phase = PHASE_NEW;
    }

    long block = cfg->block_ms < BLOCK_MAX_MS ? cfg->block_ms : BLOCK_MAX_MS;
    st = stream_read(&w->st, b, ">", cfg->batch_size, block, &nread, &ngone);
    if (st != STREAM_OK || b->n == 0)
        return st;
    b->opened_ms = clock_mono_ms();
    while (b->n < (size_t)cfg->batch_size && !worker_quit_requested &&
           !worker_stop_requested) {
        long left =
            cfg->batch_timeout_ms - (long)(clock_mono_ms() - b->opened_ms);
        if (left <= 0)
            break;
        if (left > BLOCK_MAX_MS)
            left = BLOCK_MAX_MS;
        st = stream_read(&w->st, b, ">", cfg->batch_size - (int)b->n, left,
                         &nread, &ngone);
        if (st != STREAM_OK || nread == 0)
            break;
    }
    for (size_t i = 0; i < b->n; i++)
        if (b->entries[i].deliveries == 0)
            b->entries[i].deliveries = 1;
    return st;
}

/* XADD the dead letters, then ack everything decided. */
static void
worker_ack(struct worker *w)
{
    struct batch *b = &w->b;
    enum stream_status st = STREAM_OK;
    size_t nadded = 0, nids = 0, ndead = batch_count(b, ENTRY_DEAD);
    const char **ids;
    long long nacked = 0;

    if (ndead > 0) {
        if (w->rc.ctx == NULL) {
            /* Redis is down: dead letters stay unacked for later */
            for (size_t i = 0; i < b->n; i++)
                if (b->items[i].fate == ENTRY_DEAD)
                    b->items[i].fate = ENTRY_READ;
        } else {
            st = stream_dead_letter(&w->st, b, &nadded);
            if (st != STREAM_OK)
                log_warnx("dead letters not written (%s): the entries stay "
                          "pending",
                          w->st.err);
        }
        for (size_t i = 0; i < b->n; i++)
            if (b->items[i].fate == ENTRY_DEAD)
                log_warnx("dead letter %s (delivered %u times): %s",
                          b->entries[i].id, b->entries[i].deliveries,
                          batch_reason(b, i));
        SLOT_ADD(w, dead_lettered, nadded);
        w->sum_dead += nadded;
    }

    if (w->ack_ids_cap < b->n + b->ngone) {
        size_t cap = b->n + b->ngone;
        void *p = realloc(w->ack_ids, cap * sizeof(*w->ack_ids));
        if (p == NULL) {
            log_warnx("out of memory while acking: entries stay pending");
            return;
        }
        w->ack_ids = p;
        w->ack_ids_cap = cap;
    }
    ids = w->ack_ids;
    for (size_t i = 0; i < b->n; i++)
        if (b->items[i].fate == ENTRY_COMMITTED ||
            b->items[i].fate == ENTRY_DEAD)
            ids[nids++] = b->entries[i].id;
    for (size_t i = 0; i < b->ngone; i++)
        ids[nids++] = b->gone[i];

    if (nids > 0) {
        if (w->rc.ctx != NULL && st != STREAM_DOWN)
            st = stream_ack(&w->st, ids, nids, &nacked);
        else
            st = STREAM_DOWN;
        if (st == STREAM_OK) {
            SLOT_ADD(w, acks, (uint64_t)nacked);
        } else if (st != STREAM_NOGROUP) {
            for (size_t i = 0; i < nids; i++)
                if (backlog_add(w, ids[i]) < 0)
                    break;
            log_warnx("could not ack %zu committed entries (%s): acking "
                      "them after the reconnect",
                      nids, w->rc.ctx ? w->st.err : w->rc.err);
            if (w->rc.ctx != NULL)
                (void)worker_redis_fault(w, st);
        } else {
            (void)worker_redis_fault(w, st);
        }
    }
}

/*
 * Decide, apply and ack the batch in w->b. Returns 0, or -1 when the
 * worker must stop before the batch was decided (nothing of it is acked
 * then, so it stays pending).
 */
static int
worker_process(struct worker *w)
{
    struct batch *b = &w->b;
    const struct config *cfg = w->cfg;
    char reason[SINK_REASON_MAX];
    size_t nprep = 0;
    int rc = 0;

    batch_seal(b);
    SLOT_ADD(w, entries_read, b->n);
    if (w->plist_cap < b->n) {
        void *p = realloc(w->plist, b->n * sizeof(*w->plist));
        if (p == NULL) {
            log_warnx("out of memory for a batch of %zu: retrying later", b->n);
            return 0;
        }
        w->plist = p;
        w->plist_cap = b->n;
    }
    for (size_t i = 0; i < b->n; i++) {
        struct stream_entry *e = &b->entries[i];
        if (cfg->max_deliveries > 0 &&
            e->deliveries > (unsigned)cfg->max_deliveries) {
            snprintf(reason, sizeof(reason),
                     "delivered %u times, more than max_deliveries (%d)",
                     e->deliveries, cfg->max_deliveries);
            batch_set_dead(b, i, reason);
            continue;
        }
        reason[0] = '\0';
        if (w->sink_type->prepare(w->sink, e, reason, sizeof(reason)) < 0) {
            batch_set_dead(b, i, reason[0] ? reason : "refused by the sink");
            continue;
        }
        b->items[i].fate = ENTRY_PREPARED;
        w->plist[nprep++] = e;
    }

    if (nprep > 0 && worker_apply(w, w->plist, nprep) < 0) {
        size_t undecided = batch_count(b, ENTRY_PREPARED);
        if (undecided > 0)
            log_notice("stopping with %zu entries not committed: they stay "
                       "pending for the next reader",
                       undecided);
        rc = -1;
        /* what did commit is still acked below */
    }
    if (rc == 0 || !worker_quit_requested)
        worker_ack(w);
    for (size_t i = 0; i < b->n; i++)
        if (b->entries[i].sink_state != NULL && w->sink_type->release)
            w->sink_type->release(w->sink, &b->entries[i]);
    return rc;
}

/* The periodic info line. */
static void
worker_summary(struct worker *w, int force)
{
    int64_t now = clock_mono_ms();
    double secs = (double)(now - w->summary_ms) / 1000.0;

    if (!force && now - w->summary_ms < SUMMARY_INTERVAL_MS)
        return;
    if (w->sum_batches || w->sum_dead || w->sum_claimed || w->sum_retries)
        log_info("last %.0f s: %" PRIu64 " batches, %" PRIu64
                 " entries applied (%.0f/s), %" PRIu64 " dead letters, %" PRIu64
                 " claimed, %" PRIu64 " retries (%" PRIu64 " deadlocks)",
                 secs, w->sum_batches, w->sum_applied,
                 secs > 0 ? (double)w->sum_applied / secs : 0.0, w->sum_dead,
                 w->sum_claimed, w->sum_retries, w->sum_deadlocks);
    w->summary_ms = now;
    w->sum_batches = w->sum_applied = w->sum_dead = w->sum_claimed =
        w->sum_retries = w->sum_deadlocks = 0;
}

static void
worker_cleanup(struct worker *w)
{
    batch_free(&w->b);
    free(w->plist);
    free(w->ack_ids);
    free(w->backlog);
    stream_free(&w->st);
    redis_conn_close(&w->rc);
    pg_drop(w);
    if (w->sink != NULL)
        w->sink_type->destroy(w->sink);
}

int
worker_run(const struct worker_options *opt)
{
    const struct config *cfg = opt->cfg;
    struct worker w;
    struct redis_target target;
    char err[ERR_MAX];
    long io_timeout;
    int code = EXIT_OK;

    memset(&w, 0, sizeof(w));
    w.cfg = cfg;
    w.name = opt->name;
    w.name_checked = opt->name_known;
    w.slot = opt->slot ? opt->slot : &private_slot;
    /* beat four times within worker_timeout while PostgreSQL works */
    pg_wait_hook_set(worker_pg_waiting, &w,
                     cfg->worker_timeout_ms / 4 < 1000
                         ? (cfg->worker_timeout_ms / 4 > 50
                                ? cfg->worker_timeout_ms / 4
                                : 50)
                         : 1000);
    w.parent_fd = opt->parent_fd;
    worker_signals_install();

    stats_slot_write_begin(w.slot);
    w.slot->pid = (int32_t)getpid();
    strlcpy(w.slot->name, opt->name, sizeof(w.slot->name));
    w.slot->started_ms = stats_now_ms();
    w.slot->state = WORKER_STARTING;
    w.slot->heartbeat_ms = w.slot->started_ms;
    stats_slot_write_end(w.slot);

    config_redact_url(cfg->redis_url, w.redis_shown, sizeof(w.redis_shown));
    config_redact_url(cfg->database_url, w.pg_shown, sizeof(w.pg_shown));
    config_dead_letter_stream(cfg, w.dead_key, sizeof(w.dead_key));
    if (cfg->batch_size < 1) {
        log_error("batch_size must be at least 1");
        return EXIT_CONFIG;
    }
    w.sink_type = sink_type_find(cfg->sink);
    if (w.sink_type == NULL) {
        log_error("unknown sink '%s'", cfg->sink);
        return EXIT_CONFIG;
    }
    if (redis_url_parse(cfg->redis_url, &target, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return EXIT_CONFIG;
    }
    w.sink = w.sink_type->create(cfg, err, sizeof(err));
    if (w.sink == NULL) {
        log_error("sink %s: %s", cfg->sink, err);
        return EXIT_CONFIG;
    }

    /* The socket timeout must exceed the longest BLOCK. */
    io_timeout = (cfg->block_ms < BLOCK_MAX_MS ? cfg->block_ms : BLOCK_MAX_MS) +
                 (cfg->redis_timeout_ms > 500 ? cfg->redis_timeout_ms : 500);
    redis_conn_init(&w.rc, &target,
                    cfg->redis_timeout_ms > 100 ? cfg->redis_timeout_ms : 100,
                    io_timeout);
    stream_init(&w.st, &w.rc, cfg->stream_key, cfg->consumer_group, opt->name,
                cfg->group_start_id, w.dead_key);
    batch_init(&w.b);
    backoff_init(&w.redis_bo, cfg->reconnect_delay_ms,
                 cfg->reconnect_delay_max_ms);
    backoff_init(&w.pg_bo, cfg->reconnect_delay_ms,
                 cfg->reconnect_delay_max_ms);
    w.phase = PHASE_PENDING;
    strlcpy(w.pending_after, "0", sizeof(w.pending_after));
    w.summary_ms = clock_mono_ms();
    w.next_claim_ms = clock_mono_ms();

    log_info("worker %s starting: stream %s, group %s, sink %s, batch %d, "
             "redis %s, postgresql %s, dead letters to %s",
             opt->name, cfg->stream_key, cfg->consumer_group, cfg->sink,
             cfg->batch_size, w.redis_shown, w.pg_shown, w.dead_key);

    while (!worker_quit_requested && !worker_stop_requested) {
        enum stream_status st;

        worker_check_events(&w);
        /* "running" once it has come to read: connected to both servers,
         * its name checked (the supervisor's readiness counts on that) */
        worker_heartbeat(&w, w.reading ? WORKER_RUNNING : WORKER_STARTING);
        worker_summary(&w, 0);
        if (redis_ensure(&w) < 0)
            break;
        if (!w.name_checked && worker_name_check(&w) < 0) {
            if (!worker_quit_requested && !worker_stop_requested)
                code = EXIT_CONFIG;
            break;
        }
        if (!w.name_checked)
            continue;
        if (pg_ensure(&w) < 0) {
            if (w.config_refused)
                code = EXIT_CONFIG;
            break;
        }
        w.reading = 1;
        worker_heartbeat(&w, WORKER_RUNNING);

        worker_maintain(&w, 0);
        worker_trim_check(&w);
        worker_group_publish(&w);
        batch_clear(&w.b);
        st = worker_fill(&w);
        if ((w.b.n > 0 || w.b.ngone > 0) && !worker_quit_requested) {
            if (worker_process(&w) < 0)
                break;
        } else if (st == STREAM_OK && !worker_quit_requested) {
            worker_maintain(&w, 1);
        }
        if (st != STREAM_OK && worker_redis_fault(&w, st) < 0)
            break;
    }

    if (worker_stop_requested && !worker_quit_requested && w.nbacklog > 0 &&
        w.rc.ctx != NULL)
        (void)backlog_flush(&w);
    /* A graceful stop leaves the group listing only live consumers: this
     * one goes if it holds nothing (an entry it holds keeps it listed, to
     * be read again under its name or claimed by another). */
    if (worker_stop_requested && !worker_quit_requested && code == EXIT_OK &&
        w.nbacklog == 0 && w.rc.ctx != NULL) {
        int removed;
        if (stream_consumer_remove_idle(&w.st, &removed) != STREAM_OK)
            log_warn("redis: %s", w.st.err);
        else if (removed)
            log_info("consumer %s removed from group %s (nothing pending)",
                     opt->name, cfg->consumer_group);
        else
            log_info("consumer %s stays in group %s: it holds pending "
                     "entries",
                     opt->name, cfg->consumer_group);
    }
    worker_summary(&w, 1);
    if (w.nbacklog > 0)
        log_notice("%zu committed entries left unacked: they will be read "
                   "again and change nothing",
                   w.nbacklog);
    log_info("worker %s stopped (%s)", opt->name,
             code != EXIT_OK         ? "refused to run"
             : worker_quit_requested ? "quit"
                                     : "stop requested");
    worker_heartbeat(&w, WORKER_DRAINING);
    batch_clear(&w.b);
    worker_cleanup(&w);
    return code;
}
