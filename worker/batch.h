/*
 * batch.h: the entries a worker holds between reading them and acking
 * them, and what became of each.
 *
 * A batch owns the Redis replies its entries point into (no copy of the
 * field data is made) and keeps every array it grows across batches, so a
 * steady stream of batches allocates nothing of its own after warm-up
 * (hiredis still allocates the reply objects).
 *
 * Every entry ends in one fate: COMMITTED (applied in a transaction that
 * committed) or DEAD (refused by the sink, by PostgreSQL, or delivered too
 * often; goes to the dead-letter stream). Only then may it be acked.
 * "Gone" IDs are pending entries the stream no longer holds (trimmed or
 * deleted): nothing to apply, they are only acked.
 */
#ifndef SLUICE_BATCH_H
#define SLUICE_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "worker/sink.h"

#define STREAM_ID_MAX 48

enum entry_fate {
    ENTRY_READ = 0, /* read, not decided yet */
    ENTRY_PREPARED, /* the sink accepted it; waiting for a commit */
    ENTRY_COMMITTED,
    ENTRY_DEAD,
};

struct batch_item {
    uint8_t fate;       /* enum entry_fate */
    size_t field_start; /* index of its first field in batch.fields */
    size_t reason_off;  /* ENTRY_DEAD: offset of the reason in reasons */
};

struct batch {
    struct stream_entry *entries; /* n entries, parallel to items */
    struct batch_item *items;
    size_t n, cap;
    struct stream_field *fields;
    size_t nfields, fields_cap;
    redisReply **replies; /* owned, freed by batch_clear() */
    size_t nreplies, replies_cap;
    char *reasons; /* NUL-separated dead-letter reasons */
    size_t reasons_len, reasons_cap;
    char (*gone)[STREAM_ID_MAX]; /* IDs to ack that have no entry */
    size_t ngone, gone_cap;
    int64_t opened_ms; /* monotonic ms when the first entry arrived */
    size_t nclaimed;   /* entries taken over with XAUTOCLAIM */
};

/* An empty batch. Can't fail. */
void batch_init(struct batch *b);

/* Forget the entries and free the replies; keep the arrays. Can't fail. */
void batch_clear(struct batch *b);

/* Free everything. Can't fail. */
void batch_free(struct batch *b);

/* The batch takes ownership of reply (freed by batch_clear/free). Returns
 * 0, or -1 when out of memory (reply is freed then). */
int batch_keep_reply(struct batch *b, redisReply *reply);

/*
 * Add the entry `id` whose fields are the string pairs of fields (an array
 * reply that the batch keeps alive through batch_keep_reply()). Returns
 * the entry, or NULL when the ID is not a stream ID or out of memory.
 * Field pointers are only valid after batch_seal().
 */
struct stream_entry *batch_add(struct batch *b, const char *id, size_t idlen,
                               const redisReply *fields);

/* Note an ID to ack that has no entry (trimmed). 0 or -1 (no memory). */
int batch_add_gone(struct batch *b, const char *id, size_t idlen);

/* Point every entry's fields into the field array (call once reading is
 * done, before the entries are used). Can't fail. */
void batch_seal(struct batch *b);

/* Mark entry i dead with reason (copied). Can't fail (an out-of-memory
 * reason becomes a fixed text). */
void batch_set_dead(struct batch *b, size_t i, const char *reason);

/* The dead-letter reason of entry i. */
const char *batch_reason(const struct batch *b, size_t i);

/* Count the entries of a fate. */
size_t batch_count(const struct batch *b, enum entry_fate fate);

/* Parse "ms-seq". Returns 0, or -1 when id is not a stream ID. */
int stream_id_parse(const char *id, size_t len, uint64_t *ms, uint64_t *seq);

#endif
