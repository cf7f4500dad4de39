/*
 * stats.c: the shared-memory statistics segment (see stats.h for the
 * layout and the one-writer-per-slot rule).
 *
 * The segment is a POSIX shared-memory object created by the supervisor
 * before it forks; the workers inherit the read-write mapping across
 * fork() and never open it by name. sluicectl maps it read-only.
 *
 * Consistency uses a change count per slot (a sequence lock): the writer
 * makes the count odd, updates the slot, makes it even again; a reader
 * copies the slot between two reads of the count and retries when the
 * count was odd or moved. Writers never wait for readers.
 *
 * A segment left behind by a supervisor that was killed is recognised by
 * its header: when the supervisor pid recorded there no longer runs (or
 * now belongs to a process that started after the segment was created),
 * the segment is unlinked and created afresh.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bsd/string.h>
#include <hiredis/hiredis.h>

#include "shared/redis_conn.h"

#include "shared/stats.h"

static const char *const state_names[WORKER_STATE_COUNT] = {
    [WORKER_EMPTY] = "empty",     [WORKER_STARTING] = "starting",
    [WORKER_RUNNING] = "running", [WORKER_DRAINING] = "draining",
    [WORKER_BACKOFF] = "backoff", [WORKER_DEAD] = "dead",
};

/* The name of a state ("running"); "unknown" for a value out of range.
 * Can't fail. */
const char *
worker_state_name(enum worker_state st)
{
    if ((unsigned)st >= WORKER_STATE_COUNT)
        return "unknown";
    return state_names[st];
}

static const char *const firehose_state_names[FIREHOSE_STATE_COUNT] = {
    "off", "connecting", "connected", "paused"};

const char *
firehose_state_name(enum firehose_state st)
{
    if ((unsigned)st >= FIREHOSE_STATE_COUNT)
        return "unknown";
    return firehose_state_names[st];
}

int64_t
stats_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * From /proc/pid/stat: the process state letter into *state and its start
 * time in ms since the epoch into *start_ms. Returns 0, or -1 when it
 * can't be read (no /proc, process gone).
 */
static int
process_stat(pid_t pid, char *state, int64_t *start_ms)
{
    char path[64], buf[1024];
    FILE *f;
    size_t n;
    char *p;
    unsigned long long start_ticks;
    struct timespec now_rt, now_boot;
    long hz;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may contain spaces and parentheses: skip to the
     * last ')'; then field 3 is the state, field 22 the start time. */
    if ((p = strrchr(buf, ')')) == NULL || p[1] != ' ')
        return -1;
    *state = p[2];
    p++;
    for (int field = 3; field < 22; field++) {
        p = strchr(p + 1, ' ');
        if (p == NULL)
            return -1;
    }
    if (sscanf(p, " %llu", &start_ticks) != 1)
        return -1;
    if ((hz = sysconf(_SC_CLK_TCK)) <= 0)
        return -1;
    clock_gettime(CLOCK_REALTIME, &now_rt);
    clock_gettime(CLOCK_BOOTTIME, &now_boot);
    int64_t boot_ms = ((int64_t)now_rt.tv_sec - now_boot.tv_sec) * 1000 +
                      (now_rt.tv_nsec - now_boot.tv_nsec) / 1000000;
    *start_ms =
        boot_ms + (int64_t)(start_ticks * 1000 / (unsigned long long)hz);
    return 0;
}

/*
 * 1 when the supervisor that wrote a header with (pid, started_ms) still
 * runs: the pid exists, is no zombie, and its process started no later
 * than the segment was created (a reused pid belongs to a younger
 * process). 0 for our own pid. Can't fail.
 */
static int
supervisor_alive(pid_t pid, int64_t started_ms)
{
    int64_t pstart;
    char state;

    if (pid <= 0 || pid == getpid())
        return 0;
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return 0;
    if (process_stat(pid, &state, &pstart) < 0)
        return 1; /* no /proc: trust kill() */
    /* A killed supervisor its parent has not reaped yet. */
    if (state == 'Z' || state == 'X')
        return 0;
    /* 2 s of slack for clock granularity and a slow start. */
    if (started_ms > 0 && pstart > started_ms + 2000)
        return 0;
    return 1;
}

