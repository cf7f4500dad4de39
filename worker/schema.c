/*
 * schema.c: `sluiced --init-schema`: apply the configured sink's DDL.
 *
 * The whole DDL runs in one transaction that first takes a transaction-
 * level advisory lock, so concurrent runs (several hosts starting at once)
 * queue up instead of racing on CREATE ... IF NOT EXISTS, and a failure
 * leaves nothing half-created. Every statement of the DDL is idempotent,
 * so running it again changes nothing. An index the DDL adds to a table
 * that has rows is built CONCURRENTLY after the commit instead
 * (schema_build_later()), so that the appview's writes to that table are
 * never blocked for the length of a build.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "shared/exitcode.h"
#include "shared/log.h"
#include "shared/pg_conn.h"
#include "worker/sink.h"
#include "worker/worker.h"

/* The advisory lock every --init-schema takes: "sluice" in ASCII. */
#define SCHEMA_LOCK_KEY "127979262157669"

static void
schema_notice(void *arg, const char *message)
{
    (void)arg;
    log_debug("postgresql: %.*s", (int)strcspn(message, "\n"), message);
}

/*
 * Run the index builds the DDL queued in the session's temp table
 * sluice_index_later (CREATE INDEX CONCURRENTLY on tables that have rows,
 * see sluice_create_index()), one statement at a time outside any
 * transaction, so that the appview's writes go on meanwhile. A build
 * that fails leaves an invalid index, which the next --init-schema drops
 * and builds again. Returns PG_FAULT_NONE or the fault with err set.
 */
static enum pg_fault
schema_build_later(PGconn *conn, char *err, size_t errlen)
{
    enum pg_fault f = PG_FAULT_NONE;
    PGresult *res = PQexec(
        conn, "SELECT name, stmt FROM pg_temp.sluice_index_later ORDER BY ord");

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        PQclear(res); /* no table: nothing was queued */
        return PG_FAULT_NONE;
    }
    for (int i = 0; i < PQntuples(res) && f == PG_FAULT_NONE; i++) {
        const char *name = PQgetvalue(res, i, 0), *stmt = PQgetvalue(res, i, 1);
        int64_t t0 = stats_now_ms();
        log_info("index %s: %s", name, stmt);
        f = pg_command(conn, stmt, err, errlen);
        if (f == PG_FAULT_NONE && strncmp(stmt, "CREATE", 6) == 0)
            log_info("index %s built in %" PRId64 " ms", name,
                     stats_now_ms() - t0);
    }
    PQclear(res);
    return f;
}

int
worker_init_schema(const struct config *cfg)
{
    const struct sink_type *type = sink_type_find(cfg->sink);
    char err[1024], shown[CONFIG_STR_MAX];
    struct sink *sink;
    const char *ddl;
    PGconn *conn;
    int code = EXIT_OK;

    if (type == NULL) {
        log_error("unknown sink '%s'", cfg->sink);
        return EXIT_CONFIG;
    }
    sink = type->create(cfg, err, sizeof(err));
    if (sink == NULL) {
        log_error("sink %s: %s", cfg->sink, err);
        return EXIT_CONFIG;
    }
    ddl = type->ddl_for != NULL ? type->ddl_for(sink) : type->ddl;
    if (ddl == NULL || ddl[0] == '\0') {
        log_error("sink %s has no schema", cfg->sink);
        type->destroy(sink);
        return EXIT_SOFTWARE;
    }

    config_redact_url(cfg->database_url, shown, sizeof(shown));
    conn = pg_connect(cfg->database_url, "sluice init-schema", 10000, err,
                      sizeof(err));
    if (conn == NULL) {
        log_error("postgresql %s: %s", shown, err);
        type->destroy(sink);
        return EXIT_TEMPFAIL;
    }
    PQsetNoticeProcessor(conn, schema_notice, NULL);

    enum pg_fault f = pg_command(conn, "BEGIN", err, sizeof(err));
    if (f == PG_FAULT_NONE)
        f = pg_command(conn,
                       "SELECT pg_advisory_xact_lock(" SCHEMA_LOCK_KEY ")", err,
                       sizeof(err));
    if (f == PG_FAULT_NONE)
        f = pg_command(conn, ddl, err, sizeof(err));
    if (f == PG_FAULT_NONE)
        f = pg_command(conn, "COMMIT", err, sizeof(err));
    if (f == PG_FAULT_NONE)
        f = schema_build_later(conn, err, sizeof(err));
    if (f != PG_FAULT_NONE) {
        log_error("schema of sink %s not applied: %s", cfg->sink, err);
        code = f == PG_FAULT_TRANSIENT && PQstatus(conn) != CONNECTION_OK
                   ? EXIT_TEMPFAIL
                   : EXIT_SOFTWARE;
    } else {
        log_info("schema of sink %s applied to %s", cfg->sink, shown);
    }
    PQfinish(conn);
    type->destroy(sink);
    return code;
}
