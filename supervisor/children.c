/*
 * children.c: the life of the supervisor's children, as a state machine.
 *
 * A child (a worker, or the firehose reader) is always in exactly one
 * state, and child_event() is the only place that moves it: the rest of
 * the file decides which event happened (a heartbeat that stopped, a
 * restart time reached, a wait status) and hands it over. The actions
 * (fork, signals, the slot, the log lines) are done by the transition
 * that needs them.
 *
 *   state       event         next      action
 *   ----------  ------------  --------  ---------------------------------
 *   IDLE        want          BACKOFF   due now, fresh backoff
 *   REFUSED     want          BACKOFF   due now (a reload, or wanted
 *                                       again after a scale-down)
 *   BACKOFF     want          BACKOFF   due now, fresh backoff
 *   BACKOFF     due           RUNNING   fork, "started ..."
 *   BACKOFF     due           BACKOFF   fork failed: the delay doubles
 *   BACKOFF     stop          IDLE      (not wanted any more)
 *   REFUSED     stop          IDLE
 *   RUNNING     stop          STOPPING  SIGTERM, "stopping ...: why"
 *   RUNNING     shutdown      STOPPING  SIGTERM
 *   STOPPING    shutdown      STOPPING  SIGTERM again
 *   RUNNING     quit          STOPPING  SIGQUIT
 *   STOPPING    quit          STOPPING  SIGQUIT
 *   HUNG,KILLED shutdown/quit (same)    SIGTERM / SIGQUIT
 *   BACKOFF     shutdown/quit IDLE      (REFUSED too)
 *   RUNNING     stale         HUNG      SIGKILL, "no heartbeat for ..."
 *   STOPPING    stale         HUNG      SIGKILL, "no heartbeat for ..."
 *   STOPPING    stop-timeout  KILLED    SIGKILL, "did not stop within ..."
 *   RUNNING..   kill          KILLED    SIGKILL, "still running" (the
 *                                       shutdown deadline, QUIT's grace;
 *                                       HUNG stays HUNG)
 *
 *   and when its process is reaped, the first of these that applies:
 *
 *   RUNNING..   exit          IDLE      retired (scaled down, relay_url
 *                                       empty) or shutting down
 *   STOPPING,   exit          BACKOFF   due now, if it was stopped for
 *   KILLED                              settings it no longer has (the
 *                                       rolling restart after a reload)
 *   RUNNING..   exit 78       REFUSED   "it refuses the configuration"
 *   RUNNING..   exit          BACKOFF   due after the restart delay,
 *                                       which doubles on quick deaths
 *
 * (RUNNING.. is any state with a process: RUNNING, STOPPING, HUNG,
 * KILLED.) Every other pair leaves the child as it is: a stop for a
 * child that stops already, a want for one that runs (its next exit is
 * then counted with a fresh backoff).
 *
 * Time: every interval here (restart delays, the run that counts as
 * healthy, worker_timeout, shutdown_timeout) is measured on the
 * monotonic clock, so that a step of the wall clock (NTP, a VM resumed)
 * kills no healthy child and delays no restart. The heartbeat a child
 * writes into its slot is its wall clock (sluicectl shows it to people):
 * it is never compared with a time of ours, only watched for a change;
 * the child is hung when it has not changed for worker_timeout, timed
 * from the fork until its first change. Wall time is written only into
 * the slot's fields (started_ms, heartbeat_ms at the fork, last_error_ms).
 *
 * Worker n (1..N) is named CONSUMER_ID-n and writes the slot it took at
 * its first fork (the lowest free one of the segment, which every
 * pipeline's children share: with one pipeline, slot n-1); the reader
 * writes the segment's firehose slot. The supervisor writes a slot only
 * while no child owns it: before fork() and after reaping.
 */
#include <errno.h>
#include <fcntl.h>
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

