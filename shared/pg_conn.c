/*
 * pg_conn.c: connecting to PostgreSQL and classifying its errors (see
 * pg_conn.h for the classes and why).
 */
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
    PGresult *res = PQexec(conn, sql);
    enum pg_fault f = pg_fault_of(conn, res, err, errlen);

    PQclear(res);
    return f;
}
