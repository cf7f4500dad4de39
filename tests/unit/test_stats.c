/*
 * test_stats.c: the shared-memory stats segment: header and layout checks,
 * refusal of a live supervisor's segment and takeover of a dead one's,
 * consistent slot copies while another process writes, the latency
 * histogram and its quantiles.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shared/stats.h"
#include "tests/unit/tap.h"

static char name[64], other[64];

/* Create an object `n` of `size` bytes holding hdr (if not NULL), with
 * mode `mode`. */
static void
make_object(const char *n, size_t size, const struct stats_header *hdr,
            mode_t mode)
{
    int fd;
    void *p;

    shm_unlink(n);
    fd = shm_open(n, O_RDWR | O_CREAT | O_EXCL, mode);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
        perror("make_object");
        exit(2);
    }
    fchmod(fd, mode);
    if (hdr != NULL) {
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        memcpy(p, hdr, sizeof(*hdr));
        munmap(p, size);
    }
    close(fd);
}

static void
test_create_open(void)
{
    struct stats_segment *seg;
    const struct stats_segment *ro;

    seg = stats_create(name, "firehose:events", "firehose-processors",
                       "redis://:***@127.0.0.1:6379");
    ok(seg != NULL, "stats_create makes a segment");
    if (seg == NULL)
        exit(1);
    is_int(seg->hdr.magic, STATS_MAGIC, "header magic");
    is_int(seg->hdr.version, STATS_LAYOUT_VERSION, "header layout version");
    is_int(seg->hdr.size, sizeof(struct stats_segment), "header size");
    is_int(seg->hdr.supervisor_pid, getpid(), "header supervisor pid");
    is_int(seg->hdr.nslots, STATS_MAX_SLOTS, "header slot count");
    ok(seg->hdr.started_ms > 0 && seg->hdr.started_ms <= stats_now_ms(),
       "header start time is now or earlier");
    is_str(seg->hdr.stream, "firehose:events", "header stream");
    is_str(seg->hdr.group, "firehose-processors", "header group");

    seg->slots[3].c.events_applied = 42;
    is_int(stats_open(name, &ro), STATS_OK, "stats_open of it: OK");
    if (ro != NULL) {
        is_int(ro->hdr.supervisor_pid, getpid(), "reader sees the header");
        is_int(ro->slots[3].c.events_applied, 42,
               "reader sees the writer's slot");
        stats_close(ro);
    }
    stats_close(seg);
}

static void
test_layout_checks(void)
{
    const struct stats_segment *ro;
    struct stats_header h;

    is_int(stats_open("/sluice-test-does-not-exist", &ro), STATS_NOT_FOUND,
           "a missing segment: STATS_NOT_FOUND");

    make_object(other, 4096, NULL, 0644);
    is_int(stats_open(other, &ro), STATS_BAD_LAYOUT,
           "an object of the wrong size: STATS_BAD_LAYOUT");

    memset(&h, 0, sizeof(h));
    h.magic = STATS_MAGIC;
    h.version = 999;
    h.size = sizeof(struct stats_segment);
    h.nslots = STATS_MAX_SLOTS;
    make_object(other, sizeof(struct stats_segment), &h, 0644);
    is_int(stats_open(other, &ro), STATS_BAD_LAYOUT,
           "layout version 999: STATS_BAD_LAYOUT");
    is_int(stats_peek_version(other), 999,
           "stats_peek_version reports the segment's version");

    h.version = STATS_LAYOUT_VERSION;
    h.magic = 0x12345678;
    make_object(other, sizeof(struct stats_segment), &h, 0644);
    is_int(stats_open(other, &ro), STATS_BAD_LAYOUT,
           "wrong magic: STATS_BAD_LAYOUT");
    is_int(stats_peek_version(other), 0, "wrong magic: no version reported");
    shm_unlink(other);
}

/* A segment only its owner may read: STATS_NO_ACCESS for anybody else.
 * As root the reader is a child that became nobody. */