int
stats_supervisor_alive(const struct stats_header *hdr)
{
    return supervisor_alive((pid_t)hdr->supervisor_pid, hdr->started_ms);
}

/*
 * Look at an existing object `name`: returns 1 when it belongs to a live
 * supervisor, 0 when it is stale (or unreadable garbage), -1 with errno
 * set when it can't be opened.
 */
static int
segment_in_use(const char *name)
{
    struct stats_header h;
    struct stat st;
    void *p;
    int fd, live = 0;

    if ((fd = shm_open(name, O_RDONLY, 0)) < 0)
        return errno == ENOENT ? 0 : -1;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size >= sizeof(h)) {
        p = mmap(NULL, sizeof(h), PROT_READ, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) {
            memcpy(&h, p, sizeof(h));
            munmap(p, sizeof(h));
            if (h.magic == STATS_MAGIC)
                live = supervisor_alive(h.supervisor_pid, h.started_ms);
        }
    }
    close(fd);
    return live;
}

/*
 * Create the segment (see stats.h). A stale segment of a dead supervisor
 * is unlinked and replaced; a segment of a live supervisor makes this fail
 * with errno EADDRINUSE. The caller unmaps with stats_close() or
 * stats_remove().
 */
struct stats_segment *
stats_create(const char *name, const char *stream, const char *group,
             const char *redis_url)
{
    struct stats_segment *seg;
    int fd, saved, tries = 0;

again:
    fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0640);
    if (fd < 0 && errno == EEXIST && tries++ < 3) {
        int live = segment_in_use(name);
        if (live < 0)
            return NULL;
        if (live) {
            errno = EADDRINUSE;
            return NULL;
        }
        if (shm_unlink(name) < 0 && errno != ENOENT)
            return NULL;
        goto again;
    }
    if (fd < 0)
        return NULL;
    /* Readers are the owner and its group (operators put in the service
     * user's group run sluicectl), not every local user: the last-error
     * texts can quote the data PostgreSQL refused. The umask may have
     * narrowed the mode further. */
    if (fchmod(fd, 0640) < 0 || ftruncate(fd, sizeof(*seg)) < 0)
        goto fail;
    seg = mmap(NULL, sizeof(*seg), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (seg == MAP_FAILED)
        goto fail;
    close(fd);

    memset(seg, 0, sizeof(*seg));
    seg->hdr.version = STATS_LAYOUT_VERSION;
    seg->hdr.size = sizeof(*seg);
    seg->hdr.supervisor_pid = (int32_t)getpid();
    seg->hdr.nslots = STATS_MAX_SLOTS;
    seg->hdr.started_ms = stats_now_ms();
    strlcpy(seg->hdr.stream, stream ? stream : "", sizeof(seg->hdr.stream));
    strlcpy(seg->hdr.group, group ? group : "", sizeof(seg->hdr.group));
    strlcpy(seg->hdr.redis_url, redis_url ? redis_url : "",
            sizeof(seg->hdr.redis_url));
    /* The magic goes last: a reader that sees it sees a full header. */
    atomic_thread_fence(memory_order_release);
    seg->hdr.magic = STATS_MAGIC;
    return seg;

fail:
    saved = errno;
    close(fd);
    shm_unlink(name);
    errno = saved;
    return NULL;
}

/*
 * Map an existing segment read-only and check its header. On STATS_OK *out
 * is the mapping (release it with stats_close()); on STATS_SYS_ERROR errno
 * tells why.
 */