#include "shared/clock.h"
#include "shared/exitcode.h"
#include "shared/log.h"
#include "supervisor/children.h"
#include "worker/firehose.h"
#include "worker/worker.h"

/* A run at least this long (and at least restart_delay_max) is healthy:
 * the next death restarts after restart_delay again. */
#define HEALTHY_RUN_MIN_MS 10000

enum child_event {
    EV_WANT,         /* wanted (again): start now, fresh backoff */
    EV_DUE,          /* its restart time came: fork it */
    EV_STOP,         /* not wanted with these settings: finish and exit */
    EV_SHUTDOWN,     /* the supervisor stops (TERM/INT) */
    EV_QUIT,         /* the supervisor stops at once (QUIT) */
    EV_STALE,        /* heartbeat unchanged for worker_timeout */
    EV_STOP_TIMEOUT, /* asked to stop shutdown_timeout ago */
    EV_KILL,         /* no more waiting: SIGKILL */
    EV_EXIT,         /* reaped, with its wait status */
};

static const char *const state_names[CHILD_STATE_COUNT] = {
    [CHILD_IDLE] = "idle",       [CHILD_BACKOFF] = "backoff",
    [CHILD_RUNNING] = "running", [CHILD_STOPPING] = "stopping",
    [CHILD_HUNG] = "hung",       [CHILD_KILLED] = "killed",
    [CHILD_REFUSED] = "refused",
};

const char *
child_state_name(enum child_state st)
{
    return (unsigned)st < CHILD_STATE_COUNT ? state_names[st] : "?";
}

/* A process exists for the child (it may be on its way out). */
static int
has_process(const struct child *c)
{
    return c->state == CHILD_RUNNING || c->state == CHILD_STOPPING ||
           c->state == CHILD_HUNG || c->state == CHILD_KILLED;
}

static const char *
signal_name(int sig)
{
    const char *s = sigabbrev_np(sig);
    return s ? s : "?";
}

static struct stats_slot *
child_slot(struct children *ch, const struct child *c)
{
    return c->role == CHILD_FIREHOSE ? &ch->seg->firehose
                                     : &ch->seg->slots[c->slot];
}

/* Give c a slot of its own if it has none: the lowest free one. 0, or -1
 * when every slot is taken (the supervisor bounds the workers so that it
 * never happens). */
static int
child_take_slot(struct children *ch, struct child *c)
{
    if (c->role == CHILD_FIREHOSE || c->slot >= 0)
        return 0;
    for (int i = 0; i < STATS_MAX_SLOTS; i++)
        if (!(*ch->slots_used & (UINT64_C(1) << i))) {
            *ch->slots_used |= UINT64_C(1) << i;
            c->slot = i;
            return 0;
        }
    return -1;
}

/* c is scaled away (or its pipeline removed): its slot is free again. */
static void
child_give_slot(struct children *ch, struct child *c)
{
    if (c->role == CHILD_FIREHOSE || c->slot < 0)
        return;
    *ch->slots_used &= ~(UINT64_C(1) << c->slot);
    c->slot = -1;
}

/* The configuration generation c should run with. */
static unsigned
child_wanted_gen(const struct children *ch, const struct child *c)
{
    return c->role == CHILD_FIREHOSE ? ch->reader_gen : ch->config_gen;
}

/* Every child, workers then the reader: for (c = ...; c; c = next). */
static struct child *
child_next(struct children *ch, struct child *c)
{
    if (c == NULL)
        return &ch->kids[0];
    if (c == &ch->reader)
        return NULL;
    if (c == &ch->kids[STATS_MAX_SLOTS - 1])
        return &ch->reader;
    return c + 1;
}

/* Name c after the current consumer_id (names longer than a slot holds
 * are cut; the -n suffix stays). */
