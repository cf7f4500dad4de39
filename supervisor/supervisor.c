/*
 * supervisor.c: the pre-fork supervisor of sluiced.
 *
 * It owns the stats segment, the pidfile and one table of workers, and
 * runs one loop: ppoll() with the handled signals blocked everywhere but
 * inside the wait, so a signal handler only sets a flag and the loop acts
 * on it at the next turn. Each turn it
 *
 *   - reaps dead workers (SIGCHLD) and schedules their restart with a
 *     delay that doubles on quick deaths and resets after a healthy run;
 *     a worker that exits EXIT_CONFIG is not restarted until a reload;
 *   - reloads the configuration (SIGHUP): a new worker count scales, any
 *     other change restarts the workers one at a time;
 *   - starts the workers that are due, stops the ones above the wanted
 *     count, kills those whose heartbeat is older than worker_timeout;
 *   - logs the aggregate rate and the group's lag every stats_interval.
 *
 * Worker n (1..N) is named CONSUMER_ID-n and writes slot n-1. When
 * relay_url is set, one more child runs beside them, the firehose reader
 * (worker/firehose.c), with the segment's firehose slot: it is started,
 * restarted with backoff and checked for hangs like a worker, and
 * restarted alone when a reload changes its settings. The supervisor
 * writes a slot only while no child owns it: before fork() and after
 * reaping.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bsd/libutil.h>
#include <bsd/string.h>
#include <bsd/unistd.h>

#include "shared/config.h"
#include "shared/exitcode.h"
#include "shared/log.h"
#include "shared/stats.h"
#include "supervisor/daemon.h"
#include "supervisor/supervisor.h"
#include "worker/firehose.h"
#include "worker/worker.h"

/* A run at least this long (and at least restart_delay_max) is healthy:
 * the next death restarts after restart_delay again. */
#define HEALTHY_RUN_MIN_MS 10000
/* The longest the loop sleeps: hang checks and restarts need a tick. */
#define TICK_MS 250
/* QUIT: how long workers get after SIGQUIT before SIGKILL. */
#define QUIT_GRACE_MS 1000
/* Redis timeout of the periodic group query. */
#define GROUP_QUERY_TIMEOUT_MS 500
/* Warn when the group's unacked entries exceed this share of
 * stream_maxlen. */
#define LAG_WARN_FRACTION 0.8

static volatile sig_atomic_t got_chld, got_hup, got_term, got_quit, got_usr1,
    got_ttin, got_ttou;

enum child_role {
    CHILD_WORKER = 0, /* a consumer: worker.c */
    CHILD_FIREHOSE,   /* the firehose reader: firehose.c */
};

struct child {
    enum child_role role;
    int n; /* worker number, 1-based; slot n-1 (0: the reader) */
    char name[STATS_NAME_MAX];
    char label[STATS_NAME_MAX + 16]; /* "worker NAME", for the logs */
    pid_t pid;                       /* 0: not running */
    int pipe_wr;          /* our end of the worker's parent pipe, or -1 */
    int64_t started_ms;   /* when it was forked */
    int64_t restart_at;   /* start it at this time (0: not scheduled) */
    long delay_ms;        /* the delay of the last restart, 0 after health */
    unsigned config_gen;  /* configuration generation it runs with */
    int config_refused;   /* exited EXIT_CONFIG: wait for a reload */
    int64_t term_sent_ms; /* TERM sent (scale down, rolling restart) */
    int kill_sent;        /* SIGKILL sent */
    int hung;             /* killed for a stale heartbeat */
    int forked_before;    /* a worker ran under this name before (and did
                             not refuse it): the name is ours */
};

struct supervisor {
    const struct supervisor_options *opt;
    char config_path[PATH_MAX]; /* absolute: -d changes to / */
    struct config *cfg;
    unsigned config_gen; /* bumped on a reload that changes settings */
    char stats_name[256];
    struct stats_segment *seg;
    struct pidfh *pfh;
    int wanted;      /* workers that should run */
    int max_workers; /* min(STATS_MAX_SLOTS, db_pool_size) */
    struct child kids[STATS_MAX_SLOTS];
    struct child reader; /* the firehose reader (pid 0: not running) */
    unsigned reader_gen; /* bumped when a reload changes its settings */
    int rollout_halted;  /* a worker refused the reloaded settings */
    int shutting_down;   /* TERM/INT received */
    int64_t shutdown_deadline;
    int64_t next_stats_ms;
    uint64_t last_applied; /* for the rate */
    int64_t last_stats_ms;
};

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