static void
test_no_access(void)
{
    const struct stats_segment *ro;
    struct stats_header h;
    int status = -1;
    pid_t pid;

    memset(&h, 0, sizeof(h));
    h.magic = STATS_MAGIC;
    h.version = STATS_LAYOUT_VERSION;
    h.size = sizeof(struct stats_segment);
    h.nslots = STATS_MAX_SLOTS;
    make_object(other, sizeof(struct stats_segment), &h,
                geteuid() == 0 ? 0600 : 0000);
    if ((pid = fork()) == 0) {
        if (geteuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0))
            _exit(99);
        _exit(stats_open(other, &ro));
    }
    waitpid(pid, &status, 0);
    ok(WIFEXITED(status) && WEXITSTATUS(status) == STATS_NO_ACCESS,
       "a segment the reader may not read: STATS_NO_ACCESS (got %d)",
       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    shm_unlink(other);
}

static void
test_takeover(void)
{
    struct stats_segment *seg;
    struct stats_header h;
    int pfd[2], status;
    pid_t pid;
    char c;

    /* A live supervisor (a child that created the segment) keeps it. */
    shm_unlink(name);
    if (pipe(pfd) < 0)
        exit(2);
    if ((pid = fork()) == 0) {
        struct stats_segment *s = stats_create(name, "s", "g", "");
        close(pfd[0]);
        if (write(pfd[1], s ? "y" : "n", 1) != 1)
            _exit(2);
        pause();
        _exit(0);
    }
    close(pfd[1]);
    ok(read(pfd[0], &c, 1) == 1 && c == 'y',
       "another process creates the segment");
    close(pfd[0]);
    errno = 0;
    seg = stats_create(name, "s", "g", "");
    ok(seg == NULL && errno == EADDRINUSE,
       "the segment of a live supervisor is refused with EADDRINUSE");

    /* Once it is dead, the segment is stale and taken over. */
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    seg = stats_create(name, "s2", "g2", "");
    ok(seg != NULL, "the segment of a killed supervisor is taken over");
    if (seg != NULL) {
        is_int(seg->hdr.supervisor_pid, getpid(),
               "the new header names the new supervisor");
        is_str(seg->hdr.stream, "s2", "and is filled afresh");
        stats_close(seg);
    }

    /* A pid that lives but started after the segment was created (a
     * reused pid) does not hold the segment. */
    memset(&h, 0, sizeof(h));
    h.magic = STATS_MAGIC;
    h.version = STATS_LAYOUT_VERSION;
    h.size = sizeof(struct stats_segment);
    h.nslots = STATS_MAX_SLOTS;
    h.supervisor_pid = (int32_t)getppid();
    h.started_ms = 1000; /* 1970: every live process is younger */
    make_object(name, sizeof(struct stats_segment), &h, 0644);
    seg = stats_create(name, "s3", "g3", "");
    ok(seg != NULL, "a reused pid (process younger than the segment) does "
                    "not hold the segment");
    stats_close(seg);

    /* The same live pid with a plausible start time holds it. */
    h.started_ms = stats_now_ms();
    make_object(name, sizeof(struct stats_segment), &h, 0644);
    errno = 0;
    seg = stats_create(name, "s4", "g4", "");
    ok(seg == NULL && errno == EADDRINUSE,
       "a live pid older than the segment holds it");
    stats_close(seg);
    shm_unlink(name);
}

/*
 * A forked writer rewrites one slot as fast as it can, every field from
 * one number; the reader checks that every copy is made of one number.
 * The reader reads until it has seen the writer move SEQLOCK_VALUES times
 * (not for a fixed time: on a loaded machine a time slice may hold few
 * writes), or until SEQLOCK_MAX_MS, which only a writer that never runs
 * reaches.
 */