enum stats_open_result
stats_open(const char *name, const struct stats_segment **out)
{
    const struct stats_header *h;
    struct stat st;
    void *p;
    int fd, saved;

    *out = NULL;
    if ((fd = shm_open(name, O_RDONLY, 0)) < 0) {
        if (errno == ENOENT)
            return STATS_NOT_FOUND;
        if (errno == EACCES || errno == EPERM)
            return STATS_NO_ACCESS;
        return STATS_SYS_ERROR;
    }
    if (fstat(fd, &st) < 0) {
        saved = errno;
        close(fd);
        errno = saved;
        return STATS_SYS_ERROR;
    }
    if ((size_t)st.st_size != sizeof(struct stats_segment)) {
        close(fd);
        return STATS_BAD_LAYOUT;
    }
    p = mmap(NULL, sizeof(struct stats_segment), PROT_READ, MAP_SHARED, fd, 0);
    saved = errno;
    close(fd);
    if (p == MAP_FAILED) {
        errno = saved;
        return errno == EACCES ? STATS_NO_ACCESS : STATS_SYS_ERROR;
    }
    h = p;
    if (h->magic != STATS_MAGIC || h->version != STATS_LAYOUT_VERSION ||
        h->size != sizeof(struct stats_segment) ||
        h->nslots != STATS_MAX_SLOTS) {
        munmap(p, sizeof(struct stats_segment));
        return STATS_BAD_LAYOUT;
    }
    atomic_thread_fence(memory_order_acquire);
    *out = p;
    return STATS_OK;
}

/* Layout version a segment `name` carries, without judging it; 0 when it
 * can't be read. For sluicectl's "layout version mismatch" message. */
uint32_t
stats_peek_version(const char *name)
{
    struct stats_header h;
    struct stat st;
    void *p;
    int fd;
    uint32_t v = 0;

    if ((fd = shm_open(name, O_RDONLY, 0)) < 0)
        return 0;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size >= sizeof(h)) {
        p = mmap(NULL, sizeof(h), PROT_READ, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) {
            memcpy(&h, p, sizeof(h));
            munmap(p, sizeof(h));
            if (h.magic == STATS_MAGIC)
                v = h.version;
        }
    }
    close(fd);
    return v;
}

/* Give the object `name` to uid:gid (after a privilege drop the supervisor
 * must still be able to unlink it). Returns 0 or -1 with errno set. */
int
stats_chown(const char *name, uid_t uid, gid_t gid)
{
    int fd, r, saved;

    if ((fd = shm_open(name, O_RDWR, 0)) < 0)
        return -1;
    r = fchown(fd, uid, gid);
    saved = errno;
    close(fd);
    errno = saved;
    return r;
}

void
stats_close(const struct stats_segment *seg)
{
    if (seg != NULL)
        munmap((void *)seg, sizeof(*seg));
}

/* Unmap and unlink (the supervisor's clean exit). Errors are ignored: the
 * next supervisor takes a leftover segment over. */
void
stats_remove(struct stats_segment *seg, const char *name)
{
    stats_close(seg);
    if (name != NULL)
        shm_unlink(name);
}

/* After its writer died: a change count left odd by a write that never
 * ended is made even, so the next writer and the readers work. Only for
 * the supervisor, after reaping the slot's worker. Can't fail. */
void
stats_slot_recover(struct stats_slot *slot)
{
    uint32_t c = atomic_load_explicit(&slot->changecount, memory_order_relaxed);

    if (c & 1)
        atomic_store_explicit(&slot->changecount, c + 1, memory_order_release);
}

/* The seqlock of a slot or a pipeline's entry: cc is its change count. */
static void
seq_write_begin(_Atomic uint32_t *cc)
{
    atomic_fetch_add_explicit(cc, 1, memory_order_relaxed);
    /* The odd count must be visible before any field changes. */
    atomic_thread_fence(memory_order_release);
}

static void
seq_write_end(_Atomic uint32_t *cc)
{
    /* Every field written must be visible before the even count. */
    atomic_fetch_add_explicit(cc, 1, memory_order_release);
}

/*
 * Copy size bytes at src (whose change count is cc) into out consistently:
 * retry while a write is in progress or happened during the copy. Returns
 * the even count the copy was taken at. Can't fail. A writer that died
 * mid-update leaves an odd count that never moves again: when the same odd
 * count has been seen for STUCK_WRITER_MS, the copy is returned as it is
 * rather than spinning forever (a live writer moves the count far sooner).
 */