/* In a new worker: default dispositions, nothing blocked. Can't fail. */
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

static const char *
signal_name(int sig)
{
    const char *s = sigabbrev_np(sig);
    return s ? s : "?";
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

/*
 * Fork worker c. Before the fork the slot is still ours: name, state
 * STARTING, times and the restart count are written here. Returns 0, or -1
 * when fork() or pipe() failed (the restart is retried after a delay).
 */
static struct stats_slot *
child_slot(struct supervisor *sv, const struct child *c)
{
    return c->role == CHILD_FIREHOSE ? &sv->seg->firehose
                                     : &sv->seg->slots[c->n - 1];
}

/* The configuration generation c should run with. */
static unsigned
child_wanted_gen(const struct supervisor *sv, const struct child *c)
{
    return c->role == CHILD_FIREHOSE ? sv->reader_gen : sv->config_gen;
}

/* Every child, workers then the reader: for (c = ...; c; c = next). */
static struct child *
child_next(struct supervisor *sv, struct child *c)
{
    if (c == NULL)
        return &sv->kids[0];
    if (c == &sv->reader)
        return NULL;
    if (c == &sv->kids[STATS_MAX_SLOTS - 1])
        return &sv->reader;
    return c + 1;
}

/* The child's own part of the fork: never returns. */
static void __attribute__((noreturn))
child_exec(struct supervisor *sv, struct child *c, struct stats_slot *slot,
           int parent_fd)
{
    if (c->role == CHILD_FIREHOSE) {
        struct firehose_options fo = {
            .cfg = sv->cfg, .slot = slot, .parent_fd = parent_fd};
        log_set_identity("firehose", NULL);
        setproctitle("firehose %s", sv->cfg->relay_url);
        exit(firehose_run(&fo));
    }
    struct worker_options wo;
    log_set_identity("worker", c->name);
    setproctitle("worker %s", c->name);
    wo.cfg = sv->cfg;
    wo.name = c->name;
    wo.slot = slot;
    wo.parent_fd = parent_fd;
    wo.name_known = c->forked_before;
    exit(worker_run(&wo));
}

static int
child_start(struct supervisor *sv, struct child *c)
{
    struct stats_slot *slot = child_slot(sv, c);
    int fds[2];
    pid_t pid;
    int64_t now = stats_now_ms();

    /* Names longer than a slot holds are cut (the -n suffix stays). */
    if (c->role == CHILD_FIREHOSE) {
        strlcpy(c->name, "firehose", sizeof(c->name));
        strlcpy(c->label, "firehose reader", sizeof(c->label));
    } else {
        snprintf(c->name, sizeof(c->name), "%.*s-%d", STATS_NAME_MAX - 12,
                 sv->cfg->consumer_id, c->n);
        snprintf(c->label, sizeof(c->label), "worker %s", c->name);
    }
    if (pipe2(fds, O_CLOEXEC) < 0) {
        log_warn("%s: pipe", c->label);
        return -1;
    }

    stats_slot_recover(slot);
    stats_slot_write_begin(slot);
    int had_run = slot->name[0] != '\0' && slot->started_ms != 0 &&
                  strcmp(slot->name, c->name) == 0;
    if (!had_run) {
        /* A new (or renamed) worker: start from zero. */
        memset(&slot->c, 0, sizeof(slot->c));
        memset(slot->latency_hist, 0, sizeof(slot->latency_hist));
        slot->latency_sum_ms = 0;
        slot->last_error[0] = '\0';
        slot->last_error_ms = 0;
    } else {
        slot->c.restarts++;
    }
    strlcpy(slot->name, c->name, sizeof(slot->name));
    slot->pid = 0;
    slot->state = WORKER_STARTING;
    slot->started_ms = now;
    slot->heartbeat_ms = now;
    stats_slot_write_end(slot);

    pid = fork();
    if (pid < 0) {
        log_warn("%s: fork", c->label);
        close(fds[0]);
        close(fds[1]);
        stats_slot_write_begin(slot);
        slot->state = WORKER_DEAD;
        stats_slot_write_end(slot);
        return -1;
    }
    if (pid == 0) {
        pid_t parent = (pid_t)sv->seg->hdr.supervisor_pid;

        /* The worker: a TERM when the supervisor dies, and EOF on the
         * pipe for the same (the two cover each other's gaps). */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(EXIT_TEMPFAIL);
        signals_reset();
        close(fds[1]);
        for (struct child *k = child_next(sv, NULL); k; k = child_next(sv, k))
            if (k->pipe_wr >= 0)
                close(k->pipe_wr);
        if (sv->pfh != NULL)
            pidfile_close(sv->pfh); /* the lock stays with the supervisor */
        /* The pipe's read end must survive into the worker (no exec). */
        stats_slot_write_begin(slot);
        slot->pid = (int32_t)getpid();
        stats_slot_write_end(slot);
        child_exec(sv, c, slot, fds[0]);
    }
    close(fds[0]);
    c->forked_before = 1;
    c->pid = pid;
    c->pipe_wr = fds[1];
    c->started_ms = now;
    c->restart_at = 0;
    c->config_gen = child_wanted_gen(sv, c);
    c->term_sent_ms = 0;
    c->kill_sent = 0;
    c->hung = 0;
    log_info("started %s (pid %d)", c->label, (int)pid);
    return 0;
}

/* Send sig to worker c if it runs. */
static void
child_signal(struct child *c, int sig)
{
    if (c->pid > 0 && kill(c->pid, sig) < 0 && errno != ESRCH)
        log_warn("kill %s to %s (pid %d)", signal_name(sig), c->label,
                 (int)c->pid);
}

/* Ask worker c to finish its batch and exit. */
static void
child_stop(struct child *c, const char *why)
{
    if (c->pid <= 0 || c->term_sent_ms != 0)
        return;
    log_info("stopping %s (pid %d): %s", c->label, (int)c->pid, why);
    child_signal(c, SIGTERM);
    c->term_sent_ms = stats_now_ms();
}

/* How worker c ended, in words, into buf. */
static const char *
describe_status(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exited with code %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %s%s",
                 signal_name(WTERMSIG(status)),
                 WCOREDUMP(status) ? " (core dumped)" : "");
    else
        snprintf(buf, len, "ended with status 0x%x", status);
    return buf;
}

