/*
 * supervisor.c: the pre-fork supervisor of sluiced.
 *
 * It owns the stats segment, the pidfile and the table of children
 * (children.c: the workers and the firehose reader, each a small state
 * machine), and runs one loop: ppoll() with the handled signals blocked
 * everywhere but inside the wait, so a signal handler only sets a flag
 * and the loop acts on it at the next turn. Each turn it
 *
 *   - reaps dead children (SIGCHLD), which schedules their restart with
 *     a delay that doubles on quick deaths and resets after a healthy
 *     run; a worker that exits EXIT_CONFIG is not restarted until a
 *     reload;
 *   - reloads the configuration (SIGHUP): a new worker count scales, any
 *     other change restarts the workers one at a time;
 *   - kills the children whose heartbeat has not changed for
 *     worker_timeout, starts those that are due, stops the ones above the
 *     wanted count;
 *   - logs the aggregate rate and the group's lag every stats_interval;
 *   - tells the init system (notify.c): READY=1 (or s6's newline) once
 *     every wanted worker consumes, RELOADING=1 and READY=1 around a
 *     reload, STOPPING=1, a STATUS= line with the rate, and WATCHDOG=1
 *     from this loop when systemd's watchdog is on.
 *
 * Every interval it measures (the stats interval, shutdown_timeout and,
 * in children.c, hangs and restart delays) runs on the monotonic clock
 * (shared/clock.h); wall time is only for the logs and the segment.
 *
 * Worker n (1..N) is named CONSUMER_ID-n and writes slot n-1. When
 * relay_url is set, one more child runs beside them, the firehose reader
 * (worker/firehose.c), with the segment's firehose slot: it is started,
 * restarted with backoff and checked for hangs like a worker, and
 * restarted alone when a reload changes its settings.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bsd/libutil.h>
#include <bsd/string.h>
#include <bsd/unistd.h>
#include <cjson/cJSON.h>

#include "shared/clock.h"
#include "shared/config.h"
#include "shared/exitcode.h"
#include "shared/log.h"
#include "shared/prom.h"
#include "shared/stats.h"
#include "supervisor/children.h"
#include "supervisor/daemon.h"
#include "supervisor/http.h"
#include "supervisor/notify.h"
#include "supervisor/supervisor.h"

/* The longest the loop sleeps: hang checks and restarts need a tick. */
#define TICK_MS 250
/* /readyz: a worker whose heartbeat has not changed for this long is not
 * consuming (it beats at least every second when it is). */
#define READY_BEAT_MS 5000
/* QUIT: how long workers get after SIGQUIT before SIGKILL. */
#define QUIT_GRACE_MS 1000
/* The group's figures come from the workers' slots (they ask Redis about
 * once a second; the loop never does): older than this, they are
 * unknown. */
#define GROUP_FRESH_MS 5000
/* Warn when the group's unacked entries exceed this share of
 * stream_maxlen. */
#define LAG_WARN_FRACTION 0.8

static volatile sig_atomic_t got_chld, got_hup, got_term, got_quit, got_usr1,
    got_ttin, got_ttou;

struct supervisor {
    const struct supervisor_options *opt;
    char config_path[PATH_MAX]; /* absolute: -d changes to / */
    struct config *cfg;
    char stats_name[256];
    struct stats_segment *seg;
    struct pidfh *pfh;
    int max_workers;           /* min(STATS_MAX_SLOTS, db_pool_size) */
    struct children ch;        /* the workers and the reader */
    int64_t shutdown_deadline; /* TERM/INT: monotonic ms */
    int64_t next_stats_ms;     /* monotonic */
    uint64_t last_applied;     /* for the rate */
    int64_t last_stats_ms;     /* monotonic */
    int ready;                 /* READY=1 sent: every worker consumed */
    int64_t next_watchdog_ms;  /* monotonic; 0: no watchdog */
    struct http_server http;   /* http_listen; fd -1 when off */
};

/* For the child's setup after fork (children.c's in_child hook). */
static struct http_server *child_http;

