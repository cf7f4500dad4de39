/*
 * supervisor.c: the pre-fork supervisor of sluiced (placeholder while the
 * real one is written: it refuses to run).
 */
#include "supervisor/supervisor.h"
#include "shared/exitcode.h"
#include "shared/log.h"

int
supervisor_run(const struct supervisor_options *opt, struct config *cfg)
{
    (void)opt;
    (void)cfg;
    log_error("supervisor not ready yet: use --worker NAME");
    return EXIT_SOFTWARE;
}