static int
running_count(const struct supervisor *sv)
{
    int n = 0;

    for (int i = 0; i < STATS_MAX_SLOTS; i++)
        if (sv->kids[i].pid > 0)
            n++;
    return n;
}

/* Workers and the reader that run. */
static int
alive_count(const struct supervisor *sv)
{
    return running_count(sv) + (sv->reader.pid > 0);
}

/*
 * A worker ended: write its slot (it is ours again), log how, and decide
 * whether and when it comes back.
 */
static void
child_reaped(struct supervisor *sv, struct child *c, int status)
{
    struct stats_slot *slot = child_slot(sv, c);
    int64_t now = stats_now_ms(), ran = now - c->started_ms;
    char how[96];
    int retired = c->role == CHILD_FIREHOSE ? sv->cfg->relay_url[0] == '\0'
                                            : c->n > sv->wanted;

    describe_status(status, how, sizeof(how));
    if (c->pipe_wr >= 0)
        close(c->pipe_wr);
    c->pipe_wr = -1;

    stats_slot_recover(slot);
    stats_slot_write_begin(slot);
    slot->state = retired ? WORKER_EMPTY : WORKER_DEAD;
    if (!retired && !sv->shutting_down &&
        !(WIFEXITED(status) && WEXITSTATUS(status) == EXIT_OK)) {
        snprintf(slot->last_error, sizeof(slot->last_error), "%s%s",
                 c->hung ? "hung (heartbeat stale), " : "", how);
        slot->last_error_ms = now;
    }
    stats_slot_write_end(slot);

    c->pid = 0;
    if (sv->shutting_down || retired) {
        log_info("%s %s%s", c->label, how,
                 retired && !sv->shutting_down ? " (scaled down)" : "");
        c->restart_at = 0;
        return;
    }
    if (c->term_sent_ms != 0 && c->config_gen != child_wanted_gen(sv, c)) {
        /* Rolling restart after a reload: back at once, new settings. */
        log_info("%s %s; restarting it with the new configuration", c->label,
                 how);
        c->delay_ms = 0;
        c->restart_at = now;
        return;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_CONFIG) {
        c->config_refused = 1;
        c->forked_before = 0; /* e.g. its name was in use: check again */
        c->restart_at = 0;
        if (c->role == CHILD_WORKER && !sv->rollout_halted &&
            running_count(sv) > 0 && c->config_gen == sv->config_gen &&
            sv->config_gen > 0) {
            /* The new configuration is refused: keep the workers that
             * still run the previous one instead of stopping them too. */
            sv->rollout_halted = 1;
            log_error("%s %s: it refuses the reloaded "
                      "configuration; the rollout stops here and the other "
                      "workers keep the previous configuration until the "
                      "next reload",
                      c->label, how);
            return;
        }
        log_error("%s %s: it refuses the configuration; not "
                  "restarting it until the configuration is reloaded "
                  "(SIGHUP)",
                  c->label, how);
        return;
    }
    long healthy = sv->cfg->restart_delay_max_ms > HEALTHY_RUN_MIN_MS
                       ? sv->cfg->restart_delay_max_ms
                       : HEALTHY_RUN_MIN_MS;
    if (ran >= healthy || c->delay_ms == 0)
        c->delay_ms = sv->cfg->restart_delay_ms;
    else if (c->delay_ms * 2 < sv->cfg->restart_delay_max_ms)
        c->delay_ms *= 2;
    else
        c->delay_ms = sv->cfg->restart_delay_max_ms;
    c->restart_at = now + c->delay_ms;
    if (c->hung)
        log_warnx("%s (heartbeat stale) %s after %lld ms; "
                  "restarting in %ld ms",
                  c->label, how, (long long)ran, c->delay_ms);
    else
        log_warnx("%s %s after %lld ms; restarting in %ld ms", c->label, how,
                  (long long)ran, c->delay_ms);
}

