/*
 * stats.h: the shared-memory statistics segment that sluiced creates, its
 * workers write and sluicectl reads.
 *
 * One POSIX shared-memory object per supervisor (its name comes from the
 * configuration: config_stats_name()). The layout is versioned: a reader
 * checks magic, layout version and size before trusting anything else.
 *
 *   struct stats_header      magic, version, size, supervisor pid, start
 *                            time, generation (bumped on reload), nslots
 *   struct stats_slot[nslots] one per worker, of any pipeline (a worker
 *                            keeps its slot across restarts; with one
 *                            pipeline, slot n-1 = CONSUMER_ID-n); each
 *                            names its pipeline
 *   struct stats_slot firehose the firehose reader's (state, heartbeat and
 *                            the counters in its struct stats_firehose)
 *   struct stats_pipeline[]  one per pipeline: name, stream, group and
 *                            wanted workers (hdr.npipelines of them)
 *
 * Concurrency: every slot has exactly one writer at a time. The worker that
 * owns it writes it while alive; the supervisor writes it only while no
 * worker owns it (before fork, after reaping). Writers bracket every update
 * with stats_slot_write_begin()/stats_slot_write_end(), which make the
 * change count odd during the write; readers copy the slot with
 * stats_slot_read(), which retries until it saw an even, unchanged count,
 * so a reader never sees a torn slot (the PostgreSQL pgstat protocol).
 */
#ifndef SLUICE_STATS_H
#define SLUICE_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define STATS_MAGIC          0x534c4355u /* "SLCU" */
#define STATS_LAYOUT_VERSION 7u
#define STATS_MAX_SLOTS      64
#define STATS_MAX_PIPELINES  64
#define STATS_NAME_MAX       64
#define STATS_ERROR_MAX      160
/*
 * Latency histogram (stream-ID time to commit), in milliseconds: buckets
 * 0..3 count 0, 1, 2 and 3 ms; above that every power of two [2^k,
 * 2^(k+1)) is split into STATS_HIST_SUB buckets of equal width, so that a
 * bucket's upper bound is at most 25 % above any latency in it (4..4.99
 * ms reads 5 ms; 96..111 ms reads 112 ms), up to 65.5 s; the last bucket
 * counts everything slower. 61 buckets.
 */
#define STATS_HIST_SUB     4 /* = 2^2: the width in [2^k, 2^(k+1)) is 2^(k-2) */
#define STATS_HIST_MAX_OCT 16 /* the finite buckets end at 2^16 ms */
#define STATS_HIST_BUCKETS                                                     \
    (STATS_HIST_SUB + (STATS_HIST_MAX_OCT - 2) * STATS_HIST_SUB + 1)

enum worker_state {
    WORKER_EMPTY = 0, /* slot unused */
    WORKER_STARTING,  /* forked, connecting */
    WORKER_RUNNING,   /* consuming */
    WORKER_DRAINING,  /* TERM received: finishing its batch */
    WORKER_BACKOFF,   /* a server is down: waiting to reconnect */
    WORKER_DEAD,      /* exited; the supervisor will restart it */
    WORKER_STATE_COUNT
};

const char *worker_state_name(enum worker_state st);

struct stats_counters {
    uint64_t entries_read;   /* entries delivered to this worker */
    uint64_t events_applied; /* entries committed to PostgreSQL */
    uint64_t dead_lettered;  /* entries moved to the dead-letter stream */
    uint64_t batches_committed;
    uint64_t batches_retried; /* transient failure, batch applied again */
    uint64_t deadlocks;       /* of those, PostgreSQL deadlocks (40P01) */
    uint64_t counter_folds;   /* sink maintenance runs that did work */
    uint64_t entries_claimed; /* taken over with XAUTOCLAIM */
    uint64_t acks;            /* entries acked (XACK) */
    uint64_t redis_errors;
    uint64_t pg_errors;
    uint64_t restarts;               /* written by the supervisor */
    uint64_t entries_trimmed_unread; /* lost to trimming before the group
                                        read them (found by this worker) */
};

/* What the firehose reader is doing (its slot's fh.state). */
enum firehose_state {
    FIREHOSE_OFF = 0,    /* no reader (relay_url empty) */
    FIREHOSE_CONNECTING, /* connecting, or waiting to reconnect */
    FIREHOSE_CONNECTED,  /* frames flow */
    FIREHOSE_PAUSED,     /* the stream is at its cap: not reading */
    FIREHOSE_STATE_COUNT
};

const char *firehose_state_name(enum firehose_state st);