static void
child_set_name(const struct children *ch, struct child *c)
{
    if (c->role == CHILD_FIREHOSE) {
        strlcpy(c->name, "firehose", sizeof(c->name));
        strlcpy(c->label, "firehose reader", sizeof(c->label));
    } else {
        snprintf(c->name, sizeof(c->name), "%.*s-%d", STATS_NAME_MAX - 12,
                 ch->cfg->consumer_id, c->n);
        if (ch->labelled)
            snprintf(c->label, sizeof(c->label), "worker %.*s/%.*s",
                     STATS_NAME_MAX - 1, ch->pipeline, STATS_NAME_MAX - 1,
                     c->name);
        else
            snprintf(c->label, sizeof(c->label), "worker %s", c->name);
    }
}

/* c leaves its state for st, at now (monotonic ms). */
static void
enter(struct child *c, enum child_state st, int64_t now)
{
    log_debug("%s: %s -> %s", c->label, child_state_name(c->state),
              child_state_name(st));
    c->state = st;
    c->since = now;
}

/* Send sig to c's process, if it has one. */
static void
child_signal(struct child *c, int sig)
{
    if (c->pid > 0 && kill(c->pid, sig) < 0 && errno != ESRCH)
        log_warn("kill %s to %s (pid %d)", signal_name(sig), c->label,
                 (int)c->pid);
}

/* How a child ended, in words, into buf. */
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

/* The child's own part of the fork: never returns. */
static void __attribute__((noreturn))
child_exec(struct children *ch, struct child *c, struct stats_slot *slot,
           int parent_fd)
{
    if (c->role == CHILD_FIREHOSE) {
        struct firehose_options fo = {
            .cfg = ch->cfg, .slot = slot, .parent_fd = parent_fd};
        log_set_identity("firehose", NULL);
        setproctitle("firehose %s", ch->cfg->relay_url);
        exit(firehose_run(&fo));
    }
    struct worker_options wo;
    log_set_identity("worker", c->label + strlen("worker "));
    setproctitle("%s", c->label);
    wo.cfg = ch->cfg;
    wo.name = c->name;
    wo.slot = slot;
    wo.parent_fd = parent_fd;
    wo.name_known = c->forked_before;
    exit(worker_run(&wo));
}

/*
 * Fork c. Before the fork the slot is still ours: name, state STARTING,
 * times (wall ms, for people) and the restart count are written here.
 * Returns 0, or -1 when fork() or pipe() failed (nothing changed but the
 * slot, marked dead).
 */
static int
child_fork(struct children *ch, struct child *c, int64_t now)
{
    struct stats_slot *slot;
    int64_t wall = stats_now_ms();
    int fds[2];
    pid_t pid;

    child_set_name(ch, c); /* consumer_id may have changed on a reload */
    if (child_take_slot(ch, c) < 0) {
        log_warnx("%s: every stats slot (%d) is taken", c->label,
                  STATS_MAX_SLOTS);
        return -1;
    }
    slot = child_slot(ch, c);
    if (pipe2(fds, O_CLOEXEC) < 0) {
        log_warn("%s: pipe", c->label);
        return -1;
    }

    stats_slot_recover(slot);
    stats_slot_write_begin(slot);
    int had_run = slot->name[0] != '\0' && slot->started_ms != 0 &&
                  strcmp(slot->name, c->name) == 0 &&
                  strcmp(slot->pipeline, ch->pipeline) == 0;
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
    strlcpy(slot->pipeline, ch->pipeline, sizeof(slot->pipeline));
    slot->pid = 0;
    slot->state = WORKER_STARTING;
    slot->started_ms = wall;
    slot->heartbeat_ms = wall;
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
        pid_t parent = (pid_t)ch->seg->hdr.supervisor_pid;

        /* The child: a TERM when the supervisor dies, and EOF on the
         * pipe for the same (the two cover each other's gaps). */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(EXIT_TEMPFAIL);
        if (ch->in_child != NULL)
            ch->in_child();
        close(fds[1]);
        for (struct child *k = child_next(ch, NULL); k; k = child_next(ch, k))
            if (k->pipe_wr >= 0)
                close(k->pipe_wr);
        if (ch->pfh != NULL)
            pidfile_close(ch->pfh); /* the lock stays with the supervisor */
        /* The pipe's read end must survive into the child (no exec). */
        stats_slot_write_begin(slot);
        slot->pid = (int32_t)getpid();
        stats_slot_write_end(slot);
        child_exec(ch, c, slot, fds[0]);
    }
    close(fds[0]);
    c->forked_before = 1;
    c->pid = pid;
    c->pipe_wr = fds[1];
    c->started = now;
    c->due = 0;
    c->config_gen = child_wanted_gen(ch, c);
    c->beat_seen = wall; /* what the slot holds until the child beats */
    c->beat_changed = now;
    log_info("started %s (pid %d)", c->label, (int)pid);
    return 0;
}