/* Reap every ended child without blocking. */
static void
reap_children(struct supervisor *sv)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct child *c = child_next(sv, NULL);

        while (c != NULL && c->pid != pid)
            c = child_next(sv, c);
        if (c != NULL)
            child_reaped(sv, c, status);
    }
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
    if (n != sv->wanted)
        log_info("workers: %d -> %d (%s)", sv->wanted, n, why);
    for (int i = sv->wanted; i < n; i++) {
        /* Newly wanted: due now, with a fresh backoff. */
        sv->kids[i].restart_at = stats_now_ms();
        sv->kids[i].delay_ms = 0;
        sv->kids[i].config_refused = 0;
    }
    sv->wanted = n;
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
static void
reload(struct supervisor *sv)
{
    static struct config next; /* large: not on the stack */
    struct config cmp;
    char err[CONFIG_ERR_MAX];

    memset(&next, 0, sizeof(next));
    if (config_load(&next, sv->config_path[0] ? sv->config_path : NULL,
                    sv->opt->set_options, sv->opt->nset_options, err,
                    sizeof(err)) < 0) {
        log_error("reload refused, still running on the previous "
                  "configuration: %s",
                  err);
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
    config_copy_firehose(&cmp, sv->cfg);
    int others_changed = memcmp(&cmp, sv->cfg, sizeof(cmp)) != 0;
    int count_changed = next.parallel_consumers != sv->cfg->parallel_consumers;
    int reader_changed =
        others_changed || !config_firehose_equal(&next, sv->cfg);

    *sv->cfg = next;
    sv->rollout_halted = 0;
    sv->max_workers = compute_max_workers(sv->cfg);
    atomic_fetch_add(&sv->seg->hdr.generation, 1);
    /* A reload gives refused workers another chance. */
    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        struct child *c = &sv->kids[i];
        if (c->config_refused && i < sv->wanted) {
            c->config_refused = 0;
            c->delay_ms = 0;
            c->restart_at = stats_now_ms();
        }
    }
    if (reader_changed) {
        sv->reader_gen++;
        sv->reader.config_refused = 0;
        sv->reader.delay_ms = 0;
        if (sv->cfg->relay_url[0] != '\0' && sv->reader.pid == 0)
            sv->reader.restart_at = stats_now_ms();
        if (sv->reader.pid > 0)
            log_info("configuration reloaded: the firehose reader's "
                     "settings changed, restarting it");
    }
    if (others_changed) {
        sv->config_gen++;
        log_info("configuration reloaded: settings changed, restarting the "
                 "workers one at a time");
    } else {
        log_info("configuration reloaded%s",
                 count_changed ? "" : ": nothing changed for the workers");
    }
    if (count_changed)
        set_wanted(sv, next.parallel_consumers, "reload");
    else if (sv->wanted > sv->max_workers)
        set_wanted(sv, sv->max_workers, "reload: db_pool_size");
}

