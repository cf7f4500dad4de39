/*
 * schema.c: `sluiced --init-schema`: apply the configured sink's DDL.
 *
 * The whole DDL runs in one transaction that first takes a transaction-
 * level advisory lock, so concurrent runs (several hosts starting at once)
 * queue up instead of racing on CREATE ... IF NOT EXISTS, and a failure
 * leaves nothing half-created. Every statement of the DDL is idempotent,
 * so running it again changes nothing.
 */
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
