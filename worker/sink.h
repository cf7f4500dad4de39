/*
 * sink.h: what a sink is — the part of the worker that turns stream entries
 * into PostgreSQL rows — and the registry of the sinks sluice has.
 *
 * The worker owns the stream (reading, acking, reclaiming, dead letters),
 * the connections and the transaction; a sink only decodes and writes:
 *
 *   sink->type->prepare(sink, entry)  decode one entry, no I/O. A malformed
 *                                    entry is refused here with a reason and
 *                                    goes to the dead-letter stream.
 *   sink->type->apply(sink, conn, entries, n, err)
 *                                    write n prepared entries inside the
 *                                    transaction the worker opened, with a
 *                                    few set-based statements (never one
 *                                    round trip per entry). Any subset of a
 *                                    batch must be appliable on its own: the
 *                                    worker splits a batch to isolate an
 *                                    entry PostgreSQL rejects.
 *   sink->type->release(sink, entry) free what prepare() attached.
 *
 * Every write must be idempotent: an entry applied twice, or entries
 * applied out of stream order, must leave the same final state as the
 * stream applied once in order.
 */
#ifndef SLUICE_SINK_H
#define SLUICE_SINK_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "shared/buf.h"
#include "shared/config.h"

#define SINK_REASON_MAX 256

/* One field of a stream entry; pointers into the Redis reply (not
 * NUL-terminated in general: use the lengths). */
struct stream_field {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* One stream entry as the worker read it. The fields stay valid until the
 * batch is done; sink_state belongs to the sink. */
struct stream_entry {
    char id[48];    /* "1700000000000-0" */
    uint64_t id_ms; /* the two halves of the ID */
    uint64_t id_seq;
    /* the ordering key: the ID, or for an entry sluice-deadletter
     * requeued, its orig_id field (the ID it first had) */
    uint64_t ord_ms;
    uint64_t ord_seq;
    size_t nfields;
    struct stream_field *fields;
    unsigned deliveries; /* times delivered, when known (0 = unknown) */
    void *sink_state;    /* set by prepare(), freed by release() */
};

/* What apply() reports besides success. */
enum sink_result {
    SINK_OK = 0,
    SINK_RETRY,      /* transient: connection lost, deadlock, serialization
                        failure, admin shutdown; retry the whole batch */
    SINK_DATA_ERROR, /* PostgreSQL rejected some entry's data: split */
    SINK_CONFIG,     /* on_connect(): the database lacks what the settings
                        name (the worker exits EXIT_CONFIG) */
};

struct sink;

struct sink_type {
    const char *name;
    /* Allocate the sink for this configuration. NULL + err on failure
     * (a configuration problem: permanent). No connection yet. */
    struct sink *(*create)(const struct config *cfg, char *err, size_t errlen);
    void (*destroy)(struct sink *sink);
    /* The DDL applied by `sluiced --init-schema` (compiled in from
     * etc/sql/NAME.sql, or the files of etc/sql/NAME/ joined). */
    const char *ddl;
    /* Once per connection (after every reconnect): prepare statements,
     * set session options. Returns SINK_OK, SINK_RETRY, or SINK_CONFIG
     * when the database lacks what the settings name. */
    enum sink_result (*on_connect)(struct sink *sink, PGconn *conn, char *err,
                                   size_t errlen);
    /* Decode one entry. 0, or -1 with a reason in reason (the entry is
     * dead-lettered and never reaches apply). */
    int (*prepare)(struct sink *sink, struct stream_entry *entry, char *reason,
                   size_t reasonlen);
    /* Write entries inside the open transaction. err gets PostgreSQL's
     * message on failure. */
    enum sink_result (*apply)(struct sink *sink, PGconn *conn,
                              struct stream_entry *const *entries, size_t n,
                              char *err, size_t errlen);
    void (*release)(struct sink *sink, struct stream_entry *entry);
    /* Optional: idempotent work on the same entries that runs in a short
     * transaction of its own before the batch's (so that the row locks it
     * takes are not held for the whole batch). SINK_OK, or SINK_RETRY
     * (the batch is retried); a data error there is ignored, the batch's
     * own transaction finds the entry at fault. */
    enum sink_result (*before_apply)(struct sink *sink, PGconn *conn,
                                     struct stream_entry *const *entries,
                                     size_t n, char *err, size_t errlen);
    /* Optional: the sink's own work outside any batch, in autocommit (the
     * atproto sink folds its counter deltas into the counters). The worker
     * calls it at most every sink->maintain_ms while it commits batches,
     * and at once when a read finds the stream idle. *pending is set to whether
     * work is left for another call. SINK_OK, or SINK_RETRY with err (the
     * worker logs it and calls again later; nothing is lost: the work is
     * in committed rows). */
    enum sink_result (*maintain)(struct sink *sink, PGconn *conn, int *pending,
                                 char *err, size_t errlen);
    /* Optional (NULL: use ddl as it is): the DDL for this sink's
     * configuration, when it depends on settings (the raw sink's table
     * name). The text belongs to the sink. */
    const char *(*ddl_for)(struct sink *sink);
};

struct sink {
    const struct sink_type *type;
    long maintain_ms; /* set by create() when the type has maintain() */
};

/* Look a sink type up by name ("atproto", "function", "plugin", "raw",
 * "table"); NULL if unknown. */
const struct sink_type *sink_type_find(const char *name);

/*
 * What a PostgreSQL result means for apply(): SINK_OK for success,
 * SINK_DATA_ERROR when the data was refused (SQLSTATE classes 22, 23, 54),
 * SINK_RETRY for everything else (see shared/pg_conn.h). On failure err
 * gets PostgreSQL's message, SQLSTATE first.
 */
enum sink_result sink_result_of_pg(PGconn *conn, const PGresult *res, char *err,
                                   size_t errlen);

/* Quote a name, maybe schema-qualified, as an SQL identifier (a.b ->
 * "a"."b") into out. 0, or -1 when it is empty or does not fit. */
int sink_quote_name(const char *name, char *out, size_t outlen);

/* Check the what ("name" or "value") of field name: s[0..len) must be
 * valid UTF-8 without NUL, as text and jsonb need it. 0, or -1 with the
 * reason ("field F: invalid UTF-8 at byte N of its value"). */
int sink_field_check(const char *what, const char *name, size_t namelen,
                     const char *s, size_t len, char *reason, size_t reasonlen);

/* Append s[0..len) to b as one value of COPY's text format (backslash,
 * tab, newline and CR escaped). 0, or -1 when out of memory. */
int sink_copy_text(struct buf *b, const char *s, size_t len);

/*
 * One COPY ... FROM STDIN (copy_sql) of n rows: row i is the text-format
 * line at base + spans[k].off, spans[k].len long, where k is entries[i]'s
 * sink_state - 1 (the index prepare() stored) and spans are read at a
 * stride of span_size bytes (a sink's item struct begins with the two
 * size_t). SINK_OK, or the failure as sink_result_of_pg() classes it,
 * with err naming what (the staging table) when the rows could not be
 * sent.
 */
enum sink_result sink_copy_in(PGconn *conn, const char *copy_sql,
                              const char *what, const char *base,
                              const void *spans, size_t span_size,
                              struct stream_entry *const *entries, size_t n,
                              char *err, size_t errlen);

/* Find a field by name; NULL when absent. */
const struct stream_field *stream_entry_field(const struct stream_entry *e,
                                              const char *name);

#endif