/*
 * One worker at a time runs on an old configuration generation and is
 * stopped; its exit brings it back on the new one (child_reaped).
 */
static void
rolling_restart_step(struct supervisor *sv)
{
    int64_t now = stats_now_ms();
    struct stats_slot copy;

    if (sv->rollout_halted)
        return;
    for (int i = 0; i < sv->wanted; i++) {
        struct child *c = &sv->kids[i];
        if (c->pid > 0 && c->term_sent_ms != 0)
            return; /* one is on its way out: wait for it */
        if (c->pid == 0 && c->restart_at != 0 && !c->config_refused)
            return; /* one is about to start */
        if (c->pid > 0 && c->config_gen == sv->config_gen &&
            now - c->started_ms < sv->cfg->worker_timeout_ms) {
            stats_slot_read(&sv->seg->slots[i], &copy);
            if (copy.state == WORKER_STARTING)
                return; /* the last one restarted is not consuming yet */
        }
    }
    for (int i = 0; i < sv->wanted; i++) {
        struct child *c = &sv->kids[i];
        if (c->pid > 0 && c->config_gen != sv->config_gen) {
            child_stop(c, "configuration changed");
            return;
        }
    }
}

/* SIGKILL workers with a stale heartbeat, and stopping workers that
 * outlived shutdown_timeout. */
static void
check_hung(struct supervisor *sv)
{
    int64_t now = stats_now_ms();
    struct stats_slot copy;

    for (struct child *c = child_next(sv, NULL); c; c = child_next(sv, c)) {
        if (c->pid <= 0 || c->kill_sent)
            continue;
        if (c->term_sent_ms != 0 &&
            now - c->term_sent_ms > sv->cfg->shutdown_timeout_ms) {
            log_warnx("%s (pid %d) did not stop within %ld ms of "
                      "SIGTERM; killing it",
                      c->label, (int)c->pid, sv->cfg->shutdown_timeout_ms);
            child_signal(c, SIGKILL);
            c->kill_sent = 1;
            continue;
        }
        stats_slot_read(child_slot(sv, c), &copy);
        int64_t beat = copy.heartbeat_ms > c->started_ms ? copy.heartbeat_ms
                                                         : c->started_ms;
        if (now - beat > sv->cfg->worker_timeout_ms) {
            log_error("%s (pid %d): no heartbeat for %lld ms "
                      "(worker_timeout %ld ms); killing it",
                      c->label, (int)c->pid, (long long)(now - beat),
                      sv->cfg->worker_timeout_ms);
            child_signal(c, SIGKILL);
            c->kill_sent = 1;
            c->hung = 1;
        }
    }
}

/* Start due workers, stop surplus ones; the same for the reader, which
 * runs while relay_url is set. */
static void
converge(struct supervisor *sv)
{
    int64_t now = stats_now_ms();
    struct child *rd = &sv->reader;

    if (sv->cfg->relay_url[0] == '\0') {
        if (rd->pid > 0)
            child_stop(rd, "relay_url is empty now");
    } else if (rd->pid > 0 && rd->config_gen != sv->reader_gen) {
        child_stop(rd, "configuration changed");
    } else if (rd->pid == 0 && !rd->config_refused && rd->restart_at != 0 &&
               rd->restart_at <= now && child_start(sv, rd) < 0) {
        rd->delay_ms =
            rd->delay_ms ? rd->delay_ms * 2 : sv->cfg->restart_delay_ms;
        if (rd->delay_ms > sv->cfg->restart_delay_max_ms)
            rd->delay_ms = sv->cfg->restart_delay_max_ms;
        rd->restart_at = now + rd->delay_ms;
    }

    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        struct child *c = &sv->kids[i];
        if (i >= sv->wanted) {
            if (c->pid > 0)
                child_stop(c, "scaling down");
            continue;
        }
        if (c->pid > 0 || c->config_refused || c->restart_at == 0 ||
            c->restart_at > now)
            continue;
        if (child_start(sv, c) < 0) {
            c->delay_ms =
                c->delay_ms ? c->delay_ms * 2 : sv->cfg->restart_delay_ms;
            if (c->delay_ms > sv->cfg->restart_delay_max_ms)
                c->delay_ms = sv->cfg->restart_delay_max_ms;
            c->restart_at = now + c->delay_ms;
        }
    }
}

