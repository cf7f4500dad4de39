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
 * It runs every pipeline of the configuration (shared/pipeline.h), each
 * with its own table of children: worker n of a pipeline is named
 * CONSUMER_ID-n in its group and writes a slot of the one segment, which
 * names the pipeline. A reload compares the pipelines by name: a new one
 * starts, a removed one stops its workers, a changed one restarts its
 * workers one at a time; the others are not touched. When relay_url is
 * set, one more child runs beside them, the firehose reader
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
#include <sys/wait.h>
#include <unistd.h>

#include <bsd/libutil.h>
#include <bsd/string.h>
#include <bsd/unistd.h>
#include <cjson/cJSON.h>

#include "shared/clock.h"
#include "shared/config.h"
#include "shared/exitcode.h"
#include "shared/log.h"
#include "shared/pipeline.h"
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

/* One pipeline and its workers. */
struct pipeline {
    char name[STATS_NAME_MAX];
    struct config cfg;  /* its settings (relay_url empty: the reader is the
                           supervisor's) */
    struct children ch; /* its workers */
    int max_workers;    /* min(STATS_MAX_SLOTS, db_pool_size) */
    int entry;          /* its entry in the segment's pipelines[] */
    int removed;        /* gone from the configuration: its workers stop,
                           then it is freed */
};

struct supervisor {
    const struct supervisor_options *opt;
    char config_path[PATH_MAX]; /* absolute: -d changes to / */
    struct config *cfg;         /* the shared settings: the supervisor's
                                   own and the reader's */
    char stats_name[256];
    struct stats_segment *seg;
    struct pidfh *pfh;
    struct pipeline *pl[PIPELINE_MAX * 2]; /* removed ones until stopped */
    int npl;
    int labelled;              /* several pipelines: name them */
    uint64_t slots_used;       /* the segment's slots the workers hold */
    struct children reader;    /* the firehose reader (no workers) */
    int shutting_down;         /* TERM/INT/QUIT received */
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
static struct supervisor *child_sv;

#define FOR_PIPELINES(sv, p)                                                   \
    for (int p##_i = 0; p##_i < (sv)->npl && ((p) = (sv)->pl[p##_i]) != NULL;  \
         p##_i++)

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
    struct pipeline *p;

    signals_reset();
    if (child_http != NULL)
        http_close(child_http, 0);
    /* the other children's parent pipes are not this child's to hold */
    if (child_sv != NULL) {
        FOR_PIPELINES(child_sv, p)
        children_close(&p->ch);
        children_close(&child_sv->reader);
    }
}

/* Sum of events_applied over the slots of pipeline name (every slot when
 * NULL; retired ones included). */
static uint64_t
applied_total(const struct supervisor *sv, const char *name)
{
    struct stats_slot copy;
    uint64_t sum = 0;

    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        stats_slot_read(&sv->seg->slots[i], &copy);
        if (name == NULL || strcmp(copy.pipeline, name) == 0)
            sum += copy.c.events_applied;
    }
    return sum;
}

/* Workers wanted by every pipeline but p. */
static int
wanted_by_others(const struct supervisor *sv, const struct pipeline *p)
{
    const struct pipeline *q;
    int n = 0;

    FOR_PIPELINES(sv, q)
    if (q != p)
        n += q->ch.wanted;
    return n;
}

/* Publish p's entry of the segment (name, stream, group, wanted), and the
 * header's total. Can't fail. */
static void
publish_pipeline(struct supervisor *sv, struct pipeline *p)
{
    struct stats_pipeline *e = &sv->seg->pipelines[p->entry];
    const struct pipeline *q;
    uint32_t total = 0;

    stats_pipeline_write_begin(e);
    strlcpy(e->name, p->removed ? "" : p->name, sizeof(e->name));
    strlcpy(e->stream, p->cfg.stream_key, sizeof(e->stream));
    strlcpy(e->group, p->cfg.consumer_group, sizeof(e->group));
    e->wanted = (uint32_t)p->ch.wanted;
    e->ready_max_lag = p->cfg.ready_max_lag;
    e->ready_max_idle_ms = p->cfg.ready_max_idle_ms;
    stats_pipeline_write_end(e);
    FOR_PIPELINES(sv, q)
    total += (uint32_t)q->ch.wanted;
    atomic_store(&sv->seg->hdr.workers_wanted, total);
}