/* The firehose reader's figures, in its slot (zero in workers' slots). */
struct stats_firehose {
    uint32_t state; /* enum firehose_state */
    uint32_t pad;
    int64_t last_seq;        /* relay seq of the last entry written */
    int64_t cursor_saved;    /* the seq last saved as the cursor */
    int64_t last_event_ms;   /* the relay's time of that event (wall ms) */
    int64_t last_frame_ms;   /* when a frame last arrived (wall ms) */
    int64_t paused_since_ms; /* the current pause began (wall ms), or 0 */
    int64_t stream_length;   /* XLEN at the last trim check, -1 unknown */
    uint64_t frames;         /* messages received */
    uint64_t bytes;          /* WebSocket payload bytes received */
    uint64_t entries;        /* entries XADDed (commit, identity, account) */
    uint64_t malformed;      /* frames skipped as malformed (dead-lettered) */
    uint64_t oversize;       /* frames over firehose_max_frame (the same) */
    uint64_t sync;           /* #sync frames, skipped */
    uint64_t info;           /* #info frames, logged */
    uint64_t unknown;        /* frames of an unknown type, skipped */
    uint64_t relay_errors;   /* error frames (FutureCursor, ...) */
    uint64_t too_big;        /* commits flagged tooBig */
    uint64_t ops_without_record; /* create/update ops with no block */
    uint64_t connects;           /* connections opened to the relay */
    uint64_t pauses;  /* times the stream's cap stopped the reading */
    uint64_t trimmed; /* entries XTRIM removed (acked by every group) */
};

struct stats_slot {
    _Atomic uint32_t changecount; /* odd while being written */
    int32_t pid;
    uint32_t state; /* enum worker_state */
    uint32_t last_batch_size;
    char name[STATS_NAME_MAX]; /* consumer name, CONSUMER_ID-n */
    int64_t started_ms;        /* CLOCK_REALTIME ms, this process */
    int64_t heartbeat_ms;      /* CLOCK_REALTIME ms, last loop turn */
    uint64_t last_batch_us;    /* duration of the last batch commit */
    struct stats_counters c;
    uint64_t latency_hist[STATS_HIST_BUCKETS];
    char last_error[STATS_ERROR_MAX];
    int64_t last_error_ms;
    uint64_t latency_sum_ms;  /* sum of the latencies in latency_hist
                                 (stats_hist_add keeps it) */
    struct stats_firehose fh; /* the firehose reader's slot only */
    int64_t last_commit_ms;   /* CLOCK_REALTIME ms of the last commit, 0
                                 before the first (workers) */
    /* The group's figures as this worker last read them from Redis
     * (XLEN, XINFO GROUPS, about once a second), so that the supervisor
     * never asks Redis itself; group_ms is when (CLOCK_REALTIME ms, 0
     * never), and a figure Redis could not tell is -1. */
    int64_t group_ms;
    int64_t group_length;
    int64_t group_pending;
    int64_t group_lag;
    int64_t group_consumers;
    char pipeline[STATS_NAME_MAX]; /* the pipeline's name ("main" alone) */
} __attribute__((aligned(64)));

/* One pipeline, written by the supervisor alone (at start and reload),
 * under the same seqlock protocol as a slot. */
struct stats_pipeline {
    _Atomic uint32_t changecount;
    uint32_t wanted; /* its workers_wanted */
    char name[STATS_NAME_MAX];
    char stream[256];
    char group[256];
    int64_t ready_max_lag; /* its /readyz bounds */
    int64_t ready_max_idle_ms;
} __attribute__((aligned(64)));

struct stats_header {
    uint32_t magic;
    uint32_t version;
    uint64_t size; /* bytes of the whole segment */
    int32_t supervisor_pid;
    uint32_t nslots;             /* slots in the segment (STATS_MAX_SLOTS) */
    int64_t started_ms;          /* supervisor start, CLOCK_REALTIME ms */
    _Atomic uint32_t generation; /* bumped on every reload */
    _Atomic uint32_t workers_wanted; /* current PARALLEL_CONSUMERS */
    char stream[256];
    char group[256];
    char redis_url[512];         /* password redacted */
    _Atomic uint32_t npipelines; /* entries of pipelines[] in use */
    uint32_t labelled; /* several pipelines (or sections): name them */
} __attribute__((aligned(64)));

struct stats_segment {
    struct stats_header hdr;
    struct stats_slot slots[STATS_MAX_SLOTS];
    struct stats_slot firehose; /* the reader's, when relay_url is set */
    struct stats_pipeline pipelines[STATS_MAX_PIPELINES];
};