/* Every wanted worker refused the configuration and none runs: nothing
 * can work until an operator fixes it. */
static int
all_refused(const struct supervisor *sv)
{
    for (int i = 0; i < sv->wanted; i++)
        if (!sv->kids[i].config_refused)
            return 0;
    return running_count(sv) == 0;
}

/* The periodic line: aggregate rate, the group's lag and pending count,
 * and the trim warning. */
static void
log_stats(struct supervisor *sv)
{
    struct stats_group_info gi;
    int64_t now = stats_now_ms();
    uint64_t applied = applied_total(sv);
    double secs = (double)(now - sv->last_stats_ms) / 1000.0;
    double rate = secs > 0 && applied >= sv->last_applied
                      ? (double)(applied - sv->last_applied) / secs
                      : 0;
    char lag[48] = "?", pending[48] = "?", why[200] = "";

    if (stats_group_info(sv->cfg->redis_url, sv->cfg->stream_key,
                         sv->cfg->consumer_group, GROUP_QUERY_TIMEOUT_MS,
                         &gi) == 0) {
        if (gi.lag >= 0)
            snprintf(lag, sizeof(lag), "%lld", gi.lag);
        snprintf(pending, sizeof(pending), "%lld", gi.pending);
    } else {
        snprintf(why, sizeof(why), " (redis: %s)", gi.error);
    }
    log_info("processed %llu events (~%.0f events/sec), %d/%d workers, "
             "group lag %s, pending %s%s",
             (unsigned long long)applied, rate, running_count(sv), sv->wanted,
             lag, pending, why);
    /* Trimming drops the oldest entries, acked or not: what is at risk
     * is everything not yet acked, undelivered (lag) or pending. */
    if (gi.lag >= 0 && gi.pending >= 0 && sv->cfg->stream_maxlen > 0 &&
        (double)(gi.lag + gi.pending) >
            LAG_WARN_FRACTION * (double)sv->cfg->stream_maxlen)
        log_warnx("unacked entries (%lld: lag %lld, pending %lld) are close "
                  "to the stream's MAXLEN (%ld): trimming will delete "
                  "entries before they are applied; add workers or hosts",
                  gi.lag + gi.pending, gi.lag, gi.pending,
                  sv->cfg->stream_maxlen);
    sv->last_applied = applied;
    sv->last_stats_ms = now;
}

/* TERM to all; wait up to shutdown_timeout, then SIGKILL the rest. */
static void
shutdown_begin(struct supervisor *sv)
{
    sv->shutting_down = 1;
    sv->shutdown_deadline = stats_now_ms() + sv->cfg->shutdown_timeout_ms;
    log_info("stopping: SIGTERM to %d workers%s (shutdown_timeout %ld ms)",
             running_count(sv),
             sv->reader.pid > 0 ? " and the firehose reader" : "",
             sv->cfg->shutdown_timeout_ms);
    for (struct child *c = child_next(sv, NULL); c; c = child_next(sv, c)) {
        c->restart_at = 0;
        if (c->pid > 0) {
            child_signal(c, SIGTERM);
            c->term_sent_ms = stats_now_ms();
        }
    }
}

/* SIGKILL whoever still runs and wait for them. */
static void
kill_remaining(struct supervisor *sv)
{
    int status;

    for (struct child *c = child_next(sv, NULL); c; c = child_next(sv, c)) {
        if (c->pid <= 0)
            continue;
        log_warnx("%s (pid %d) still running: SIGKILL", c->label, (int)c->pid);
        child_signal(c, SIGKILL);
        if (waitpid(c->pid, &status, 0) == c->pid)
            child_reaped(sv, c, status);
    }
}

