/*
 * pg_conn.c: connecting to PostgreSQL and classifying its errors (see
 * pg_conn.h for the classes and why).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "shared/pg_conn.h"

/* Copy a libpq message into err as one line (libpq ends lines with \n and
 * may add a DETAIL line: keep them, joined by "; "). */
static void
copy_message(char *err, size_t errlen, const char *prefix, const char *msg)
{
    size_t n;

    if (errlen == 0)
        return;
    n = (size_t)snprintf(err, errlen, "%s", prefix);
    if (n >= errlen)
        return;
    for (const char *p = msg; p != NULL && *p != '\0' && n + 3 < errlen; p++) {
        if (*p == '\n') {
            if (p[1] == '\0')
                break;
            err[n++] = ';';
            err[n++] = ' ';
        } else {
            err[n++] = *p;
        }
    }
    err[n] = '\0';
}

PGconn *
pg_connect(const char *url, const char *application_name,
           long connect_timeout_ms, char *err, size_t errlen)
{
    char timeout[24];
    long secs = (connect_timeout_ms + 999) / 1000;

    if (secs < 2)
        secs = 2; /* libpq's minimum that means anything */
    snprintf(timeout, sizeof(timeout), "%ld", secs);
    const char *keys[] = {"dbname",          "fallback_application_name",
                          "connect_timeout", "keepalives",
                          "keepalives_idle", NULL};
    const char *values[] = {url, application_name, timeout, "1", "30", NULL};
    PGconn *conn = PQconnectdbParams(keys, values, 1);

    if (conn == NULL) {
        copy_message(err, errlen, "", "out of memory");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        copy_message(err, errlen, "", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

enum pg_fault
pg_fault_of_sqlstate(const char *s)
{
    if (s == NULL || strlen(s) != 5)
        return PG_FAULT_TRANSIENT;
    if (strncmp(s, "22", 2) == 0 || strncmp(s, "23", 2) == 0 ||
        strncmp(s, "54", 2) == 0)
        return PG_FAULT_DATA;
    /* 08 connection, 40 rollback (deadlock, serialization), 53 resources,
     * 55 object state, 57 operator intervention, 58 system error, 42
     * schema problems, XX internal, and all others: retry later. */
    return PG_FAULT_TRANSIENT;
}

enum pg_fault
pg_fault_of(PGconn *conn, const PGresult *res, char *err, size_t errlen)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    const char *state;
    char prefix[16];

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return PG_FAULT_NONE;
    if (res == NULL || PQstatus(conn) != CONNECTION_OK) {
        copy_message(err, errlen, "connection: ",
                     res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
        if (err != NULL && errlen > 0 && strcmp(err, "connection: ") == 0)
            copy_message(err, errlen, "connection: ", "lost");
        return PG_FAULT_TRANSIENT;
    }
    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    snprintf(prefix, sizeof(prefix), "%s: ", state ? state : "?????");
    {
        const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
        char msg[1024];
        if (primary == NULL)
            primary = PQresultErrorMessage(res);
        if (detail != NULL)
            snprintf(msg, sizeof(msg), "%s (%s)", primary, detail);
        else
            snprintf(msg, sizeof(msg), "%s", primary);
        copy_message(err, errlen, prefix, msg);
    }
    return pg_fault_of_sqlstate(state);
}

enum pg_fault
pg_command(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *res = pg_exec(conn, sql);
    enum pg_fault f = pg_fault_of(conn, res, err, errlen);

    PQclear(res);
    return f;
}

/* ---- waiting without going quiet ----------------------------------- */

static pg_wait_hook_fn wait_hook;
static void *wait_hook_arg;
static long wait_every_ms = 1000;

void
pg_wait_hook_set(pg_wait_hook_fn fn, void *arg, long every_ms)
{
    wait_hook = fn;
    wait_hook_arg = arg;
    wait_every_ms = every_ms > 0 ? every_ms : 1000;
}

/*
 * Wait until a result can be read without blocking, calling the hook
 * every wait_every_ms meanwhile. Returns 0, or -1 when the connection
 * failed (PQgetResult() then reports it).
 */
static int
wait_result(PGconn *conn)
{
    int fd = PQsocket(conn);

    if (fd < 0)
        return -1;
    for (;;) {
        int flushed = PQflush(conn); /* 0 all sent, 1 more to send */
        if (flushed < 0)
            return -1;
        if (flushed == 0 && !PQisBusy(conn))
            return 0;
        struct pollfd p = {
            .fd = fd, .events = (short)(POLLIN | (flushed == 1 ? POLLOUT : 0))};
        int n = poll(&p, 1, (int)wait_every_ms);
        if (n < 0 && errno != EINTR)
            return -1;
        if (n == 0 && wait_hook != NULL)
            wait_hook(wait_hook_arg);
        if (n > 0 && (p.revents & (POLLIN | POLLERR | POLLHUP)) &&
            PQconsumeInput(conn) == 0)
            return -1;
    }
}

PGresult *
pg_next_result(PGconn *conn)
{
    (void)wait_result(conn);
    return PQgetResult(conn);
}

/*
 * The results of what was sent, as PQexec() gives them: the last one, or
 * the first error (what follows it is read and dropped); a COPY state
 * ends the reading, the caller goes on with the copy.
 */
static PGresult *
collect(PGconn *conn, int sent)
{
    PGresult *keep = NULL, *res;

    if (!sent)
        return PQgetResult(conn); /* NULL, or why it could not be sent */
    while ((res = pg_next_result(conn)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (keep != NULL && PQresultStatus(keep) == PGRES_FATAL_ERROR) {
            PQclear(res);
            continue;
        }
        PQclear(keep);
        keep = res;
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT ||
            st == PGRES_COPY_BOTH)
            break;
    }
    return keep;
}

PGresult *
pg_exec(PGconn *conn, const char *sql)
{
    return collect(conn, PQsendQuery(conn, sql));
}

PGresult *
pg_exec_params(PGconn *conn, const char *sql, int nparams,
               const char *const *values)
{
    return collect(conn, PQsendQueryParams(conn, sql, nparams, NULL, values,
                                           NULL, NULL, 0));
}

PGresult *
pg_exec_prepared(PGconn *conn, const char *stmt, int nparams,
                 const char *const *values)
{
    return collect(
        conn, PQsendQueryPrepared(conn, stmt, nparams, values, NULL, NULL, 0));
}