/* The delay before the restart of a child that died after running
 * ran_ms: restart_delay after a healthy run (or the first death), else
 * twice the last one, up to restart_delay_max. */
static long
next_delay(const struct children *ch, const struct child *c, int64_t ran_ms)
{
    long healthy = ch->cfg->restart_delay_max_ms > HEALTHY_RUN_MIN_MS
                       ? ch->cfg->restart_delay_max_ms
                       : HEALTHY_RUN_MIN_MS;

    if (ran_ms >= healthy || c->delay_ms == 0)
        return ch->cfg->restart_delay_ms;
    if (c->delay_ms * 2 < ch->cfg->restart_delay_max_ms)
        return c->delay_ms * 2;
    return ch->cfg->restart_delay_max_ms;
}

/*
 * c ended with status (EV_EXIT): write its slot (it is ours again), log
 * how, and choose the next state: IDLE, BACKOFF (now or after a delay)
 * or REFUSED. Called by child_event() only.
 */
static void
child_exited(struct children *ch, struct child *c, int status, int64_t now)
{
    struct stats_slot *slot = child_slot(ch, c);
    int64_t ran = now - c->started;
    enum child_state was = c->state;
    char how[96];
    int retired = c->role == CHILD_FIREHOSE ? ch->cfg->relay_url[0] == '\0'
                                            : c->n > ch->wanted;

    describe_status(status, how, sizeof(how));
    if (c->pipe_wr >= 0)
        close(c->pipe_wr);
    c->pipe_wr = -1;
    c->pid = 0;

    stats_slot_recover(slot);
    stats_slot_write_begin(slot);
    slot->state = retired ? WORKER_EMPTY : WORKER_DEAD;
    if (!retired && !ch->shutting_down &&
        !(WIFEXITED(status) && WEXITSTATUS(status) == EXIT_OK)) {
        snprintf(slot->last_error, sizeof(slot->last_error), "%s%s",
                 was == CHILD_HUNG ? "hung (heartbeat stale), " : "", how);
        slot->last_error_ms = stats_now_ms();
    }
    stats_slot_write_end(slot);
    if (retired)
        child_give_slot(ch, c);

    if (ch->shutting_down || retired) {
        log_info("%s %s%s", c->label, how,
                 retired && !ch->shutting_down ? " (scaled down)" : "");
        enter(c, CHILD_IDLE, now);
        return;
    }
    if ((was == CHILD_STOPPING || was == CHILD_KILLED) &&
        c->config_gen != child_wanted_gen(ch, c)) {
        /* Rolling restart after a reload: back at once, new settings. */
        log_info("%s %s; restarting it with the new configuration", c->label,
                 how);
        c->delay_ms = 0;
        c->due = now;
        enter(c, CHILD_BACKOFF, now);
        return;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_CONFIG) {
        c->forked_before = 0; /* e.g. its name was in use: check again */
        enter(c, CHILD_REFUSED, now);
        if (c->role == CHILD_WORKER && !ch->rollout_halted &&
            children_running(ch) > 0 && c->config_gen == ch->config_gen &&
            ch->config_gen > 0) {
            /* The new configuration is refused: keep the workers that
             * still run the previous one instead of stopping them too. */
            ch->rollout_halted = 1;
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
    c->delay_ms = next_delay(ch, c, ran);
    c->due = now + c->delay_ms;
    enter(c, CHILD_BACKOFF, now);
    if (was == CHILD_HUNG)
        log_warnx("%s (heartbeat stale) %s after %lld ms; "
                  "restarting in %ld ms",
                  c->label, how, (long long)ran, c->delay_ms);
    else
        log_warnx("%s %s after %lld ms; restarting in %ld ms", c->label, how,
                  (long long)ran, c->delay_ms);
}

/*
 * The state machine: event ev happened to c. status is the wait status
 * (EV_EXIT), why the reason logged (EV_STOP). Every change of c->state
 * happens here (child_exited() is its EV_EXIT part); pairs the table at
 * the top does not list change nothing.
 */
static void
child_event(struct children *ch, struct child *c, enum child_event ev,
            int status, const char *why)
{
    int64_t now = clock_mono_ms();

    switch (ev) {
    case EV_WANT:
        c->delay_ms = 0;
        if (!has_process(c)) {
            c->due = now;
            enter(c, CHILD_BACKOFF, now);
        }
        break;
    case EV_DUE:
        if (c->state != CHILD_BACKOFF)
            break;
        if (child_fork(ch, c, now) == 0) {
            enter(c, CHILD_RUNNING, now);
        } else {
            c->delay_ms =
                c->delay_ms ? c->delay_ms * 2 : ch->cfg->restart_delay_ms;
            if (c->delay_ms > ch->cfg->restart_delay_max_ms)
                c->delay_ms = ch->cfg->restart_delay_max_ms;
            c->due = now + c->delay_ms;
            enter(c, CHILD_BACKOFF, now);
        }
        break;
    case EV_STOP:
        if (c->state == CHILD_BACKOFF || c->state == CHILD_REFUSED) {
            c->due = 0;
            enter(c, CHILD_IDLE, now);
        } else if (c->state == CHILD_RUNNING) {
            log_info("stopping %s (pid %d): %s", c->label, (int)c->pid, why);
            child_signal(c, SIGTERM);
            enter(c, CHILD_STOPPING, now);
        }
        break;
    case EV_SHUTDOWN:
    case EV_QUIT:
        if (c->state == CHILD_BACKOFF || c->state == CHILD_REFUSED) {
            c->due = 0;
            enter(c, CHILD_IDLE, now);
        } else if (c->state == CHILD_RUNNING || c->state == CHILD_STOPPING) {
            child_signal(c, ev == EV_QUIT ? SIGQUIT : SIGTERM);
            enter(c, CHILD_STOPPING, now);
        } else if (has_process(c)) {
            child_signal(c, ev == EV_QUIT ? SIGQUIT : SIGTERM);
        }
        break;
    case EV_STALE:
        if (c->state != CHILD_RUNNING && c->state != CHILD_STOPPING)
            break;
        log_error("%s (pid %d): no heartbeat for %lld ms "
                  "(worker_timeout %ld ms); killing it",
                  c->label, (int)c->pid, (long long)(now - c->beat_changed),
                  ch->cfg->worker_timeout_ms);
        child_signal(c, SIGKILL);
        enter(c, CHILD_HUNG, now);
        break;
    case EV_STOP_TIMEOUT:
        if (c->state != CHILD_STOPPING)
            break;
        log_warnx("%s (pid %d) did not stop within %ld ms of "
                  "SIGTERM; killing it",
                  c->label, (int)c->pid, ch->cfg->shutdown_timeout_ms);
        child_signal(c, SIGKILL);
        enter(c, CHILD_KILLED, now);
        break;
    case EV_KILL:
        if (!has_process(c))
            break;
        log_warnx("%s (pid %d) still running: SIGKILL", c->label, (int)c->pid);
        child_signal(c, SIGKILL);
        if (c->state != CHILD_HUNG)
            enter(c, CHILD_KILLED, now);
        break;
    case EV_EXIT:
        if (has_process(c))
            child_exited(ch, c, status, now);
        break;
    }
}

/* ---- the interface ---------------------------------------------------- */

void
children_init(struct children *ch, struct config *cfg, void (*in_child)(void))
{
    memset(ch, 0, sizeof(*ch));
    ch->cfg = cfg;
    ch->in_child = in_child;
    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        ch->kids[i].n = i + 1;
        ch->kids[i].pipe_wr = -1;
        ch->kids[i].slot = -1;
        child_set_name(ch, &ch->kids[i]);
    }
    ch->reader.role = CHILD_FIREHOSE;
    ch->reader.pipe_wr = -1;
    ch->reader.slot = -1;
    child_set_name(ch, &ch->reader);
    if (cfg->relay_url[0] != '\0')
        child_event(ch, &ch->reader, EV_WANT, 0, NULL);
}

void
children_set_wanted(struct children *ch, int n)
{
    for (int i = ch->wanted; i < n; i++)
        child_event(ch, &ch->kids[i], EV_WANT, 0, NULL);
    ch->wanted = n;
}

void
children_reloaded(struct children *ch, int others_changed, int reader_changed)
{
    ch->rollout_halted = 0;
    /* A reload gives refused workers another chance. */
    for (int i = 0; i < ch->wanted; i++)
        if (ch->kids[i].state == CHILD_REFUSED)
            child_event(ch, &ch->kids[i], EV_WANT, 0, NULL);
    if (reader_changed) {
        struct child *rd = &ch->reader;

        ch->reader_gen++;
        if (ch->cfg->relay_url[0] != '\0')
            child_event(ch, rd, EV_WANT, 0, NULL);
        else
            rd->delay_ms = 0; /* stopped by children_converge() */
        if (has_process(rd))
            log_info("configuration reloaded: the firehose reader's "
                     "settings changed, restarting it");
    }
    if (others_changed)
        ch->config_gen++;
}

int
children_take_exit(struct children *ch, pid_t pid, int status)
{
    for (struct child *c = child_next(ch, NULL); c; c = child_next(ch, c))
        if (c->pid == pid && has_process(c)) {
            child_event(ch, c, EV_EXIT, status, NULL);
            return 1;
        }
    return 0;
}

void
children_check_hung(struct children *ch)
{
    int64_t now = clock_mono_ms();
    struct stats_slot copy;

    for (struct child *c = child_next(ch, NULL); c; c = child_next(ch, c)) {
        if (c->state != CHILD_RUNNING && c->state != CHILD_STOPPING)
            continue;
        if (c->state == CHILD_STOPPING &&
            now - c->since > ch->cfg->shutdown_timeout_ms) {
            child_event(ch, c, EV_STOP_TIMEOUT, 0, NULL);
            continue;
        }
        stats_slot_read(child_slot(ch, c), &copy);
        if (copy.heartbeat_ms != c->beat_seen) {
            c->beat_seen = copy.heartbeat_ms;
            c->beat_changed = now;
        }
        if (now - c->beat_changed > ch->cfg->worker_timeout_ms)
            child_event(ch, c, EV_STALE, 0, NULL);
    }
}

void
children_rollout_step(struct children *ch)
{
    int64_t now = clock_mono_ms();
    struct stats_slot copy;

    if (ch->rollout_halted)
        return;
    for (int i = 0; i < ch->wanted; i++) {
        struct child *c = &ch->kids[i];
        if (has_process(c) && c->state != CHILD_RUNNING)
            return; /* one is on its way out: wait for it */
        if (c->state == CHILD_BACKOFF)
            return; /* one is about to start */
        if (c->state == CHILD_RUNNING && c->config_gen == ch->config_gen &&
            now - c->started < ch->cfg->worker_timeout_ms) {
            stats_slot_read(child_slot(ch, c), &copy);
            if (copy.state == WORKER_STARTING)
                return; /* the last one restarted is not consuming yet */
        }
    }
    for (int i = 0; i < ch->wanted; i++) {
        struct child *c = &ch->kids[i];
        if (c->state == CHILD_RUNNING && c->config_gen != ch->config_gen) {
            child_event(ch, c, EV_STOP, 0, "configuration changed");
            return;
        }
    }
}

void
children_converge(struct children *ch)
{
    int64_t now = clock_mono_ms();
    struct child *rd = &ch->reader;

    if (ch->cfg->relay_url[0] == '\0')
        child_event(ch, rd, EV_STOP, 0, "relay_url is empty now");
    else if (rd->state == CHILD_RUNNING && rd->config_gen != ch->reader_gen)
        child_event(ch, rd, EV_STOP, 0, "configuration changed");
    else if (rd->state == CHILD_BACKOFF && rd->due <= now)
        child_event(ch, rd, EV_DUE, 0, NULL);

    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        struct child *c = &ch->kids[i];
        if (i >= ch->wanted)
            child_event(ch, c, EV_STOP, 0, "scaling down");
        else if (c->state == CHILD_BACKOFF && c->due <= now)
            child_event(ch, c, EV_DUE, 0, NULL);
    }
}