static void
set_wanted(struct supervisor *sv, struct pipeline *p, int n, const char *why)
{
    int limit = p->max_workers, free_slots;
    char who[STATS_NAME_MAX + 16] = "";

    if (sv->labelled)
        snprintf(who, sizeof(who), "pipeline %s: ", p->name);
    free_slots = STATS_MAX_SLOTS - wanted_by_others(sv, p);
    if (free_slots < limit)
        limit = free_slots;
    if (n > limit)
        log_warnx("%sworkers: %d asked (%s), the limit is %d (db_pool_size "
                  "%d, %d slots, %d of them for the other pipelines)",
                  who, n, why, limit, p->cfg.db_pool_size, STATS_MAX_SLOTS,
                  STATS_MAX_SLOTS - free_slots);
    if (n > limit)
        n = limit;
    if (n < 1 && !p->removed)
        n = 1;
    if (n != p->ch.wanted)
        log_info("%sworkers: %d -> %d (%s)", who, p->ch.wanted, n, why);
    /* Newly wanted ones are due now, with a fresh backoff. */
    children_set_wanted(&p->ch, n);
    publish_pipeline(sv, p);
}

static int
compute_max_workers(const struct config *cfg)
{
    int m = STATS_MAX_SLOTS;

    if (cfg->db_pool_size > 0 && cfg->db_pool_size < m)
        m = cfg->db_pool_size;
    return m;
}

/* A free entry of the segment's pipelines[]; -1 when none. */
static int
free_entry(const struct supervisor *sv)
{
    const struct pipeline *q;
    uint64_t used = 0;

    FOR_PIPELINES(sv, q)
    used |= UINT64_C(1) << q->entry;
    for (int i = 0; i < STATS_MAX_PIPELINES; i++)
        if (!(used & (UINT64_C(1) << i)))
            return i;
    return -1;
}

/* The settings a pipeline's workers run with: pc's, without the
 * reader's (so that a change of those leaves the workers alone). */
static void
pipeline_settings(struct config *out, const struct pipeline_config *pc)
{
    static struct config defaults;

    config_defaults(&defaults);
    *out = pc->cfg;
    config_copy_firehose(out, &defaults);
}

/* Start running the pipeline pc: a table of children, its entry in the
 * segment, its workers due now. NULL (logged) when out of memory or of
 * entries. */
static struct pipeline *
pipeline_add(struct supervisor *sv, const struct pipeline_config *pc,
             const char *why)
{
    struct pipeline *p;
    int entry = free_entry(sv);

    if (entry < 0 || sv->npl == (int)(sizeof(sv->pl) / sizeof(sv->pl[0]))) {
        log_error("pipeline %s: no room for it (at most %d pipelines); "
                  "not started",
                  pc->name, STATS_MAX_PIPELINES);
        return NULL;
    }
    if ((p = calloc(1, sizeof(*p))) == NULL) {
        log_error("pipeline %s: out of memory; not started", pc->name);
        return NULL;
    }
    strlcpy(p->name, pc->name, sizeof(p->name));
    pipeline_settings(&p->cfg, pc);
    p->entry = entry;
    p->max_workers = compute_max_workers(&p->cfg);
    children_init(&p->ch, &p->cfg, child_setup);
    p->ch.seg = sv->seg;
    p->ch.pfh = sv->pfh;
    p->ch.slots_used = &sv->slots_used;
    p->ch.labelled = sv->labelled;
    strlcpy(p->ch.pipeline, p->name, sizeof(p->ch.pipeline));
    sv->pl[sv->npl++] = p;
    if (sv->labelled && strcmp(why, "start") != 0)
        log_info("pipeline %s added: %s/%s, %s sink", p->name,
                 p->cfg.stream_key, p->cfg.consumer_group, p->cfg.sink);
    set_wanted(sv, p, p->cfg.parallel_consumers, why);
    return p;
}

