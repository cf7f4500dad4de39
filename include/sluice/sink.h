/*
 * <sluice/sink.h>: the interface of a sluice sink plugin, version 1.
 *
 * A plugin is a shared object that sluiced loads when its configuration
 * says `sink = plugin` and `plugin = /absolute/path/to/the.so`. It exports
 * one symbol, a constant table of callbacks:
 *
 *     const struct sluice_sink_v1 sluice_sink_v1 = {
 *         .abi_version = SLUICE_SINK_ABI_VERSION,
 *         .struct_size = sizeof(struct sluice_sink_v1),
 *         .name = "my-sink",
 *         .create = ..., .destroy = ..., .apply = ..., ...
 *     };
 *
 * This header is all a plugin needs from sluice: it does not depend on
 * sluice's own headers and it is plain C (C99 or later) with libpq's
 * PGconn. It is stable: what version 1 says here does not change. A
 * change that an old plugin could not survive gets a new version number
 * (and a new symbol, sluice_sink_v2); sluiced refuses to load a plugin
 * built for a version it does not speak, naming both versions. Callbacks
 * added at the end of the table within a version are found through
 * struct_size, so a plugin built against an older header of the same
 * version keeps working.
 *
 * Processes and threads. sluiced runs several worker processes; each one
 * loads the plugin and calls create() once, so a process holds exactly
 * one instance, and calls it from one thread only: a plugin needs no
 * locks, and must not start threads that touch the connection. Several
 * instances run at the same time in different processes against the same
 * database, each with its own connection, on different entries of the
 * stream.
 *
 * The life of an instance:
 *
 *   create(opts, nopts, err, errlen)
 *       once, before any connection. opts are the `plugin.NAME = VALUE`
 *       lines of the configuration (name without the "plugin." prefix),
 *       valid only during the call: copy what you keep. Check them here.
 *       Returns the instance (an opaque pointer handed back to every
 *       other callback; it must not be NULL on success), or NULL with a
 *       message in err: that is a configuration error, the worker exits
 *       with status 78 and the supervisor does not restart it until the
 *       configuration is reloaded. `sluiced --check-config` also calls
 *       create() and destroy(), so create() must not connect anywhere.
 *   on_connect(self, conn, err, errlen)              optional
 *       after every (re)connection to PostgreSQL, outside any transaction:
 *       check that the tables you need exist, prepare statements, set
 *       session options. SLUICE_OK; SLUICE_RETRY (a transient fault: the
 *       worker reconnects later); SLUICE_CONFIG when the database lacks
 *       what the configuration names (the worker exits 78, as above).
 *   prepare(self, e, reason, reasonlen)              optional
 *       once per entry, before it is written; no I/O. Decode and validate
 *       the entry, and hang what you decoded on e->state. Returns 0, or
 *       -1 with a reason: the entry goes to the dead-letter stream with
 *       that reason and never reaches apply() nor release() (free
 *       what you allocated for it before returning -1). NULL: every
 *       entry is accepted.
 *   apply(self, conn, entries, n, err, errlen)
 *       write n prepared entries, in stream order, inside the transaction
 *       the worker opened (do not BEGIN, COMMIT or ROLLBACK). Write them
 *       set-based: one or a few statements per call (a jsonb array or an
 *       array parameter, COPY), never one round trip per entry. Returns
 *       SLUICE_OK; SLUICE_RETRY with err for a transient fault (a lost
 *       connection, a deadlock, a serialization failure): the same entries
 *       are applied again later, nothing is lost or acked; SLUICE_DATA_ERROR
 *       with err when PostgreSQL refused some entry's data (SQLSTATE
 *       classes 22, 23, 54, or an exception of your own function): the
 *       worker splits the entries and calls apply() on the halves,
 *       recursively, until the entry at fault is alone, and dead-letters
 *       it with err. So apply() must accept any subset of the entries it
 *       was given. sluice_result_of_sqlstate() below makes that choice
 *       from a result's SQLSTATE.
 *   release(self, e)                                 optional
 *       once per prepared entry when its batch is done (committed,
 *       dead-lettered or abandoned): free what prepare() hung on
 *       e->state. The entry may have been applied any number of times,
 *       or not at all.
 *   destroy(self)
 *       once, at the end of the process (also after a failed
 *       on_connect()). A graceful stop calls it; a crash or SIGKILL does
 *       not.
 *
 * Ownership. Everything sluiced hands over (options, entries, fields,
 * their strings, the connection) stays sluiced's: read it, never free it,
 * and do not keep pointers to an entry past its release(). The strings of
 * fields are not NUL-terminated (use the lengths) and may contain any
 * byte, NUL included: a plugin that writes them as text must check them.
 * The entry ID is NUL-terminated. Error and reason buffers are sluiced's,
 * of the given length; write a NUL-terminated message (snprintf).
 *
 * Idempotency. An entry can be applied more than once (a worker killed
 * after its commit and before its ack, an entry reclaimed from a dead
 * host, a whole stream replayed) and entries can be applied out of stream
 * order (several workers, several hosts). Every write must therefore be
 * idempotent, keyed by the stream entry ID: applying an entry twice, or
 * entries in any order, must leave the state the stream applied once in
 * order leaves (INSERT ... ON CONFLICT (stream_id) DO NOTHING, or keep the
 * highest ID applied per key). The worker acks an entry only after the
 * transaction that wrote it committed.
 *
 * Crashes. A plugin runs inside the worker process: a crash (SIGSEGV,
 * abort) kills that worker only. Its transaction rolls back, its entries
 * stay pending, the supervisor restarts it with backoff, and an entry
 * that keeps killing it is dead-lettered once it was delivered more than
 * max_deliveries times. After the second delivery the worker re-reads
 * such entries one at a time, so that the others of the batch commit and
 * only the culprit is dead-lettered; but each crash costs a restart, so
 * report a bad entry from prepare() or as a data error, never by
 * crashing.
 */