#define STUCK_WRITER_MS 500

static uint32_t
seq_read(const _Atomic uint32_t *cc, const void *src, void *out, size_t size)
{
    uint32_t before, after, stuck_count = 0;
    int64_t stuck_since = 0;

    for (;;) {
        before = atomic_load_explicit(cc, memory_order_acquire);
        if ((before & 1) == 0) {
            memcpy(out, src, size);
            atomic_thread_fence(memory_order_acquire);
            after = atomic_load_explicit(cc, memory_order_relaxed);
            if (before == after)
                break;
        } else if (stuck_since == 0 || before != stuck_count) {
            stuck_count = before;
            stuck_since = stats_now_ms();
        } else if (stats_now_ms() - stuck_since > STUCK_WRITER_MS) {
            memcpy(out, src, size);
            break;
        }
        sched_yield();
    }
    return before & ~1u;
}

void
stats_slot_write_begin(struct stats_slot *slot)
{
    seq_write_begin(&slot->changecount);
}

void
stats_slot_write_end(struct stats_slot *slot)
{
    seq_write_end(&slot->changecount);
}

void
stats_slot_read(const struct stats_slot *slot, struct stats_slot *out)
{
    uint32_t at =
        seq_read(&slot->changecount, (const void *)slot, out, sizeof(*out));

    atomic_store_explicit(&out->changecount, at, memory_order_relaxed);
}

void
stats_pipeline_write_begin(struct stats_pipeline *p)
{
    seq_write_begin(&p->changecount);
}

void
stats_pipeline_write_end(struct stats_pipeline *p)
{
    seq_write_end(&p->changecount);
}

void
stats_pipeline_read(const struct stats_pipeline *p, struct stats_pipeline *out)
{
    uint32_t at = seq_read(&p->changecount, (const void *)p, out, sizeof(*out));

    atomic_store_explicit(&out->changecount, at, memory_order_relaxed);
}

/* Bucket of a latency (see STATS_HIST_BUCKETS): below 4 ms the latency
 * itself; else, with 2^k <= latency < 2^(k+1), the sub-bucket of width
 * 2^(k-2) it falls in; the last bucket for anything from 2^16 ms. */
static unsigned
hist_bucket(uint64_t latency_ms)
{
    unsigned k;

    if (latency_ms < STATS_HIST_SUB)
        return (unsigned)latency_ms;
    k = 63u - (unsigned)__builtin_clzll(latency_ms);
    if (k >= STATS_HIST_MAX_OCT)
        return STATS_HIST_BUCKETS - 1;
    return STATS_HIST_SUB + (k - 2) * STATS_HIST_SUB +
           (unsigned)((latency_ms - (UINT64_C(1) << k)) >> (k - 2));
}

void
stats_hist_add(struct stats_slot *slot, uint64_t latency_ms)
{
    slot->latency_hist[hist_bucket(latency_ms)]++;
    slot->latency_sum_ms += latency_ms;
}

uint64_t
stats_hist_bucket_upper_ms(unsigned i)
{
    unsigned k, j;

    if (i >= STATS_HIST_BUCKETS - 1)
        return UINT64_C(1) << STATS_HIST_MAX_OCT;
    if (i < STATS_HIST_SUB)
        return i + 1;
    k = 2 + (i - STATS_HIST_SUB) / STATS_HIST_SUB;
    j = (i - STATS_HIST_SUB) % STATS_HIST_SUB;
    return (UINT64_C(1) << k) + (uint64_t)(j + 1) * (UINT64_C(1) << (k - 2));
}

uint64_t
stats_hist_quantile(const uint64_t *hist, double q)
{
    uint64_t total = 0, want, seen = 0;

    for (unsigned i = 0; i < STATS_HIST_BUCKETS; i++)
        total += hist[i];
    if (total == 0)
        return 0;
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    want = (uint64_t)ceil(q * (double)total);
    if (want == 0)
        want = 1;
    for (unsigned i = 0; i < STATS_HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= want)
            return stats_hist_bucket_upper_ms(i);
    }
    return stats_hist_bucket_upper_ms(STATS_HIST_BUCKETS - 1);
}