/* Free the removed pipelines whose workers have all exited. */
static void
pipelines_reap_removed(struct supervisor *sv)
{
    for (int i = 0; i < sv->npl; i++) {
        struct pipeline *p = sv->pl[i];

        if (!p->removed || children_alive(&p->ch) > 0)
            continue;
        log_info("pipeline %s removed: its workers have stopped", p->name);
        children_close(&p->ch);
        memset(&sv->seg->pipelines[p->entry], 0,
               sizeof(sv->seg->pipelines[p->entry]));
        free(p);
        memmove(&sv->pl[i], &sv->pl[i + 1],
                (size_t)(sv->npl - i - 1) * sizeof(sv->pl[0]));
        sv->npl--;
        i--;
    }
}

/* The one pipeline named name that is not being removed, or NULL. */
static struct pipeline *
pipeline_find(struct supervisor *sv, const char *name)
{
    struct pipeline *p;

    FOR_PIPELINES(sv, p)
    if (!p->removed && strcmp(p->name, name) == 0)
        return p;
    return NULL;
}

/* Workers running in every pipeline. */
static int
workers_running(struct supervisor *sv)
{
    struct pipeline *p;
    int n = 0;

    FOR_PIPELINES(sv, p)
    n += children_running(&p->ch);
    return n;
}

static int
workers_wanted(struct supervisor *sv)
{
    struct pipeline *p;
    int n = 0;

    FOR_PIPELINES(sv, p)
    n += p->ch.wanted;
    return n;
}

/* The one-line status the init system shows. */
static void
status_line(struct supervisor *sv, double rate, char *buf, size_t len)
{
    if (sv->labelled)
        snprintf(buf, len,
                 "%d workers consuming in %d pipelines, ~%.0f events/s",
                 workers_running(sv), sv->npl, rate);
    else
        snprintf(buf, len, "%d workers consuming %.100s/%.100s, ~%.0f events/s",
                 workers_running(sv), sv->pl[0]->cfg.stream_key,
                 sv->pl[0]->cfg.consumer_group, rate);
}

/*
 * Ready: every wanted worker of every pipeline runs and has come to read
 * (its slot says running: it connected to Redis and PostgreSQL and
 * checked its name). The first time, the init system hears READY=1.
 * Can't fail.
 */
static void
check_ready(struct supervisor *sv)
{
    struct stats_slot copy;
    struct pipeline *p;
    char status[256];

    if (sv->ready || workers_wanted(sv) == 0)
        return;
    FOR_PIPELINES(sv, p)
    {
        if (children_running(&p->ch) < p->ch.wanted)
            return;
        for (int i = 0; i < p->ch.wanted; i++) {
            if (p->ch.kids[i].slot < 0)
                return;
            stats_slot_read(&sv->seg->slots[p->ch.kids[i].slot], &copy);
            if (copy.state != WORKER_RUNNING)
                return;
        }
    }
    sv->ready = 1;
    status_line(sv, 0, status, sizeof(status));
    notify_ready(status);
    log_info("ready: %d workers consuming", workers_wanted(sv));
}

/*
 * A reload found pipeline p in the configuration again, with the settings
 * of pc: a new worker count scales it, any other change restarts its
 * workers one at a time; its workers that refused the old settings get
 * another chance.
 */