static void
on_signal(int sig)
{
    switch (sig) {
    case SIGCHLD:
        got_chld = 1;
        break;
    case SIGHUP:
        got_hup = 1;
        break;
    case SIGTERM:
    case SIGINT:
        got_term = 1;
        break;
    case SIGQUIT:
        got_quit = 1;
        break;
    case SIGUSR1:
        got_usr1 = 1;
        break;
    case SIGTTIN:
        got_ttin = 1;
        break;
    case SIGTTOU:
        got_ttou = 1;
        break;
    }
}

static const int handled_signals[] = {SIGCHLD, SIGHUP,  SIGTERM, SIGINT,
                                      SIGQUIT, SIGUSR1, SIGTTIN, SIGTTOU};
#define NHANDLED (sizeof(handled_signals) / sizeof(handled_signals[0]))

/* Block the handled signals (they are taken only inside ppoll) and
 * install the flag-setting handlers. *waitmask receives the mask to wait
 * with. Can't fail. */
static void
signals_install(sigset_t *waitmask)
{
    struct sigaction sa;
    sigset_t block;

    sigemptyset(&block);
    for (size_t i = 0; i < NHANDLED; i++)
        sigaddset(&block, handled_signals[i]);
    sigprocmask(SIG_BLOCK, &block, waitmask);
    for (size_t i = 0; i < NHANDLED; i++)
        sigdelset(waitmask, handled_signals[i]);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (size_t i = 0; i < NHANDLED; i++)
        sigaction(handled_signals[i], &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

/* In a new child (children.c calls it first): default dispositions,
 * nothing blocked. Can't fail. */
static void
signals_reset(void)
{
    struct sigaction sa;
    sigset_t none;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < NHANDLED; i++)
        sigaction(handled_signals[i], &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* The child's setup: signals back to default, the supervisor's HTTP
 * sockets closed (a worker must not hold the listener). */
static void
child_setup(void)
{
    signals_reset();
    if (child_http != NULL)
        http_close(child_http, 0);
}

/* Sum of events_applied over every slot (retired ones included). */
static uint64_t
applied_total(const struct supervisor *sv)
{
    struct stats_slot copy;
    uint64_t sum = 0;

    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        stats_slot_read(&sv->seg->slots[i], &copy);
        sum += copy.c.events_applied;
    }
    return sum;
}

/* Bound the wanted count by the slots and the connection cap. */
static int
bounded_workers(const struct supervisor *sv, int n)
{
    if (n > sv->max_workers)
        n = sv->max_workers;
    if (n < 1)
        n = 1;
    return n;
}

static void
set_wanted(struct supervisor *sv, int n, const char *why)
{
    if (n > sv->max_workers)
        log_warnx("workers: %d asked (%s), the limit is %d (db_pool_size "
                  "%d, %d slots)",
                  n, why, sv->max_workers, sv->cfg->db_pool_size,
                  STATS_MAX_SLOTS);
    n = bounded_workers(sv, n);
    if (n != sv->ch.wanted)
        log_info("workers: %d -> %d (%s)", sv->ch.wanted, n, why);
    /* Newly wanted ones are due now, with a fresh backoff. */
    children_set_wanted(&sv->ch, n);
    atomic_store(&sv->seg->hdr.workers_wanted, (uint32_t)n);
}

static int
compute_max_workers(const struct config *cfg)
{
    int m = STATS_MAX_SLOTS;

    if (cfg->db_pool_size > 0 && cfg->db_pool_size < m)
        m = cfg->db_pool_size;
    return m;
}

/*
 * SIGHUP: read the configuration again. A refused file changes nothing.
 * Settings that can't change without a new supervisor (pidfile, stats
 * name, user) keep their running values, with a warning.
 */
/* The one-line status the init system shows. */
static void
status_line(const struct supervisor *sv, double rate, char *buf, size_t len)
{
    snprintf(buf, len, "%d workers consuming %.100s/%.100s, ~%.0f events/s",
             children_running(&sv->ch), sv->cfg->stream_key,
             sv->cfg->consumer_group, rate);
}

/*
 * Ready: every wanted worker runs and has come to read (its slot says
 * running: it connected to Redis and PostgreSQL and checked its name).
 * The first time, the init system hears READY=1. Can't fail.
 */
static void
check_ready(struct supervisor *sv)
{
    struct stats_slot copy;
    char status[256];

    if (sv->ready || sv->ch.wanted == 0 ||
        children_running(&sv->ch) < sv->ch.wanted)
        return;
    for (int i = 0; i < sv->ch.wanted; i++) {
        stats_slot_read(&sv->seg->slots[i], &copy);
        if (copy.state != WORKER_RUNNING)
            return;
    }
    sv->ready = 1;
    status_line(sv, 0, status, sizeof(status));
    notify_ready(status);
    log_info("ready: %d workers consuming", sv->ch.wanted);
}

static void
reload(struct supervisor *sv)
{
    static struct config next; /* large: not on the stack */
    struct config cmp;
    char err[CONFIG_ERR_MAX];

    char status[256];

    notify_reloading();
    memset(&next, 0, sizeof(next));
    if (config_load(&next, sv->config_path[0] ? sv->config_path : NULL,
                    sv->opt->set_options, sv->opt->nset_options, err,
                    sizeof(err)) < 0) {
        log_error("reload refused, still running on the previous "
                  "configuration: %s",
                  err);
        if (sv->ready) {
            status_line(sv, 0, status, sizeof(status));
            notify_ready(status);
        }
        return;
    }
#define KEEP(field, what)                                                      \
    do {                                                                       \
        if (strcmp(next.field, sv->cfg->field) != 0) {                         \
            log_warnx("reload: %s can't change while sluiced runs; keeping "   \
                      "'%s' (restart sluiced to apply)",                       \
                      what, sv->cfg->field);                                   \
            strlcpy(next.field, sv->cfg->field, sizeof(next.field));           \
        }                                                                      \
    } while (0)
    KEEP(pidfile, "pidfile");
    KEEP(stats_name, "stats_name");
    KEEP(user, "user");
    KEEP(http_listen, "http_listen");
    KEEP(stream_key, "stream_key (the segment is named after it)");
    KEEP(consumer_group, "consumer_group (the segment is named after it)");
#undef KEEP

    if (strcmp(next.log_target, sv->cfg->log_target) != 0 &&
        log_init(next.log_target, next.log_level) < 0) {
        log_warn("reload: log_target %s: keeping %s", next.log_target,
                 sv->cfg->log_target);
        strlcpy(next.log_target, sv->cfg->log_target, sizeof(next.log_target));
    }
    log_set_level(next.log_level);

    /* The reader's own settings restart the reader alone; the workers
     * restart for the rest. */
    cmp = next;
    cmp.parallel_consumers = sv->cfg->parallel_consumers;
    /* the supervisor's own: nothing for the workers */
    cmp.ready_max_lag = sv->cfg->ready_max_lag;
    cmp.ready_max_idle_ms = sv->cfg->ready_max_idle_ms;
    config_copy_firehose(&cmp, sv->cfg);
    int others_changed = memcmp(&cmp, sv->cfg, sizeof(cmp)) != 0;
    int count_changed = next.parallel_consumers != sv->cfg->parallel_consumers;
    int reader_changed =
        others_changed || !config_firehose_equal(&next, sv->cfg);

    *sv->cfg = next;
    sv->max_workers = compute_max_workers(sv->cfg);
    atomic_fetch_add(&sv->seg->hdr.generation, 1);
    /* Refused workers get another chance; new settings restart the
     * workers one at a time (children_rollout_step), or the reader. */
    children_reloaded(&sv->ch, others_changed, reader_changed);
    if (others_changed) {
        log_info("configuration reloaded: settings changed, restarting the "
                 "workers one at a time");
    } else {
        log_info("configuration reloaded%s",
                 count_changed ? "" : ": nothing changed for the workers");
    }
    if (count_changed)
        set_wanted(sv, next.parallel_consumers, "reload");
    else if (sv->ch.wanted > sv->max_workers)
        set_wanted(sv, sv->max_workers, "reload: db_pool_size");
    /* the reload is done (its rollout goes on): ready again, or still
     * waiting for the first time */
    if (sv->ready) {
        status_line(sv, 0, status, sizeof(status));
        notify_ready(status);
    }
}

/* The periodic line: aggregate rate, the group's lag and pending count,
 * and the trim warning. */
static void
log_stats(struct supervisor *sv)
{
    static struct stats_snapshot snap; /* large: not on the stack */
    struct stats_group grp;
    const struct stats_group_info *gi = &grp.gi;
    int64_t now = clock_mono_ms();
    uint64_t applied = applied_total(sv);
    double secs = (double)(now - sv->last_stats_ms) / 1000.0;
    double rate = secs > 0 && applied >= sv->last_applied
                      ? (double)(applied - sv->last_applied) / secs
                      : 0;
    char lag[48] = "?", pending[48] = "?", why[200] = "";

    stats_snapshot_take(sv->seg, &snap);
    stats_group_published(&snap, GROUP_FRESH_MS, &grp);
    if (grp.have_group) {
        if (gi->lag >= 0)
            snprintf(lag, sizeof(lag), "%lld", gi->lag);
        snprintf(pending, sizeof(pending), "%lld", gi->pending);
    } else {
        snprintf(why, sizeof(why), " (%s)", gi->error);
    }
    log_info("processed %llu events (~%.0f events/sec), %d/%d workers, "
             "group lag %s, pending %s%s",
             (unsigned long long)applied, rate, children_running(&sv->ch),
             sv->ch.wanted, lag, pending, why);
    {
        char status[256];
        status_line(sv, rate, status, sizeof(status));
        notify_status(status);
    }
    /* Trimming drops the oldest entries, acked or not: what is at risk
     * is everything not yet acked, undelivered (lag) or pending. */
    if (gi->lag >= 0 && gi->pending >= 0 && sv->cfg->stream_maxlen > 0 &&
        (double)(gi->lag + gi->pending) >
            LAG_WARN_FRACTION * (double)sv->cfg->stream_maxlen)
        log_warnx("unacked entries (%lld: lag %lld, pending %lld) are close "
                  "to the stream's MAXLEN (%ld): trimming will delete "
                  "entries before they are applied; add workers or hosts",
                  gi->lag + gi->pending, gi->lag, gi->pending,
                  sv->cfg->stream_maxlen);
    sv->last_applied = applied;
    sv->last_stats_ms = now;
}

/* TERM to all; the loop waits up to shutdown_timeout, then SIGKILLs the
 * rest. */
static void
shutdown_begin(struct supervisor *sv)
{
    notify_stopping();
    sv->shutdown_deadline = clock_mono_ms() + sv->cfg->shutdown_timeout_ms;
    log_info("stopping: SIGTERM to %d workers%s (shutdown_timeout %ld ms)",
             children_running(&sv->ch),
             children_alive(&sv->ch) > children_running(&sv->ch)
                 ? " and the firehose reader"
                 : "",
             sv->cfg->shutdown_timeout_ms);
    children_shutdown(&sv->ch);
}

/* QUIT: SIGQUIT to all, a short grace, then SIGKILL. */
static void
quit_now(struct supervisor *sv)
{
    notify_stopping();
    log_info("SIGQUIT: stopping %d workers now", children_running(&sv->ch));
    children_quit(&sv->ch, QUIT_GRACE_MS);
}

/* ---- HTTP: /healthz, /readyz, /metrics (supervisor/http.c) ----------- */

/*
 * /readyz: NULL when the service does its job, else why not (into why).
 * Ready: not stopping; every wanted worker beats (its heartbeat changed
 * within READY_BEAT_MS, as children_check_hung() sees it) and its slot
 * says running; the
 * group's figures (published by the workers) are fresh and its lag is at
 * most ready_max_lag; and when there is anything to read (lag or pending
 * above 0, or the lag unknown) some worker committed within
 * ready_max_idle_ms (counted from the supervisor's start before the
 * first commit). Can't fail.
 */
static const char *
not_ready(struct supervisor *sv, const struct stats_snapshot *snap, char *why,
          size_t len)
{
    struct stats_group grp;
    int64_t last_commit = 0;

    if (sv->ch.shutting_down)
        return "stopping";
    for (int i = 0; i < sv->ch.wanted && i < STATS_MAX_SLOTS; i++) {
        const struct stats_slot *s = &snap->slots[i];
        const struct child *c = &sv->ch.kids[i];
        int64_t quiet = clock_mono_ms() - c->beat_changed;
        /* a worker beats at least every second, also while it waits on
         * Redis or PostgreSQL: one that stopped beating is not doing its
         * job, long before worker_timeout has it killed */
        if (c->state == CHILD_RUNNING && c->beat_changed > 0 &&
            quiet > READY_BEAT_MS) {
            snprintf(why, len, "worker %s: no heartbeat for %.1f s", c->name,
                     (double)quiet / 1000.0);
            return why;
        }
        if (s->state != WORKER_RUNNING) {
            if (s->name[0] != '\0')
                snprintf(why, len, "worker %s is %s", s->name,
                         worker_state_name((enum worker_state)s->state));
            else
                snprintf(why, len, "worker %d is not started", i + 1);
            return why;
        }
    }
    stats_group_published(snap, GROUP_FRESH_MS, &grp);
    if (!grp.have_group) {
        snprintf(why, len, "%s", grp.gi.error);
        return why;
    }
    if (grp.gi.lag > sv->cfg->ready_max_lag) {
        snprintf(why, len, "group lag %lld is over ready_max_lag %ld",
                 grp.gi.lag, sv->cfg->ready_max_lag);
        return why;
    }
    if (grp.gi.lag == 0 && grp.gi.pending <= 0)
        return NULL;
    for (int i = 0; i < STATS_MAX_SLOTS; i++)
        if (snap->slots[i].last_commit_ms > last_commit)
            last_commit = snap->slots[i].last_commit_ms;
    if (last_commit == 0)
        last_commit = snap->hdr.started_ms;
    if (snap->taken_ms - last_commit > sv->cfg->ready_max_idle_ms) {
        snprintf(why, len,
                 "nothing committed for %.1f s (ready_max_idle_ms %ld) with "
                 "lag %lld, pending %lld",
                 (double)(snap->taken_ms - last_commit) / 1000.0,
                 sv->cfg->ready_max_idle_ms, grp.gi.lag, grp.gi.pending);
        return why;
    }
    return NULL;
}

static int
http_answer(void *arg, const char *path, FILE *body, const char **ctype)
{
    static struct stats_snapshot snap; /* large: not on the stack */
    struct supervisor *sv = arg;
    struct stats_group grp;
    char whybuf[STATS_ERROR_MAX + 200];
    const char *why;

    if (strcmp(path, "/healthz") == 0) {
        fputs("ok\n", body);
        return 200;
    }
    if (strcmp(path, "/metrics") == 0) {
        *ctype = "text/plain; version=0.0.4; charset=utf-8";
        stats_snapshot_take(sv->seg, &snap);
        stats_group_published(&snap, GROUP_FRESH_MS, &grp);
        stats_print_prometheus(body, &snap, &grp);
        return 200;
    }
    if (strcmp(path, "/readyz") == 0) {
        cJSON *o = cJSON_CreateObject();
        char *text;

        *ctype = "application/json";
        stats_snapshot_take(sv->seg, &snap);
        why = not_ready(sv, &snap, whybuf, sizeof(whybuf));
        if (o != NULL) {
            cJSON_AddBoolToObject(o, "ready", why == NULL);
            if (why != NULL)
                cJSON_AddStringToObject(o, "reason", why);
        }
        text = o != NULL ? cJSON_PrintUnformatted(o) : NULL;
        fprintf(body, "%s\n",
                text != NULL  ? text
                : why == NULL ? "{\"ready\":true}"
                              : "{\"ready\":false}");
        free(text);
        cJSON_Delete(o);
        return why == NULL ? 200 : 503;
    }
    fputs("not found\n", body);
    return 404;
}

static void
cleanup(struct supervisor *sv)
{
    http_close(&sv->http, 1);
    children_close(&sv->ch);
    stats_remove(sv->seg, sv->stats_name);
    sv->seg = NULL;
    if (sv->pfh != NULL && pidfile_remove(sv->pfh) < 0)
        log_debug("pidfile %s: not removed: %s", sv->cfg->pidfile,
                  strerror(errno));
    sv->pfh = NULL;
}

/*
 * Everything before the loop: pidfile, detach, segment, privilege drop.
 * Returns EXIT_OK or the exit code to return.
 */
static int
startup(struct supervisor *sv)
{
    const struct config *cfg = sv->cfg;
    char err[CONFIG_ERR_MAX], redacted[CONFIG_STR_MAX];
    uid_t uid = 0;
    gid_t gid = 0;
    pid_t other;

    if (sv->opt->config_path != NULL &&
        realpath(sv->opt->config_path, sv->config_path) == NULL) {
        log_error("%s: %s", sv->opt->config_path, strerror(errno));
        return EXIT_CONFIG;
    }
    if (cfg->user[0] != '\0' &&
        daemon_lookup_user(cfg->user, &uid, &gid, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return EXIT_CONFIG;
    }
    if (sv->opt->daemonize && cfg->pidfile[0] == '\0') {
        log_error("-d needs a pidfile (pidfile = /run/sluiced.pid)");
        return EXIT_CONFIG;
    }
    if (cfg->pidfile[0] != '\0') {
        if ((sv->pfh = daemon_pidfile_open(cfg->pidfile, &other)) == NULL) {
            if (errno == EEXIST) {
                log_error("another sluiced (pid %d) is running with pidfile "
                          "%s; not starting",
                          (int)other, cfg->pidfile);
                return EXIT_TEMPFAIL;
            }
            log_error("pidfile %s: %s", cfg->pidfile, strerror(errno));
            return EXIT_CONFIG;
        }
    }
    if (sv->opt->daemonize && daemon_detach() < 0) {
        log_error("cannot detach: %s", strerror(errno));
        return EXIT_SOFTWARE;
    }

    config_stats_name(cfg, sv->stats_name, sizeof(sv->stats_name));
    config_redact_url(cfg->redis_url, redacted, sizeof(redacted));
    sv->seg = stats_create(sv->stats_name, cfg->stream_key, cfg->consumer_group,
                           redacted);
    if (sv->seg == NULL) {
        if (errno == EADDRINUSE) {
            log_error("stats segment %s belongs to a running sluiced: one "
                      "supervisor per stream and group (or set stats_name)",
                      sv->stats_name);
            return EXIT_TEMPFAIL;
        }
        log_error("stats segment %s: %s", sv->stats_name, strerror(errno));
        return EXIT_SOFTWARE;
    }
    if (sv->pfh != NULL && pidfile_write(sv->pfh) < 0) {
        log_error("pidfile %s: %s", cfg->pidfile, strerror(errno));
        return EXIT_SOFTWARE;
    }
    /* Bound before the privilege drop: a port below 1024 or a socket in
     * a root-owned folder stay possible. */
    if (cfg->http_listen[0] != '\0') {
        char addr[160];

        if (http_open(&sv->http, cfg->http_listen, http_answer, sv, err,
                      sizeof(err)) < 0) {
            log_error("%s", err);
            return EXIT_CONFIG;
        }
        http_local_address(&sv->http, addr, sizeof(addr));
        log_info("http: listening on %s (/healthz, /readyz, /metrics)", addr);
    }
    if (cfg->user[0] != '\0') {
        if (geteuid() == 0 && stats_chown(sv->stats_name, uid, gid) < 0)
            log_warn("stats segment %s: chown to %s", sv->stats_name,
                     cfg->user);
        if (daemon_drop_privileges(cfg->user, uid, gid, err, sizeof(err)) < 0) {
            log_error("%s", err);
            return EXIT_CONFIG;
        }
    }
    return EXIT_OK;
}

int
supervisor_run(const struct supervisor_options *opt, struct config *cfg)
{
    static struct supervisor sv; /* large: not on the stack */
    sigset_t waitmask;
    int rc;

    memset(&sv, 0, sizeof(sv));
    sv.http.fd = -1;
    child_http = &sv.http;
    sv.opt = opt;
    sv.cfg = cfg;
    /* The init system's variables are read (and kept from the children)
     * before anything is forked. */
    notify_init(opt->ready_fd);
    /* The reader, when relay_url is set, is due at the first turn. */
    children_init(&sv.ch, cfg, child_setup);
    /* Signals first: a TERM during startup is taken at the first turn. */
    signals_install(&waitmask);

    if ((rc = startup(&sv)) != EXIT_OK) {
        if (sv.seg != NULL)
            cleanup(&sv);
        else if (sv.pfh != NULL)
            pidfile_remove(sv.pfh);
        return rc;
    }
    setproctitle("supervisor %s/%s", cfg->stream_key, cfg->consumer_group);
    sv.ch.seg = sv.seg;
    sv.ch.pfh = sv.pfh;

    sv.max_workers = compute_max_workers(cfg);
    set_wanted(&sv, cfg->parallel_consumers, "start");
    sv.last_stats_ms = clock_mono_ms();
    sv.next_stats_ms = sv.last_stats_ms + cfg->stats_interval_ms;
    if (notify_watchdog_ms() > 0)
        sv.next_watchdog_ms = sv.last_stats_ms;
    log_info("sluiced supervisor (pid %d) started: %d workers on %s/%s, "
             "stats segment %s",
             (int)getpid(), sv.ch.wanted, cfg->stream_key, cfg->consumer_group,
             sv.stats_name);

    rc = EXIT_OK;
    for (;;) {
        int64_t now;
        long timeout = TICK_MS;
        struct timespec ts;
        struct pollfd pfd[HTTP_NPOLLFD];
        int npfd;

        if (got_chld) {
            got_chld = 0;
            children_reap(&sv.ch);
        }
        if (got_quit) {
            quit_now(&sv);
            break;
        }
        if (got_term && !sv.ch.shutting_down)
            shutdown_begin(&sv);
        if (sv.ch.shutting_down) {
            if (children_alive(&sv.ch) == 0)
                break;
            if (clock_mono_ms() >= sv.shutdown_deadline) {
                log_warnx("shutdown_timeout (%ld ms) passed",
                          cfg->shutdown_timeout_ms);
                children_kill_remaining(&sv.ch);
                break;
            }
        } else {
            if (got_hup) {
                got_hup = 0;
                reload(&sv);
            }
            if (got_usr1) {
                got_usr1 = 0;
                if (log_reopen() < 0)
                    log_warn("SIGUSR1: reopening the log");
                else
                    log_info("SIGUSR1: log reopened");
                children_signal(&sv.ch, SIGUSR1);
            }
            /* Signals are taken only inside ppoll(), one delivery per
             * wait: a flag loses nothing. */
            if (got_ttin) {
                got_ttin = 0;
                set_wanted(&sv, sv.ch.wanted + 1, "SIGTTIN");
            }
            if (got_ttou) {
                got_ttou = 0;
                set_wanted(&sv, sv.ch.wanted - 1, "SIGTTOU");
            }
            children_check_hung(&sv.ch);
            children_rollout_step(&sv.ch);
            children_converge(&sv.ch);
            if (children_all_refused(&sv.ch)) {
                log_error("no worker can run with this configuration; "
                          "exiting");
                rc = EXIT_CONFIG;
                break;
            }
            check_ready(&sv);
            now = clock_mono_ms();
            if (now >= sv.next_stats_ms) {
                log_stats(&sv);
                sv.next_stats_ms = now + cfg->stats_interval_ms;
            }
            timeout = children_wait_ms(&sv.ch, timeout);
        }
        /* the watchdog hears from this loop, whatever it is doing */
        now = clock_mono_ms();
        if (sv.next_watchdog_ms > 0 && now >= sv.next_watchdog_ms) {
            notify_watchdog();
            sv.next_watchdog_ms = now + notify_watchdog_ms();
        }
        if (sv.next_watchdog_ms > 0 && sv.next_watchdog_ms - now < timeout)
            timeout = (long)(sv.next_watchdog_ms - now);
        timeout = http_wait_ms(&sv.http, timeout);
        ts.tv_sec = timeout / 1000;
        ts.tv_nsec = (timeout % 1000) * 1000000;
        /* The HTTP sockets (none when http_listen is empty) and the
         * signals, in one wait: a signal ends it at once. */
        npfd = http_pollfds(&sv.http, pfd);
        if (ppoll(npfd > 0 ? pfd : NULL, (nfds_t)npfd, &ts, &waitmask) < 0) {
            if (errno != EINTR)
                log_warn("ppoll");
            for (int i = 0; i < npfd; i++)
                pfd[i].revents = 0;
        }
        http_serve(&sv.http, pfd, npfd);
    }
    log_info("processed %llu events in total; supervisor exiting",
             (unsigned long long)applied_total(&sv));
    cleanup(&sv);
    return rc;
}
