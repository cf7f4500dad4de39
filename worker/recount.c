/*
 * recount.c: `sluiced --recount`: set every counter of the atproto sink
 * from the rows it counts.
 *
 * The old workers' counters drift (read-then-write updates, likes written
 * before their post's counter row, reply counts never decremented); once
 * sluice owns the counters they stay wrong until something recounts them.
 * This walks every post URI that has, or should have, a post_aggregations
 * row, and then every feed generator and labeler, in URI order, in chunks
 * of RECOUNT_CHUNK, each chunk one transaction (sluice_recount_posts() and
 * sluice_recount_likes() in etc/sql/atproto/95-counters.sql). A chunk
 * takes the locks the workers' counter fold takes, in the same order, so
 * the recount runs beside running workers and no update of theirs is lost
 * or counted twice. A chunk that fails for a transient reason (a lost
 * connection, a serialization failure) is retried; the walk resumes where
 * it stopped.
 *
 * What changed is logged: a progress line every RECOUNT_LOG_MS, up to
 * RECOUNT_EXAMPLES examples of changed counters, and a summary. The exit
 * code is EXIT_OK when the walk completed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shared/exitcode.h"
#include "shared/log.h"
#include "shared/pg_conn.h"
#include "shared/stats.h"
#include "worker/worker.h"

#define RECOUNT_CHUNK    2000
#define RECOUNT_EXAMPLES 20
#define RECOUNT_LOG_MS   5000
#define RECOUNT_RETRIES  10

struct recount {
    PGconn *conn;
    const struct config *cfg;
    long long recounted, changed, created, likes_changed;
    int examples;
    int64_t logged_ms;
};

/* (Re)connect if needed. Returns 0, or -1 with the reason logged. */
static int
recount_connect(struct recount *rc)
{
    char err[1024], shown[CONFIG_STR_MAX];

    if (rc->conn != NULL && PQstatus(rc->conn) == CONNECTION_OK)
        return 0;
    if (rc->conn != NULL)
        PQfinish(rc->conn);
    rc->conn = pg_connect(rc->cfg->database_url, "sluice recount", 10000, err,
                          sizeof(err));
    if (rc->conn == NULL) {
        config_redact_url(rc->cfg->database_url, shown, sizeof(shown));
        log_warn("postgresql %s: %s", shown, err);
        return -1;
    }
    return 0;
}

/*
 * Run one chunk: `sql` with the parameters after and RECOUNT_CHUNK, in its
 * own transaction (autocommit), retried on transient faults. Returns the
 * result (the caller PQclear()s it), or NULL when it can't be done; the
 * reason is logged.
 */
static PGresult *
recount_chunk(struct recount *rc, const char *sql, const char *after)
{
    char chunk[16], err[1024];
    const char *params[2] = {after, chunk};

    snprintf(chunk, sizeof(chunk), "%d", RECOUNT_CHUNK);
    for (int attempt = 1; attempt <= RECOUNT_RETRIES; attempt++) {
        if (recount_connect(rc) == 0) {
            PGresult *res =
                PQexecParams(rc->conn, sql, 2, NULL, params, NULL, NULL, 0);
            enum pg_fault f = pg_fault_of(rc->conn, res, err, sizeof(err));
            if (f == PG_FAULT_NONE && PQntuples(res) == 1)
                return res;
            PQclear(res);
            if (f == PG_FAULT_NONE) {
                log_error("unexpected result of %.40s", sql);
                return NULL;
            }
            if (f != PG_FAULT_TRANSIENT ||
                (PQstatus(rc->conn) == CONNECTION_OK &&
                 strncmp(err, "42", 2) == 0)) {
                log_error("%s (is the schema applied? sluiced "
                          "--init-schema)",
                          err);
                return NULL;
            }
            log_warn("%s; retrying (%d of %d)", err, attempt, RECOUNT_RETRIES);
        }
        sleep(attempt < 5 ? (unsigned)attempt : 5U);
    }
    log_error("gave up after %d attempts", RECOUNT_RETRIES);
    return NULL;
}

static void
recount_progress(struct recount *rc, const char *at, int force)
{
    int64_t now = stats_now_ms();

    if (!force && now - rc->logged_ms < RECOUNT_LOG_MS)
        return;
    rc->logged_ms = now;
    log_info("%lld posts recounted, %lld counter rows changed, "
             "%lld created, %lld generator/labeler like counts changed%s%s",
             rc->recounted, rc->changed, rc->created, rc->likes_changed,
             at != NULL ? "; at " : "", at != NULL ? at : "");
}

/* Log the examples of one chunk ("{a,b}" text array), up to the limit. */
static void
recount_log_examples(struct recount *rc, const char *array)
{
    PGresult *res;
    const char *params[1] = {array};

    if (array == NULL || rc->examples >= RECOUNT_EXAMPLES)
        return;
    res = PQexecParams(rc->conn, "SELECT unnest($1::text[])", 1, NULL, params,
                       NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        for (int i = 0; i < PQntuples(res) && rc->examples < RECOUNT_EXAMPLES;
             i++, rc->examples++)
            log_info("%s", PQgetvalue(res, i, 0));
    PQclear(res);
}

int
worker_recount(const struct config *cfg)
{
    struct recount rc = {.cfg = cfg, .logged_ms = stats_now_ms()};
    char after[4096] = "";
    int code = EXIT_OK;

    if (strcmp(cfg->sink, "atproto") != 0) {
        log_error("sink %s keeps no counters (only sink = atproto "
                  "does)",
                  cfg->sink);
        return EXIT_CONFIG;
    }
    log_info("counters of posts, then like counts of feed "
             "generators and labelers, %d URIs a transaction",
             RECOUNT_CHUNK);
    for (;;) {
        PGresult *res = recount_chunk(
            &rc, "SELECT * FROM sluice_recount_posts($1, $2::int)", after);
        if (res == NULL) {
            code = EXIT_TEMPFAIL;
            break;
        }
        rc.recounted += atoll(PQgetvalue(res, 0, 1));
        rc.changed += atoll(PQgetvalue(res, 0, 2));
        rc.created += atoll(PQgetvalue(res, 0, 3));
        recount_log_examples(
            &rc, PQgetisnull(res, 0, 4) ? NULL : PQgetvalue(res, 0, 4));
        int done = PQgetisnull(res, 0, 0);
        if (!done)
            snprintf(after, sizeof(after), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        if (done)
            break;
        recount_progress(&rc, after, 0);
    }
    after[0] = '\0';
    while (code == EXIT_OK) {
        PGresult *res = recount_chunk(
            &rc, "SELECT * FROM sluice_recount_likes($1, $2::int)", after);
        if (res == NULL) {
            code = EXIT_TEMPFAIL;
            break;
        }
        rc.likes_changed += atoll(PQgetvalue(res, 0, 1));
        int done = PQgetisnull(res, 0, 0);
        if (!done)
            snprintf(after, sizeof(after), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        if (done)
            break;
    }
    recount_progress(&rc, NULL, 1);
    if (code == EXIT_OK)
        log_info("done");
    else
        log_error("stopped before the end; run it again (it "
                  "resumes from the start, and changes only what is "
                  "still wrong)");
    if (rc.conn != NULL)
        PQfinish(rc.conn);
    return code;
}
