/*
 * stream.h: the Redis side of a worker: the consumer group's lifecycle,
 * reading, reclaiming, delivery counts, dead letters and acks, each one
 * command (or one pipeline) per call, never one round trip per entry.
 *
 * Every call returns a stream_status. STREAM_DOWN means the connection
 * failed and was dropped (hiredis contexts are never reused after an
 * error): the caller reconnects with backoff. STREAM_NOGROUP means the
 * group (or the whole stream) is gone: the caller recreates it with
 * stream_group_create() and goes on. STREAM_ERROR is any other error
 * reply (e.g. WRONGTYPE): logged, retried with backoff.
 */
#ifndef SLUICE_STREAM_H
#define SLUICE_STREAM_H

#include <stddef.h>

#include "shared/redis_conn.h"
#include "worker/batch.h"

enum stream_status {
    STREAM_OK = 0,
    STREAM_DOWN,
    STREAM_NOGROUP,
    STREAM_ERROR,
};

struct stream {
    struct redis_conn *rc;
    const char *key;
    const char *group;
    const char *consumer;
    const char *start_id;             /* where a new group starts */
    const char *dead_key;             /* the dead-letter stream */
    char claim_cursor[STREAM_ID_MAX]; /* XAUTOCLAIM cursor, "0-0" = start */
    char err[512];                    /* the last error, for logs */
    /* argv buffers reused by stream_ack() */
    const char **argv;
    size_t *argvlen;
    size_t argv_cap;
};

/* Set up s (the strings must outlive it). Can't fail. */
void stream_init(struct stream *s, struct redis_conn *rc, const char *key,
                 const char *group, const char *consumer, const char *start_id,
                 const char *dead_key);
void stream_free(struct stream *s);

/* XGROUP CREATE key group start_id MKSTREAM. *created is 1 when the group
 * was created, 0 when it existed (BUSYGROUP). */
enum stream_status stream_group_create(struct stream *s, int *created);

/*
 * XINFO CONSUMERS: how long ago the consumer last read or claimed (*idle_ms,
 * -1 when the group has no consumer of that name, or no group) and what it
 * holds pending (*pending).
 */
enum stream_status stream_consumer_seen(struct stream *s, long long *idle_ms,
                                        long long *pending);

/*
 * Entries the stream lost before the group read them (trimmed by MAXLEN
 * while the group was behind): *lost is how many this call found first
 * (each gap is counted by one caller only, in a small hash beside the
 * stream, <stream>:trimmed-unread), 0 when none, -1 when some were lost
 * but Redis can't tell how many.
 */
enum stream_status stream_trimmed_unread(struct stream *s, long long *lost);

/*
 * Remove the consumer from the group (XGROUP DELCONSUMER) if it has
 * nothing pending, in one script, so that no entry it holds is dropped.
 * *removed is 1 when it was removed (or was not there), 0 when it holds
 * entries.
 */
enum stream_status stream_consumer_remove_idle(struct stream *s, int *removed);

/*
 * XREADGROUP GROUP group consumer COUNT count [BLOCK block_ms] STREAMS key
 * after. after is ">" for new entries or an ID for this consumer's own
 * pending entries after that ID. block_ms < 0: no BLOCK. Appends to b;
 * *nread = entries added (pending entries that were trimmed away are added
 * as gone IDs and counted in *ngone).
 */
enum stream_status stream_read(struct stream *s, struct batch *b,
                               const char *after, int count, long block_ms,
                               size_t *nread, size_t *ngone);

/*
 * XAUTOCLAIM key group consumer min_idle cursor COUNT count, walking
 * s->claim_cursor (back to "0-0" after a full pass: *pass_done = 1).
 * Claimed entries are appended to b; deleted ones become gone IDs.
 */
enum stream_status stream_autoclaim(struct stream *s, struct batch *b,
                                    long min_idle_ms, int count,
                                    size_t *nclaimed, size_t *ngone,
                                    int *pass_done);

/*
 * How often this consumer's first pending entry after the ID after ("0":
 * from the start) has been delivered (XPENDING, which counts nothing);
 * *deliveries = 0 when it has none.
 */
enum stream_status stream_pending_next(struct stream *s, const char *after,
                                       unsigned *deliveries);

/* Fill entries[from..b->n).deliveries from XPENDING (one pipelined
 * XPENDING per entry: used only for claimed and re-read pending
 * entries). */
enum stream_status stream_fetch_deliveries(struct stream *s, struct batch *b,
                                           size_t from);

/*
 * XADD the dead entries of b to the dead-letter stream (pipelined). Fields
 * of a dead letter, in this order: id, reason, deliveries, consumer, time
 * (UTC, ISO 8601), then every original field under its own name prefixed
 * with "f:" (binary-safe, order kept). An entry whose XADD failed stays
 * unacked (its fate becomes ENTRY_READ); *nadded counts the others.
 */
enum stream_status stream_dead_letter(struct stream *s, struct batch *b,
                                      size_t *nadded);

/* XACK key group of the n IDs (one command). *nacked = Redis's count. */
enum stream_status stream_ack(struct stream *s, const char *const *ids,
                              size_t n, long long *nacked);

#endif