/* QUIT: SIGQUIT to all, a short grace, then SIGKILL. */
static void
quit_now(struct supervisor *sv)
{
    int64_t until = stats_now_ms() + QUIT_GRACE_MS;

    sv->shutting_down = 1;
    log_info("SIGQUIT: stopping %d workers now", running_count(sv));
    for (struct child *c = child_next(sv, NULL); c; c = child_next(sv, c))
        child_signal(c, SIGQUIT);
    while (alive_count(sv) > 0 && stats_now_ms() < until) {
        reap_children(sv);
        if (alive_count(sv) > 0)
            usleep(10000);
    }
    kill_remaining(sv);
}

static void
cleanup(struct supervisor *sv)
{
    for (struct child *c = child_next(sv, NULL); c; c = child_next(sv, c))
        if (c->pipe_wr >= 0)
            close(c->pipe_wr);
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
    sv.opt = opt;
    sv.cfg = cfg;
    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        sv.kids[i].n = i + 1;
        sv.kids[i].pipe_wr = -1;
    }
    sv.reader.role = CHILD_FIREHOSE;
    sv.reader.pipe_wr = -1;
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

    sv.max_workers = compute_max_workers(cfg);
    sv.wanted = 0;
    set_wanted(&sv, cfg->parallel_consumers, "start");
    if (cfg->relay_url[0] != '\0')
        sv.reader.restart_at = stats_now_ms();
    sv.last_stats_ms = stats_now_ms();
    sv.next_stats_ms = sv.last_stats_ms + cfg->stats_interval_ms;
    log_info("sluiced supervisor (pid %d) started: %d workers on %s/%s, "
             "stats segment %s",
             (int)getpid(), sv.wanted, cfg->stream_key, cfg->consumer_group,
             sv.stats_name);

    rc = EXIT_OK;
    for (;;) {
        int64_t now;
        long timeout = TICK_MS;
        struct timespec ts;

        if (got_chld) {
            got_chld = 0;
            reap_children(&sv);
        }
        if (got_quit) {
            quit_now(&sv);
            break;
        }
        if (got_term && !sv.shutting_down)
            shutdown_begin(&sv);
        if (sv.shutting_down) {
            if (alive_count(&sv) == 0)
                break;
            if (stats_now_ms() >= sv.shutdown_deadline) {
                log_warnx("shutdown_timeout (%ld ms) passed",
                          cfg->shutdown_timeout_ms);
                kill_remaining(&sv);
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
                for (struct child *c = child_next(&sv, NULL); c;
                     c = child_next(&sv, c))
                    child_signal(c, SIGUSR1);
            }
            /* Signals are taken only inside ppoll(), one delivery per
             * wait: a flag loses nothing. */
            if (got_ttin) {
                got_ttin = 0;
                set_wanted(&sv, sv.wanted + 1, "SIGTTIN");
            }
            if (got_ttou) {
                got_ttou = 0;
                set_wanted(&sv, sv.wanted - 1, "SIGTTOU");
            }
            check_hung(&sv);
            rolling_restart_step(&sv);
            converge(&sv);
            if (all_refused(&sv)) {
                log_error("no worker can run with this configuration; "
                          "exiting");
                rc = EXIT_CONFIG;
                break;
            }
            now = stats_now_ms();
            if (now >= sv.next_stats_ms) {
                log_stats(&sv);
                sv.next_stats_ms = now + cfg->stats_interval_ms;
            }
            for (int i = 0; i < sv.wanted; i++) {
                const struct child *c = &sv.kids[i];
                if (c->pid == 0 && c->restart_at > 0 &&
                    c->restart_at - now < timeout)
                    timeout = c->restart_at - now;
            }
            if (sv.reader.pid == 0 && sv.reader.restart_at > 0 &&
                sv.reader.restart_at - now < timeout)
                timeout = sv.reader.restart_at - now;
        }
        if (timeout < 0)
            timeout = 0;
        ts.tv_sec = timeout / 1000;
        ts.tv_nsec = (timeout % 1000) * 1000000;
        if (ppoll(NULL, 0, &ts, &waitmask) < 0 && errno != EINTR)
            log_warn("ppoll");
    }
    log_info("processed %llu events in total; supervisor exiting",
             (unsigned long long)applied_total(&sv));
    cleanup(&sv);
    return rc;
}