static void
pipeline_reload(struct supervisor *sv, struct pipeline *p,
                const struct pipeline_config *pc)
{
    static struct config next, cmp; /* large: not on the stack */
    char who[STATS_NAME_MAX + 16] = "";

    if (sv->labelled)
        snprintf(who, sizeof(who), "pipeline %s: ", p->name);
    pipeline_settings(&next, pc);
    cmp = next;
    cmp.parallel_consumers = p->cfg.parallel_consumers;
    /* the supervisor's own: nothing for the workers */
    cmp.ready_max_lag = p->cfg.ready_max_lag;
    cmp.ready_max_idle_ms = p->cfg.ready_max_idle_ms;
    int others_changed = !config_same(&cmp, &p->cfg);
    int count_changed = next.parallel_consumers != p->cfg.parallel_consumers;

    p->cfg = next;
    p->max_workers = compute_max_workers(&p->cfg);
    children_reloaded(&p->ch, others_changed, 0);
    if (others_changed)
        log_info("%sconfiguration reloaded: settings changed, restarting "
                 "the workers one at a time",
                 who);
    else if (!sv->labelled || count_changed)
        log_info("%sconfiguration reloaded%s", who,
                 count_changed ? "" : ": nothing changed for the workers");
    if (count_changed)
        set_wanted(sv, p, next.parallel_consumers, "reload");
    else if (p->ch.wanted > p->max_workers)
        set_wanted(sv, p, p->max_workers, "reload: db_pool_size");
    else
        publish_pipeline(sv, p);
}

/*
 * SIGHUP: read the configuration again. A refused file changes nothing.
 * Settings that can't change without a new supervisor (pidfile, stats
 * name, user) keep their running values, with a warning. Pipelines are
 * matched by name: new ones start, removed ones stop, the others reload.
 */