long
children_wait_ms(const struct children *ch, long max_ms)
{
    int64_t now = clock_mono_ms();
    long wait = max_ms;

    for (int i = 0; i < ch->wanted; i++) {
        const struct child *c = &ch->kids[i];
        if (c->state == CHILD_BACKOFF && c->due - now < wait)
            wait = (long)(c->due - now);
    }
    if (ch->cfg->relay_url[0] != '\0' && ch->reader.state == CHILD_BACKOFF &&
        ch->reader.due - now < wait)
        wait = (long)(ch->reader.due - now);
    return wait < 0 ? 0 : wait;
}

void
children_shutdown(struct children *ch)
{
    ch->shutting_down = 1;
    for (struct child *c = child_next(ch, NULL); c; c = child_next(ch, c))
        child_event(ch, c, EV_SHUTDOWN, 0, NULL);
}

void
children_kill_remaining(struct children *ch)
{
    int status;

    for (struct child *c = child_next(ch, NULL); c; c = child_next(ch, c)) {
        if (!has_process(c))
            continue;
        child_event(ch, c, EV_KILL, 0, NULL);
        if (waitpid(c->pid, &status, 0) == c->pid)
            child_event(ch, c, EV_EXIT, status, NULL);
    }
}

void
children_quit(struct children *ch)
{
    ch->shutting_down = 1;
    for (struct child *c = child_next(ch, NULL); c; c = child_next(ch, c))
        child_event(ch, c, EV_QUIT, 0, NULL);
}

void
children_signal(struct children *ch, int sig)
{
    for (struct child *c = child_next(ch, NULL); c; c = child_next(ch, c))
        if (has_process(c))
            child_signal(c, sig);
}

void
children_close(struct children *ch)
{
    for (struct child *c = child_next(ch, NULL); c; c = child_next(ch, c))
        if (c->pipe_wr >= 0) {
            close(c->pipe_wr);
            c->pipe_wr = -1;
        }
}

int
children_running(const struct children *ch)
{
    int n = 0;

    for (int i = 0; i < STATS_MAX_SLOTS; i++)
        if (has_process(&ch->kids[i]))
            n++;
    return n;
}

int
children_alive(const struct children *ch)
{
    return children_running(ch) + has_process(&ch->reader);
}

int
children_all_refused(const struct children *ch)
{
    for (int i = 0; i < ch->wanted; i++)
        if (ch->kids[i].state != CHILD_REFUSED)
            return 0;
    return children_running(ch) == 0;
}