/* Result of stats_open(). */
enum stats_open_result {
    STATS_OK = 0,
    STATS_NOT_FOUND,  /* no segment of that name */
    STATS_NO_ACCESS,  /* permission denied */
    STATS_BAD_LAYOUT, /* magic, version or size mismatch */
    STATS_SYS_ERROR,  /* other error, errno set */
};

/*
 * Create (or take over a stale one of a crashed supervisor) the segment
 * `name`, mode 0644, zeroed, header filled. Returns the mapping or NULL
 * with errno set: EADDRINUSE when a live supervisor owns the segment.
 * Only the supervisor calls this.
 */
struct stats_segment *stats_create(const char *name, const char *stream,
                                   const char *group, const char *redis_url);

/* Map an existing segment read-only (sluicectl) or read-write (a worker
 * started with --worker attaches nothing: it uses a private slot). */
enum stats_open_result stats_open(const char *name,
                                  const struct stats_segment **out);

/* Unmap; stats_remove() also unlinks the name (clean supervisor exit). */
void stats_close(const struct stats_segment *seg);
void stats_remove(struct stats_segment *seg, const char *name);

/* 1 when the supervisor named in hdr still runs (a live, non-zombie
 * process that is not younger than the segment); 0 for the caller's own
 * pid. Can't fail. */
int stats_supervisor_alive(const struct stats_header *hdr);

/* Layout version of the segment `name` (magic checked, nothing else);
 * 0 when it can't be read. Lets sluicectl say which version it found. */
uint32_t stats_peek_version(const char *name);

/* Hand the object `name` to uid:gid (before a privilege drop, so that the
 * supervisor can still unlink it). Returns 0 or -1 with errno set. */
int stats_chown(const char *name, uid_t uid, gid_t gid);

/* The same protocol for a pipeline's entry (the supervisor writes;
 * sluicectl reads). */
void stats_pipeline_write_begin(struct stats_pipeline *p);
void stats_pipeline_write_end(struct stats_pipeline *p);
void stats_pipeline_read(const struct stats_pipeline *p,
                         struct stats_pipeline *out);

/* Writer side: bracket every update of a slot. */
void stats_slot_write_begin(struct stats_slot *slot);
void stats_slot_write_end(struct stats_slot *slot);

/* Supervisor, after reaping a slot's worker: make a change count left odd
 * by a writer that died mid-update even again. Can't fail. */
void stats_slot_recover(struct stats_slot *slot);

/* Reader side: a consistent copy of slot into out. Can't fail; spins
 * (with sched_yield) while a writer is mid-update. A writer that died
 * mid-update (the count stays odd for 0.5 s) gets its slot returned as
 * it is. */
void stats_slot_read(const struct stats_slot *slot, struct stats_slot *out);

/* Record one commit latency in ms into the histogram and latency_sum_ms
 * (writer side, inside write_begin/end). */
void stats_hist_add(struct stats_slot *slot, uint64_t latency_ms);

/* The latency below which fraction q (0..1) of the histogram's samples
 * fall, as the upper bound of that bucket in ms; 0 when empty. */
uint64_t stats_hist_quantile(const uint64_t *hist, double q);

/* Upper bound in ms of histogram bucket i (exclusive: bucket i counts
 * latencies below it); for the last (overflow) bucket its lower bound,
 * 65,536. */
uint64_t stats_hist_bucket_upper_ms(unsigned i);

/* The consumer group's figures in Redis (the workers publish them in
 * their slots: group_*). */
struct stats_group_info {
    long long length;    /* XLEN of the stream */
    long long pending;   /* entries delivered, not yet acked */
    long long lag;       /* entries not yet delivered to the group; -1
                            when Redis can't tell */
    long long consumers; /* consumers known to the group */
    char error[160];     /* why the figures are missing */
};

/*
 * Ask Redis (redis_url may carry a password) for the group's figures with
 * one short connection. Returns 0, or -1 with out->error set (server down,
 * no such stream or group); unknown figures are -1. Waits at most a few
 * times timeout_ms.
 */
int stats_group_info(const char *redis_url, const char *stream,
                     const char *group, long timeout_ms,
                     struct stats_group_info *out);

/*
 * The same figures on an open connection (a worker's, which publishes
 * them in its slot): XLEN and XINFO GROUPS. Returns 0, or -1 with
 * out->error set; unknown figures are -1.
 */
struct redisContext;
int stats_group_query(struct redisContext *c, const char *stream,
                      const char *group, struct stats_group_info *out);

/* Milliseconds since the epoch (CLOCK_REALTIME). */
int64_t stats_now_ms(void);

#endif