static void
reload(struct supervisor *sv)
{
    static struct pipeline_set next;
    static struct config cmp; /* large: not on the stack */
    char err[CONFIG_ERR_MAX];
    char status[256];
    struct pipeline *p;

    notify_reloading();
    if (pipeline_set_load(&next, sv->config_path[0] ? sv->config_path : NULL,
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
#define KEEP(cfgp, field, what)                                                \
    do {                                                                       \
        if (strcmp((cfgp)->field, sv->cfg->field) != 0) {                      \
            log_warnx("reload: %s can't change while sluiced runs; keeping "   \
                      "'%s' (restart sluiced to apply)",                       \
                      what, sv->cfg->field);                                   \
            strlcpy((cfgp)->field, sv->cfg->field, sizeof((cfgp)->field));     \
        }                                                                      \
    } while (0)
    KEEP(&next.base, pidfile, "pidfile");
    KEEP(&next.base, stats_name, "stats_name");
    KEEP(&next.base, user, "user");
    KEEP(&next.base, http_listen, "http_listen");
    if (!sv->labelled && !next.labelled) {
        /* one pipeline: the segment is named after its stream and group */
        KEEP(&next.p[0].cfg, stream_key,
             "stream_key (the segment is named after it)");
        KEEP(&next.p[0].cfg, consumer_group,
             "consumer_group (the segment is named after it)");
        KEEP(&next.base, stream_key, "stream_key");
        KEEP(&next.base, consumer_group, "consumer_group");
    } else if (sv->labelled != next.labelled) {
        log_warnx("reload: going from one pipeline to several, or back, "
                  "needs a restart of sluiced; keeping the running "
                  "pipelines");
        pipeline_set_free(&next);
        if (sv->ready) {
            status_line(sv, 0, status, sizeof(status));
            notify_ready(status);
        }
        return;
    }
#undef KEEP

    if (strcmp(next.base.log_target, sv->cfg->log_target) != 0 &&
        log_init(next.base.log_target, next.base.log_level) < 0) {
        log_warn("reload: log_target %s: keeping %s", next.base.log_target,
                 sv->cfg->log_target);
        strlcpy(next.base.log_target, sv->cfg->log_target,
                sizeof(next.base.log_target));
    }
    log_set_level(next.base.log_level);

    /* The reader runs on the shared settings: any change there restarts
     * it alone (a worker count is not its business). */
    cmp = next.base;
    cmp.parallel_consumers = sv->cfg->parallel_consumers;
    cmp.ready_max_lag = sv->cfg->ready_max_lag;
    cmp.ready_max_idle_ms = sv->cfg->ready_max_idle_ms;
    int reader_changed = !config_same(&cmp, sv->cfg);
    *sv->cfg = next.base;
    atomic_fetch_add(&sv->seg->hdr.generation, 1);
    children_reloaded(&sv->reader, 0, reader_changed);

    /* removed pipelines stop their workers; the others reload */
    FOR_PIPELINES(sv, p)
    {
        const struct pipeline_config *pc;

        if (p->removed)
            continue;
        if ((pc = pipeline_set_find(&next, p->name)) != NULL) {
            pipeline_reload(sv, p, pc);
            continue;
        }
        log_info("pipeline %s is not in the configuration any more: "
                 "stopping its %d workers",
                 p->name, children_running(&p->ch));
        p->removed = 1;
        set_wanted(sv, p, 0, "pipeline removed");
    }
    for (int i = 0; i < next.n; i++)
        if (pipeline_find(sv, next.p[i].name) == NULL)
            pipeline_add(sv, &next.p[i], "reload");
    pipeline_set_free(&next);
    /* the reload is done (its rollouts go on): ready again, or still
     * waiting for the first time */
    if (sv->ready) {
        status_line(sv, 0, status, sizeof(status));
        notify_ready(status);
    }
}

/* The group's figures the workers of pipeline p published. */
static void
pipeline_group(const struct stats_snapshot *snap, const struct pipeline *p,
               struct stats_group *grp)
{
    stats_group_published_by(snap, p->name, GROUP_FRESH_MS, grp);
}

/* The periodic line, one per pipeline: its rate, the group's lag and
 * pending count, and the trim warning. */
static void
log_stats(struct supervisor *sv)
{
    static struct stats_snapshot snap; /* large: not on the stack */
    struct stats_group grp;
    const struct stats_group_info *gi = &grp.gi;
    int64_t now = clock_mono_ms();
    uint64_t applied = applied_total(sv, NULL);
    double secs = (double)(now - sv->last_stats_ms) / 1000.0;
    double rate = secs > 0 && applied >= sv->last_applied
                      ? (double)(applied - sv->last_applied) / secs
                      : 0;
    struct pipeline *p;

    stats_snapshot_take(sv->seg, &snap);
    FOR_PIPELINES(sv, p)
    {
        char lag[48] = "?", pending[48] = "?", why[200] = "";
        char who[STATS_NAME_MAX + 16] = "";

        if (p->removed)
            continue;
        if (sv->labelled)
            snprintf(who, sizeof(who), "pipeline %s: ", p->name);
        pipeline_group(&snap, p, &grp);
        if (grp.have_group) {
            if (gi->lag >= 0)
                snprintf(lag, sizeof(lag), "%lld", gi->lag);
            snprintf(pending, sizeof(pending), "%lld", gi->pending);
        } else {
            snprintf(why, sizeof(why), " (%s)", gi->error);
        }
        if (sv->labelled)
            log_info("%sprocessed %llu events, %d/%d workers, group lag %s, "
                     "pending %s%s",
                     who, (unsigned long long)applied_total(sv, p->name),
                     children_running(&p->ch), p->ch.wanted, lag, pending, why);
        else
            log_info("processed %llu events (~%.0f events/sec), %d/%d "
                     "workers, group lag %s, pending %s%s",
                     (unsigned long long)applied, rate,
                     children_running(&p->ch), p->ch.wanted, lag, pending, why);
        /* Trimming drops the oldest entries, acked or not: what is at
         * risk is everything not yet acked, undelivered (lag) or
         * pending. */
        if (gi->lag >= 0 && gi->pending >= 0 && p->cfg.stream_maxlen > 0 &&
            (double)(gi->lag + gi->pending) >
                LAG_WARN_FRACTION * (double)p->cfg.stream_maxlen)
            log_warnx("%sunacked entries (%lld: lag %lld, pending %lld) are "
                      "close to the stream's MAXLEN (%ld): trimming will "
                      "delete entries before they are applied; add workers "
                      "or hosts",
                      who, gi->lag + gi->pending, gi->lag, gi->pending,
                      p->cfg.stream_maxlen);
    }
    if (sv->labelled)
        log_info("processed %llu events in all (~%.0f events/sec), %d/%d "
                 "workers in %d pipelines",
                 (unsigned long long)applied, rate, workers_running(sv),
                 workers_wanted(sv), sv->npl);
    {
        char status[256];
        status_line(sv, rate, status, sizeof(status));
        notify_status(status);
    }
    sv->last_applied = applied;
    sv->last_stats_ms = now;
}

/* Every child ended since the last turn: each to its table. */
static void
reap_all(struct supervisor *sv)
{
    struct pipeline *p;
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (children_take_exit(&sv->reader, pid, status))
            continue;
        FOR_PIPELINES(sv, p)
        if (children_take_exit(&p->ch, pid, status))
            break;
    }
}

/* Workers and the reader alive, in every pipeline. */
static int
alive_all(struct supervisor *sv)
{
    struct pipeline *p;
    int n = children_alive(&sv->reader);

    FOR_PIPELINES(sv, p)
    n += children_alive(&p->ch);
    return n;
}

/* TERM to all; the loop waits up to shutdown_timeout, then SIGKILLs the
 * rest. */
static void
shutdown_begin(struct supervisor *sv)
{
    struct pipeline *p;

    notify_stopping();
    sv->shutdown_deadline = clock_mono_ms() + sv->cfg->shutdown_timeout_ms;
    sv->shutting_down = 1;
    log_info("stopping: SIGTERM to %d workers%s (shutdown_timeout %ld ms)",
             workers_running(sv),
             children_alive(&sv->reader) > 0 ? " and the firehose reader" : "",
             sv->cfg->shutdown_timeout_ms);
    FOR_PIPELINES(sv, p)
    children_shutdown(&p->ch);
    children_shutdown(&sv->reader);
}

static void
kill_remaining(struct supervisor *sv)
{
    struct pipeline *p;

    FOR_PIPELINES(sv, p)
    children_kill_remaining(&p->ch);
    children_kill_remaining(&sv->reader);
}

/* QUIT: SIGQUIT to all, a short grace, then SIGKILL. */
static void
quit_now(struct supervisor *sv)
{
    int64_t until = clock_mono_ms() + QUIT_GRACE_MS;
    struct pipeline *p;

    notify_stopping();
    sv->shutting_down = 1;
    log_info("SIGQUIT: stopping %d workers now", workers_running(sv));
    FOR_PIPELINES(sv, p)
    children_quit(&p->ch);
    children_quit(&sv->reader);
    while (alive_all(sv) > 0 && clock_mono_ms() < until) {
        reap_all(sv);
        if (alive_all(sv) > 0)
            usleep(10000);
    }
    kill_remaining(sv);
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
    struct pipeline *p;

    if (sv->shutting_down)
        return "stopping";
    FOR_PIPELINES(sv, p)
    {
        char who[STATS_NAME_MAX + 16] = "";
        struct stats_group grp;
        int64_t last_commit = 0;

        if (p->removed)
            continue;
        if (sv->labelled)
            snprintf(who, sizeof(who), "pipeline %s: ", p->name);
        for (int i = 0; i < p->ch.wanted && i < STATS_MAX_SLOTS; i++) {
            const struct child *c = &p->ch.kids[i];
            const struct stats_slot *s =
                c->slot >= 0 ? &snap->slots[c->slot] : NULL;
            int64_t quiet = clock_mono_ms() - c->beat_changed;
            /* a worker beats at least every second, also while it waits
             * on Redis or PostgreSQL: one that stopped beating is not
             * doing its job, long before worker_timeout has it killed */
            if (c->state == CHILD_RUNNING && c->beat_changed > 0 &&
                quiet > READY_BEAT_MS) {
                snprintf(why, len, "%sworker %s: no heartbeat for %.1f s", who,
                         c->name, (double)quiet / 1000.0);
                return why;
            }
            if (s == NULL || s->state != WORKER_RUNNING) {
                if (s != NULL && s->name[0] != '\0')
                    snprintf(why, len, "%sworker %s is %s", who, s->name,
                             worker_state_name((enum worker_state)s->state));
                else
                    snprintf(why, len, "%sworker %d is not started", who,
                             i + 1);
                return why;
            }
        }
        pipeline_group(snap, p, &grp);
        if (!grp.have_group) {
            snprintf(why, len, "%s%s", who, grp.gi.error);
            return why;
        }
        if (grp.gi.lag > p->cfg.ready_max_lag) {
            snprintf(why, len, "%sgroup lag %lld is over ready_max_lag %ld",
                     who, grp.gi.lag, p->cfg.ready_max_lag);
            return why;
        }
        if (grp.gi.lag == 0 && grp.gi.pending <= 0)
            continue;
        for (int i = 0; i < STATS_MAX_SLOTS; i++)
            if (strcmp(snap->slots[i].pipeline, p->name) == 0 &&
                snap->slots[i].last_commit_ms > last_commit)
                last_commit = snap->slots[i].last_commit_ms;
        if (last_commit == 0)
            last_commit = snap->hdr.started_ms;
        if (snap->taken_ms - last_commit > p->cfg.ready_max_idle_ms) {
            snprintf(why, len,
                     "%snothing committed for %.1f s (ready_max_idle_ms %ld) "
                     "with lag %lld, pending %lld",
                     who, (double)(snap->taken_ms - last_commit) / 1000.0,
                     p->cfg.ready_max_idle_ms, grp.gi.lag, grp.gi.pending);
            return why;
        }
    }
    return NULL;
}

static int
http_answer(void *arg, const char *path, FILE *body, const char **ctype)
{
    static struct stats_snapshot snap; /* large: not on the stack */
    struct supervisor *sv = arg;
    struct stats_group grp;
    char whybuf[STATS_ERROR_MAX + 300];
    const char *why;

    if (strcmp(path, "/healthz") == 0) {
        fputs("ok\n", body);
        return 200;
    }
    if (strcmp(path, "/metrics") == 0) {
        *ctype = "text/plain; version=0.0.4; charset=utf-8";
        stats_snapshot_take(sv->seg, &snap);
        if (!sv->labelled)
            pipeline_group(&snap, sv->pl[0], &grp);
        stats_print_prometheus(body, &snap, sv->labelled ? NULL : &grp,
                               GROUP_FRESH_MS);
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
    struct pipeline *p;

    http_close(&sv->http, 1);
    FOR_PIPELINES(sv, p)
    children_close(&p->ch);
    children_close(&sv->reader);
    for (int i = 0; i < sv->npl; i++)
        free(sv->pl[i]);
    sv->npl = 0;
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
startup(struct supervisor *sv, const struct pipeline_set *set)
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
    config_redact_url(set->p[0].cfg.redis_url, redacted, sizeof(redacted));
    sv->seg = stats_create(sv->stats_name, set->p[0].cfg.stream_key,
                           set->p[0].cfg.consumer_group, redacted);
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
supervisor_run(const struct supervisor_options *opt, struct pipeline_set *set)
{
    static struct supervisor sv; /* large: not on the stack */
    static struct config base;
    struct config *cfg = &base;
    struct pipeline *p;
    sigset_t waitmask;
    int rc;

    memset(&sv, 0, sizeof(sv));
    sv.http.fd = -1;
    child_http = &sv.http;
    child_sv = &sv;
    sv.opt = opt;
    base = set->base;
    sv.cfg = cfg;
    sv.labelled = set->labelled;
    /* The init system's variables are read (and kept from the children)
     * before anything is forked. */
    notify_init(opt->ready_fd);
    /* The reader, when relay_url is set, is due at the first turn. */
    children_init(&sv.reader, cfg, child_setup);
    sv.reader.slots_used = &sv.slots_used;
    /* Signals first: a TERM during startup is taken at the first turn. */
    signals_install(&waitmask);

    if ((rc = startup(&sv, set)) != EXIT_OK) {
        if (sv.seg != NULL)
            cleanup(&sv);
        else if (sv.pfh != NULL)
            pidfile_remove(sv.pfh);
        return rc;
    }
    if (sv.labelled)
        setproctitle("supervisor of %d pipelines", set->n);
    else
        setproctitle("supervisor %s/%s", set->p[0].cfg.stream_key,
                     set->p[0].cfg.consumer_group);
    sv.reader.seg = sv.seg;
    sv.reader.pfh = sv.pfh;
    sv.seg->hdr.labelled = (uint32_t)sv.labelled;
    for (int i = 0; i < set->n; i++)
        pipeline_add(&sv, &set->p[i], "start");
    atomic_store(&sv.seg->hdr.npipelines, STATS_MAX_PIPELINES);
    sv.last_stats_ms = clock_mono_ms();
    sv.next_stats_ms = sv.last_stats_ms + cfg->stats_interval_ms;
    if (notify_watchdog_ms() > 0)
        sv.next_watchdog_ms = sv.last_stats_ms;
    if (sv.labelled)
        FOR_PIPELINES(&sv, p)
    log_info("pipeline %s: %d workers on %s/%s, %s sink", p->name, p->ch.wanted,
             p->cfg.stream_key, p->cfg.consumer_group, p->cfg.sink);
    log_info("sluiced supervisor (pid %d) started: %d workers on %s, stats "
             "segment %s",
             (int)getpid(), workers_wanted(&sv),
             sv.labelled ? "several pipelines" : cfg->stream_key,
             sv.stats_name);
    if (!sv.labelled)
        log_debug("group %s", cfg->consumer_group);

    rc = EXIT_OK;
    for (;;) {
        int64_t now;
        long timeout = TICK_MS;
        struct timespec ts;
        struct pollfd pfd[HTTP_NPOLLFD];
        int npfd;

        if (got_chld) {
            got_chld = 0;
            reap_all(&sv);
        }
        if (got_quit) {
            quit_now(&sv);
            break;
        }
        if (got_term && !sv.shutting_down)
            shutdown_begin(&sv);
        if (sv.shutting_down) {
            if (alive_all(&sv) == 0)
                break;
            if (clock_mono_ms() >= sv.shutdown_deadline) {
                log_warnx("shutdown_timeout (%ld ms) passed",
                          cfg->shutdown_timeout_ms);
                kill_remaining(&sv);
                break;
            }
        } else {
            int all_refused = 1, live = 0;

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
                FOR_PIPELINES(&sv, p)
                children_signal(&p->ch, SIGUSR1);
                children_signal(&sv.reader, SIGUSR1);
            }
            /* Signals are taken only inside ppoll(), one delivery per
             * wait: a flag loses nothing. With several pipelines, which
             * one to scale is not the signal's to say. */
            if (got_ttin || got_ttou) {
                int d = got_ttin ? 1 : -1;
                const char *sig = got_ttin ? "SIGTTIN" : "SIGTTOU";

                got_ttin = got_ttou = 0;
                if (sv.labelled)
                    log_warnx("%s: several pipelines run; set "
                              "parallel_consumers in the pipeline's section "
                              "and reload",
                              sig);
                else
                    set_wanted(&sv, sv.pl[0], sv.pl[0]->ch.wanted + d, sig);
            }
            children_check_hung(&sv.reader);
            children_converge(&sv.reader);
            timeout = children_wait_ms(&sv.reader, timeout);
            FOR_PIPELINES(&sv, p)
            {
                children_check_hung(&p->ch);
                children_rollout_step(&p->ch);
                children_converge(&p->ch);
                timeout = children_wait_ms(&p->ch, timeout);
                if (p->removed)
                    continue;
                live++;
                if (!children_all_refused(&p->ch))
                    all_refused = 0;
            }
            pipelines_reap_removed(&sv);
            if (live > 0 && all_refused) {
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
             (unsigned long long)applied_total(&sv, NULL));
    cleanup(&sv);
    return rc;
}
