/*
 * supervisor.h: the pre-fork supervisor of sluiced: forks the workers,
 * restarts them with backoff, kills hung ones, reloads on SIGHUP, stops on
 * TERM/INT/QUIT, owns the stats segment and logs the aggregate rate.
 */
#ifndef SLUICE_SUPERVISOR_H
#define SLUICE_SUPERVISOR_H

#include "shared/config.h"
#include "shared/pipeline.h"

struct supervisor_options {
    const char *config_path;  /* re-read on SIGHUP; may be NULL */
    char *const *set_options; /* command-line "key=value", re-applied */
    int nset_options;
    int daemonize; /* -d: detach, write the pidfile */
    int ready_fd;  /* --ready-fd: s6's notification fd, or -1 */
};

/*
 * Run the supervisor with the already loaded and checked pipelines of set
 * (it copies what it needs: the caller may free set after the children
 * are forked, or never). Returns the process exit code
 * (exitcode.h):
 *   EXIT_OK        stopped by TERM/INT/QUIT
 *   EXIT_TEMPFAIL  another sluiced holds the pidfile or the stats segment
 *                  (it is running: starting again later may work)
 *   EXIT_CONFIG    unusable settings (unknown user, -d without pidfile,
 *                  pidfile not writable), or every worker exited
 *                  EXIT_CONFIG so none can run
 *   EXIT_SOFTWARE  the segment or the daemon can't be set up
 */
int supervisor_run(const struct supervisor_options *opt,
                   struct pipeline_set *set);

#endif
