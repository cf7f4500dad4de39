/*
 * check.c: `sluiced --check[=SCAN]`: report what in the atproto sink's
 * tables disagrees with itself, and exit non-zero when anything does.
 *
 * The checks are sluice_check() (etc/sql/atproto/96-check.sql): counters
 * against their rows, posts and counted subjects without a counter row,
 * feed items, quotes and notifications whose record is gone, viewer
 * states without a live like, repost or flag, actors and subjects without
 * a users row. They run in one read-only REPEATABLE READ transaction, so
 * they see one snapshot of a live database, each reading at most SCAN
 * rows of the table it starts from (100,000 unless --check=SCAN says
 * otherwise; 0 reads all).
 *
 * The report goes to standard output, a line per check with its count
 * and up to five examples under it. Exit status: EXIT_OK when every count
 * is 0, EXIT_FOUND when some is not, EXIT_TEMPFAIL when the database
 * could not be read, EXIT_CONFIG for a sink without these tables.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/exitcode.h"
#include "shared/log.h"
#include "shared/pg_conn.h"
#include "worker/worker.h"

/* Print the examples of one check ("{a,b}" as PostgreSQL gives a text
 * array) on lines of their own; the server splits the array. */
static void
check_print_examples(PGconn *conn, const char *array)
{
    const char *params[1] = {array};
    PGresult *res = PQexecParams(conn, "SELECT unnest($1::text[])", 1, NULL,
                                 params, NULL, NULL, 0);

    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        for (int i = 0; i < PQntuples(res); i++)
            printf("    %s\n", PQgetvalue(res, i, 0));
    PQclear(res);
}

int
worker_check(const struct config *cfg, long long scan)
{
    char err[1024], shown[CONFIG_STR_MAX], scan_text[32];
    const char *params[1] = {scan_text};
    long long problems = 0;
    PGresult *res;
    PGconn *conn;

    if (strcmp(cfg->sink, "atproto") != 0) {
        log_error("sink %s has nothing to check (only sink = atproto)",
                  cfg->sink);
        return EXIT_CONFIG;
    }
    config_redact_url(cfg->database_url, shown, sizeof(shown));
    conn =
        pg_connect(cfg->database_url, "sluice check", 10000, err, sizeof(err));
    if (conn == NULL) {
        log_error("postgresql %s: %s", shown, err);
        return EXIT_TEMPFAIL;
    }
    snprintf(scan_text, sizeof(scan_text), "%lld", scan);
    if (pg_command(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err,
                   sizeof(err)) != PG_FAULT_NONE) {
        log_error("postgresql %s: %s", shown, err);
        PQfinish(conn);
        return EXIT_TEMPFAIL;
    }
    res = PQexecParams(conn, "SELECT * FROM sluice_check($1::bigint)", 1, NULL,
                       params, NULL, NULL, 0);
    if (pg_fault_of(conn, res, err, sizeof(err)) != PG_FAULT_NONE) {
        int gone = PQstatus(conn) != CONNECTION_OK;
        log_error("%s (is the schema applied? sluiced --init-schema)", err);
        PQclear(res);
        PQfinish(conn);
        return gone ? EXIT_TEMPFAIL : EXIT_SOFTWARE;
    }
    if (scan > 0)
        printf("sluice check of %s (at most %lld rows of each table)\n", shown,
               scan);
    else
        printf("sluice check of %s (every row)\n", shown);
    for (int i = 0; i < PQntuples(res); i++) {
        long long found = atoll(PQgetvalue(res, i, 1));
        printf("%-52s %lld\n", PQgetvalue(res, i, 0), found);
        if (found > 0 && !PQgetisnull(res, i, 2))
            check_print_examples(conn, PQgetvalue(res, i, 2));
        problems += found;
    }
    PQclear(res);
    pg_command(conn, "COMMIT", err, sizeof(err));
    PQfinish(conn);
    printf("%s\n", problems == 0 ? "consistent"
                                 : "inconsistent (sluiced --recount sets the "
                                   "counters; see the README)");
    fflush(stdout);
    return problems == 0 ? EXIT_OK : EXIT_FOUND;
}
