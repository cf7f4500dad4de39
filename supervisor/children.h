/*
 * children.h: the supervisor's children (the workers and the firehose
 * reader) and their life: fork, reap, restart with backoff, hang check,
 * stop. Each child is in one state of enum child_state; children.c says
 * which event moves it where. The supervisor (supervisor.c) owns a struct
 * children, keeps its settings current and calls the functions below from
 * its loop; it never sets a child's state itself.
 */
#ifndef SLUICE_CHILDREN_H
#define SLUICE_CHILDREN_H

#include <stdint.h>
#include <sys/types.h>

#include "shared/config.h"
#include "shared/stats.h"

enum child_role {
    CHILD_WORKER = 0, /* a consumer: worker.c */
    CHILD_FIREHOSE,   /* the firehose reader: firehose.c */
};

enum child_state {
    CHILD_IDLE = 0, /* not running, nothing scheduled */
    CHILD_BACKOFF,  /* not running, to be forked at `due` */
    CHILD_RUNNING,  /* forked */
    CHILD_STOPPING, /* SIGTERM (or SIGQUIT) sent at `since` */
    CHILD_HUNG,     /* SIGKILL sent: its heartbeat stopped */
    CHILD_KILLED,   /* SIGKILL sent: it did not stop when asked */
    CHILD_REFUSED,  /* exited EXIT_CONFIG: waits for a reload */
    CHILD_STATE_COUNT
};

struct child {
    enum child_role role;
    int n; /* worker number, 1-based; slot n-1 (0: the reader) */
    char name[STATS_NAME_MAX];
    char label[2 * STATS_NAME_MAX + 16]; /* "worker NAME" or "worker
                                             PIPELINE/NAME", for the logs
                                             and the process title */
    enum child_state state;
    int64_t since;        /* monotonic ms the state was entered */
    pid_t pid;            /* RUNNING to KILLED: the process; else 0 */
    int pipe_wr;          /* our end of the child's parent pipe, or -1 */
    int64_t started;      /* monotonic ms of the last fork */
    int64_t due;          /* BACKOFF: fork at this monotonic ms */
    long delay_ms;        /* the delay of the last restart, 0 after health */
    unsigned config_gen;  /* configuration generation it runs with */
    int64_t beat_seen;    /* the heartbeat last read from its slot: wall ms
                             of the child's clock, never compared with
                             ours, only watched for a change */
    int64_t beat_changed; /* monotonic ms beat_seen last changed (or the
                             fork) */
    int forked_before;    /* a worker ran under this name before (and did
                             not refuse it): the name is ours */
    int slot;             /* its slot in the segment (workers), -1 none:
                             taken at the first fork, kept across restarts,
                             given back when it is scaled away */
};

struct pidfh;

struct children {
    struct config *cfg;            /* the pipeline's current settings */
    char pipeline[STATS_NAME_MAX]; /* its name, written in its slots */
    int labelled;                  /* names in the logs carry the pipeline */
    uint64_t *slots_used;          /* the supervisor's map of taken slots,
                                      shared by every pipeline (bit i: slot
                                      i) */
    struct stats_segment *seg;     /* the slots the children write */
    struct pidfh *pfh;             /* closed in a new child (may be NULL) */
    void (*in_child)(void);        /* run first in a new child: restores the
                                      signal dispositions */
    struct child kids[STATS_MAX_SLOTS];
    struct child reader; /* the firehose reader, while relay_url is set */
    int wanted;          /* workers that should run */
    unsigned config_gen; /* bumped on a reload that changes settings */
    unsigned reader_gen; /* bumped when a reload changes the reader's */
    int rollout_halted;  /* a worker refused the reloaded settings */
    int shutting_down;   /* TERM/INT/QUIT received: no more restarts */
};

/* An empty table for cfg (kept as a pointer: a reload replaces *cfg);
 * the reader is due now when relay_url is set. in_child runs first in
 * every new child. The caller sets seg, pfh, slots_used, pipeline and
 * labelled before the first children_converge(). Can't fail. */
void children_init(struct children *ch, struct config *cfg,
                   void (*in_child)(void));

/* Name of a state, for the logs. */
const char *child_state_name(enum child_state st);

/* Workers 1..n are wanted: those newly wanted are due now (any refused
 * among them gets another chance), those above n are stopped by the next
 * children_converge(). n is already bounded by the caller. */
void children_set_wanted(struct children *ch, int n);

/* A reload took new settings (*ch->cfg is replaced already): workers
 * that refused the old ones are due again; others_changed starts a
 * rolling restart, reader_changed restarts the reader. */
void children_reloaded(struct children *ch, int others_changed,
                       int reader_changed);

/* The child pid ended with the wait status (the supervisor reaps every
 * pipeline's children with one waitpid loop): 1 when it was one of ch's,
 * now handled; 0 when not. */
int children_take_exit(struct children *ch, pid_t pid, int status);

/* Kill children whose heartbeat did not change for worker_timeout, and
 * stopping ones that outlived shutdown_timeout. */
void children_check_hung(struct children *ch);

/* After a reload: stop the next worker on the old settings, one at a
 * time (its exit brings it back on the new ones). */
void children_rollout_step(struct children *ch);

/* Fork the children that are due; stop surplus workers and a reader
 * that is not wanted or runs old settings. */
void children_converge(struct children *ch);

/* The longest the loop may sleep, at most max_ms, before a child is due.
 */
long children_wait_ms(const struct children *ch, long max_ms);

/* TERM/INT: SIGTERM to every child; no restarts from now on. */
void children_shutdown(struct children *ch);

/* QUIT: SIGQUIT to every child; no restarts from now on. The caller
 * reaps them for a short grace, then children_kill_remaining(). */
void children_quit(struct children *ch);

/* SIGKILL whoever still runs and wait for each (blocking). */
void children_kill_remaining(struct children *ch);

/* Pass sig (USR1) to every running child; no state changes. */
void children_signal(struct children *ch, int sig);

/* Close our pipe ends (the supervisor exits). */
void children_close(struct children *ch);

/* Workers that run (the reader not counted); workers and the reader. */
int children_running(const struct children *ch);
int children_alive(const struct children *ch);

/* 1 when every wanted worker refused the configuration and none runs. */
int children_all_refused(const struct children *ch);

#endif