#define SEQLOCK_VALUES 200
#define SEQLOCK_MAX_MS 60000
static void
test_seqlock(void)
{
    struct stats_segment *seg;
    struct stats_slot *slot, copy;
    long torn = 0, reads = 0, distinct = 0;
    uint64_t last = UINT64_MAX;
    pid_t pid;
    int status;

    seg = stats_create(name, "s", "g", "");
    if (seg == NULL)
        exit(2);
    slot = &seg->slots[5];
    if ((pid = fork()) == 0) {
        for (uint64_t v = 1;; v++) {
            stats_slot_write_begin(slot);
            slot->pid = (int32_t)v;
            slot->heartbeat_ms = (int64_t)v;
            memset(slot->name, 'a' + (int)(v % 26), sizeof(slot->name) - 1);
            slot->c.entries_read = slot->c.events_applied = slot->c.acks = v;
            for (int i = 0; i < STATS_HIST_BUCKETS; i++)
                slot->latency_hist[i] = v;
            memset(slot->last_error, 'A' + (int)(v % 26),
                   sizeof(slot->last_error) - 1);
            stats_slot_write_end(slot);
        }
    }
    int64_t until = stats_now_ms() + SEQLOCK_MAX_MS;
    while (distinct < SEQLOCK_VALUES && stats_now_ms() < until) {
        stats_slot_read(slot, &copy);
        uint64_t v = copy.c.entries_read;
        int bad = (uint64_t)copy.pid != (v & 0xffffffffu) ||
                  (uint64_t)copy.heartbeat_ms != v ||
                  copy.c.events_applied != v || copy.c.acks != v ||
                  (copy.changecount & 1) != 0;
        for (int i = 0; i < STATS_HIST_BUCKETS && !bad; i++)
            bad = copy.latency_hist[i] != v;
        if (v != 0)
            for (size_t i = 0; i + 1 < sizeof(copy.name) && !bad; i++)
                bad = copy.name[i] != 'a' + (int)(v % 26);
        if (v != 0)
            for (size_t i = 0; i + 1 < sizeof(copy.last_error) && !bad; i++)
                bad = copy.last_error[i] != 'A' + (int)(v % 26);
        torn += bad;
        if (v != last)
            distinct++;
        last = v;
        reads++;
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    is_int(torn, 0, "%ld reads while a process writes: no torn copy", reads);
    ok(distinct >= SEQLOCK_VALUES,
       "the reader saw the writer progress (%ld values)", distinct);

    /* A writer that died mid-update: the reader returns the slot anyway. */
    stats_slot_write_begin(slot);
    slot->c.dead_lettered = 777;
    stats_slot_read(slot, &copy);
    is_int(copy.c.dead_lettered, 777,
           "a slot stuck mid-update (dead writer) is still read");

    /* The writer was killed, possibly mid-update: recover the count. */
    stats_slot_recover(slot);
    ok((atomic_load(&slot->changecount) & 1) == 0,
       "stats_slot_recover leaves an even change count");
    stats_remove(seg, name);
}

static void
test_histogram(void)
{
    static struct stats_slot slot;
    uint64_t h[STATS_HIST_BUCKETS];
    int bad = 0;

    memset(&slot, 0, sizeof(slot));
    is_int(stats_hist_quantile(slot.latency_hist, 0.5), 0,
           "quantile of an empty histogram is 0");
    stats_hist_add(&slot, 0);
    is_int(slot.latency_hist[0], 1, "0 ms falls in bucket 0 (< 1 ms)");
    stats_hist_add(&slot, 3);
    is_int(slot.latency_hist[3], 1, "3 ms falls in bucket 3 (< 4 ms)");
    stats_hist_add(&slot, 4);
    is_int(slot.latency_hist[4], 1, "4 ms falls in bucket 4 (< 5 ms)");
    stats_hist_add(&slot, 1023);
    is_int(slot.latency_hist[35], 1, "1023 ms falls in bucket 35 (< 1024)");
    stats_hist_add(&slot, 1024);
    is_int(slot.latency_hist[36], 1, "1024 ms falls in bucket 36 (< 1280)");
    stats_hist_add(&slot, 65535);
    is_int(slot.latency_hist[STATS_HIST_BUCKETS - 2], 1,
           "65535 ms falls in the last finite bucket");
    stats_hist_add(&slot, 65536);
    stats_hist_add(&slot, 10000000);
    is_int(slot.latency_hist[STATS_HIST_BUCKETS - 1], 2,
           "65536 ms and slower fall in the overflow bucket");
    is_int(slot.latency_sum_ms,
           0 + 3 + 4 + 1023 + 1024 + 65535 + 65536 + 10000000,
           "latency_sum_ms adds the latencies");

    /* every latency reads as its bucket's bound: above it, by at most
     * 25 % from 4 ms on (1 ms below that), and the bounds rise */
    for (uint64_t v = 0; v < 65536 && !bad; v++) {
        uint64_t up;
        memset(slot.latency_hist, 0, sizeof(slot.latency_hist));
        stats_hist_add(&slot, v);
        up = stats_hist_quantile(slot.latency_hist, 1.0);
        bad = up <= v || (v >= 4 ? 4 * up > 5 * v : up != v + 1);
        if (bad)
            diag("latency %llu ms reads %llu ms", (unsigned long long)v,
                 (unsigned long long)up);
    }
    ok(!bad, "0..65535 ms: each reads within 25 %% above (1 ms below 4 ms)");
    bad = 0;
    for (unsigned i = 1; i < STATS_HIST_BUCKETS - 1; i++)
        bad |=
            stats_hist_bucket_upper_ms(i) <= stats_hist_bucket_upper_ms(i - 1);
    ok(!bad, "bucket bounds rise");
    is_int(stats_hist_bucket_upper_ms(0), 1, "bucket 0 ends at 1 ms");
    is_int(stats_hist_bucket_upper_ms(22), 112, "bucket 22 is 96..111 ms");
    is_int(stats_hist_bucket_upper_ms(STATS_HIST_BUCKETS - 2), 65536,
           "the last finite bucket ends at 65.5 s");

    memset(h, 0, sizeof(h));
    h[3] = 90; /* 3 ms: upper bound 4 */
    h[22] = 9; /* 96..111 ms: upper bound 112 */
    h[44] = 1; /* 4096..5119 ms: upper bound 5120 */
    is_int(stats_hist_quantile(h, 0.5), 4, "p50 of 90x3ms + 10 slow = 4 ms");
    is_int(stats_hist_quantile(h, 0.9), 4, "p90 = 4 ms (90 of 100)");
    is_int(stats_hist_quantile(h, 0.91), 112, "p91 = 112 ms");
    is_int(stats_hist_quantile(h, 0.99), 112, "p99 = 112 ms");
    is_int(stats_hist_quantile(h, 1.0), 5120, "p100 = 5120 ms");
    is_int(stats_hist_quantile(h, 0.0), 4, "p0 = the first non-empty bucket");
}

static void
test_state_names(void)
{
    is_str(worker_state_name(WORKER_RUNNING), "running", "state name");
    is_str(worker_state_name(WORKER_BACKOFF), "backoff", "state name");
    is_str(worker_state_name((enum worker_state)99), "unknown",
           "out-of-range state");
}

int
main(void)
{
    const struct stats_segment *ro;

    snprintf(name, sizeof(name), "/sluice-test-stats-%d", (int)getpid());
    snprintf(other, sizeof(other), "/sluice-test-other-%d", (int)getpid());
    test_create_open();
    test_layout_checks();
    test_no_access();
    test_takeover();
    test_seqlock();
    test_histogram();
    test_state_names();

    struct stats_segment *seg = stats_create(name, "s", "g", "");
    stats_remove(seg, name);
    is_int(stats_open(name, &ro), STATS_NOT_FOUND,
           "stats_remove unlinks the segment");
    shm_unlink(name);
    shm_unlink(other);
    return done_testing();
}
