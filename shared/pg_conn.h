/*
 * pg_conn.h: PostgreSQL connections for sluice, and the one place that
 * decides what a PostgreSQL error means for the worker.
 *
 * Every error is sorted into one of three kinds (pg_fault_of()):
 *
 *   PG_FAULT_TRANSIENT  retry the same work later, never ack it, never
 *                       dead-letter it: the connection is gone (class 08,
 *                       or no SQLSTATE at all), deadlock (40P01),
 *                       serialization failure (40001), shutdown and
 *                       cancellation (57P01..57P03, 57014), lock not
 *                       available (55P03), insufficient resources (53),
 *                       system errors (58), and schema problems (42: an
 *                       undefined table or column is the operator's to fix,
 *                       not the entry's fault: dead-lettering every entry
 *                       would lose the stream), and anything unknown.
 *   PG_FAULT_DATA       the data of some entry was refused: data exceptions
 *                       (22: bad number, bad text encoding, value too
 *                       long), integrity violations (23: not null, check,
 *                       unique that the sink did not handle), program
 *                       limits hit by a value (54: e.g. an index row too
 *                       big). The worker isolates the entry and dead-letters
 *                       it; the rest of the batch commits.
 */
#ifndef SLUICE_PG_CONN_H
#define SLUICE_PG_CONN_H

#include <stddef.h>

#include <libpq-fe.h>

enum pg_fault {
    PG_FAULT_NONE = 0,
    PG_FAULT_TRANSIENT,
    PG_FAULT_DATA,
};

/*
 * Connect to url (a postgresql:// URL or a key=value conninfo) with a
 * connect timeout and an application_name. Returns the connection, or NULL
 * with PostgreSQL's message in err (no password in it). The caller frees
 * the connection with PQfinish().
 */
PGconn *pg_connect(const char *url, const char *application_name,
                   long connect_timeout_ms, char *err, size_t errlen);

/* The kind of an SQLSTATE (NULL or "" = the connection failed). */
enum pg_fault pg_fault_of_sqlstate(const char *sqlstate);

/*
 * The kind of a failed result (res may be NULL: out of memory or the
 * connection broke); PG_FAULT_NONE for PGRES_COMMAND_OK / TUPLES_OK.
 * Writes PostgreSQL's message (one line, SQLSTATE first) into err when
 * there is a fault. A bad connection is always transient.
 */
enum pg_fault pg_fault_of(PGconn *conn, const PGresult *res, char *err,
                          size_t errlen);

/* Run one SQL command (no parameters) and classify the outcome. Returns
 * PG_FAULT_NONE or the fault with err set. */
enum pg_fault pg_command(PGconn *conn, const char *sql, char *err,
                         size_t errlen);

/*
 * Waiting for PostgreSQL without going quiet. A worker whose statement
 * waits on another session's row locks, or runs long, must still beat
 * its heartbeat, or the supervisor takes it for hung and kills it. These
 * do what PQexec(), PQexecParams(), PQexecPrepared() and PQgetResult()
 * do (the same result, the caller frees it; NULL when the connection
 * broke), but wait on the socket in slices of at most every_ms and call
 * the wait hook between them.
 *
 * pg_wait_hook_set() installs the hook for the whole process (fn NULL:
 * none; every_ms the longest quiet stretch). It can't fail.
 */
typedef void (*pg_wait_hook_fn)(void *arg);
void pg_wait_hook_set(pg_wait_hook_fn fn, void *arg, long every_ms);

PGresult *pg_exec(PGconn *conn, const char *sql);
PGresult *pg_exec_params(PGconn *conn, const char *sql, int nparams,
                         const char *const *values);
PGresult *pg_exec_prepared(PGconn *conn, const char *stmt, int nparams,
                           const char *const *values);
/* The next result of what is under way (after PQputCopyEnd(), say), or
 * NULL when there is none left. */
PGresult *pg_next_result(PGconn *conn);

#endif