/*
 * The group's figures from Redis, for sluicectl and (on a worker's own
 * connection, stats_group_query) for the workers, which publish them in
 * their slots for the supervisor: one short-lived connection
 * (shared/redis_conn.h), XLEN and XINFO GROUPS. Both programs need it and only
 * the library is shared between them, so it lives here beside the segment.
 */

static long long
reply_int(const redisReply *r)
{
    if (r == NULL)
        return -1;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING)
        return strtoll(r->str, NULL, 10);
    return -1;
}

/*
 * Fill *out with the stream's length and the group's pending count, lag
 * and consumers. Returns 0, or -1 with out->error set (Redis down, no
 * such stream or group); fields not known are -1. Never blocks longer
 * than about 3 * timeout_ms.
 */
int
stats_group_info(const char *redis_url, const char *stream, const char *group,
                 long timeout_ms, struct stats_group_info *out)
{
    struct redis_target target;
    struct redis_conn rc;
    int r;

    memset(out, 0, sizeof(*out));
    out->length = out->pending = out->lag = out->consumers = -1;
    if (redis_url_parse(redis_url, &target, out->error, sizeof(out->error)) < 0)
        return -1;
    redis_conn_init(&rc, &target, timeout_ms, timeout_ms);
    if (redis_conn_connect(&rc) < 0) {
        strlcpy(out->error, rc.err, sizeof(out->error));
        return -1;
    }
    r = stats_group_query(rc.ctx, stream, group, out);
    redis_conn_close(&rc);
    return r;
}

int
stats_group_query(struct redisContext *c, const char *stream, const char *group,
                  struct stats_group_info *out)
{
    redisReply *r;
    int found = 0;

    memset(out, 0, sizeof(*out));
    out->length = out->pending = out->lag = out->consumers = -1;
    r = redisCommand(c, "XLEN %s", stream);
    if (r == NULL) {
        snprintf(out->error, sizeof(out->error), "%s", c->errstr);
        return -1;
    }
    out->length = reply_int(r);
    freeReplyObject(r);

    r = redisCommand(c, "XINFO GROUPS %s", stream);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        snprintf(out->error, sizeof(out->error), "XINFO GROUPS: %s",
                 r == NULL                      ? c->errstr
                 : r->type == REDIS_REPLY_ERROR ? r->str
                                                : "unexpected reply");
        freeReplyObject(r);
        return -1;
    }
    for (size_t i = 0; i < r->elements && !found; i++) {
        const redisReply *g = r->element[i];
        const redisReply *name = NULL;

        if (g->type != REDIS_REPLY_ARRAY)
            continue;
        for (size_t k = 0; k + 1 < g->elements; k += 2)
            if (g->element[k]->type == REDIS_REPLY_STRING &&
                strcmp(g->element[k]->str, "name") == 0)
                name = g->element[k + 1];
        if (name == NULL || name->type != REDIS_REPLY_STRING ||
            strcmp(name->str, group) != 0)
            continue;
        found = 1;
        for (size_t k = 0; k + 1 < g->elements; k += 2) {
            const char *key = g->element[k]->str;
            const redisReply *v = g->element[k + 1];

            if (g->element[k]->type != REDIS_REPLY_STRING)
                continue;
            if (strcmp(key, "pending") == 0)
                out->pending = reply_int(v);
            else if (strcmp(key, "consumers") == 0)
                out->consumers = reply_int(v);
            else if (strcmp(key, "lag") == 0)
                out->lag = reply_int(v); /* nil (unknown) stays -1 */
        }
    }
    freeReplyObject(r);
    if (!found) {
        snprintf(out->error, sizeof(out->error), "no group %s on %s", group,
                 stream);
        return -1;
    }
    return 0;
}