#ifndef SLUICE_SINK_PLUGIN_H
#define SLUICE_SINK_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SLUICE_SINK_ABI_VERSION 1

/* One field of a stream entry. Not NUL-terminated: use the lengths. */
struct sluice_field {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* One stream entry. Valid from prepare() to release(). */
struct sluice_entry {
    const char *id;         /* "1700000000000-0", NUL-terminated */
    uint64_t id_ms, id_seq; /* the two halves of the ID */
    size_t nfields;
    const struct sluice_field *fields; /* in the order of the stream */
    unsigned deliveries; /* times delivered, this one included; 0 when
                            not known */
    void *state;         /* the plugin's: set by prepare(), for apply() */
};

/* A `plugin.NAME = VALUE` line: name is NAME. NUL-terminated strings. */
struct sluice_option {
    const char *name;
    const char *value;
};

enum sluice_result {
    SLUICE_OK = 0,
    SLUICE_RETRY,      /* transient: try the same entries again later */
    SLUICE_DATA_ERROR, /* an entry's data was refused: split, dead-letter */
    SLUICE_CONFIG,     /* on_connect(): the database lacks what the
                          configuration names (the worker exits 78) */
};

struct sluice_sink_v1 {
    uint32_t abi_version; /* SLUICE_SINK_ABI_VERSION */
    uint32_t struct_size; /* sizeof(struct sluice_sink_v1) */
    const char *name;     /* for the log, e.g. "required-fields" */

    /* required */
    void *(*create)(const struct sluice_option *opts, size_t nopts, char *err,
                    size_t errlen);
    /* required */
    void (*destroy)(void *self);
    /* optional: an enum sluice_result */
    int (*on_connect)(void *self, PGconn *conn, char *err, size_t errlen);
    /* optional: 0, or -1 = dead-letter the entry with reason */
    int (*prepare)(void *self, struct sluice_entry *e, char *reason,
                   size_t reasonlen);
    /* required: an enum sluice_result */
    int (*apply)(void *self, PGconn *conn, struct sluice_entry *const *entries,
                 size_t n, char *err, size_t errlen);
    /* optional */
    void (*release)(void *self, struct sluice_entry *e);
};

/* What a plugin exports. */
extern const struct sluice_sink_v1 sluice_sink_v1;

/*
 * The result apply() should return for a failed statement whose SQLSTATE
 * is sqlstate (PQresultErrorField(res, PG_DIAG_SQLSTATE); NULL when there
 * is no result, e.g. the connection is gone): SLUICE_DATA_ERROR for the
 * classes that mean the data was refused (22 data exception, 23 integrity
 * constraint violation, 54 program limit exceeded) and for P0 (an
 * exception raised by a PL/pgSQL function of yours), SLUICE_RETRY for the
 * rest. The worker treats a class 42 error (a missing table) as transient
 * too: it is retried, never dead-lettered.
 */
static inline int
sluice_result_of_sqlstate(const char *sqlstate)
{
    if (sqlstate == NULL || sqlstate[0] == '\0' || sqlstate[1] == '\0')
        return SLUICE_RETRY;
    if ((sqlstate[0] == '2' && (sqlstate[1] == '2' || sqlstate[1] == '3')) ||
        (sqlstate[0] == '5' && sqlstate[1] == '4') ||
        (sqlstate[0] == 'P' && sqlstate[1] == '0'))
        return SLUICE_DATA_ERROR;
    return SLUICE_RETRY;
}

#ifdef __cplusplus
}
#endif

#endif
