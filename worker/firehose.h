/*
 * firehose.h: the firehose reader, the role that puts a relay's
 * com.atproto.sync.subscribeRepos into the stream the workers read.
 *
 * The supervisor forks it beside the workers when relay_url is set
 * (`sluiced --firehose` runs it alone in the foreground). See firehose.c
 * for what it guarantees: no event is lost between the relay and Redis,
 * and, in the default stream_trim = acked, none is trimmed before every
 * consumer group on the stream acked it.
 */
#ifndef SLUICE_FIREHOSE_H
#define SLUICE_FIREHOSE_H

#include "shared/config.h"
#include "shared/stats.h"

struct firehose_options {
    const struct config *cfg;
    struct stats_slot *slot; /* where to publish; a private one if NULL */
    int parent_fd;           /* read end of the supervisor's pipe, or -1 */
};

/*
 * Run until told to stop (TERM, INT, QUIT, or the supervisor's death).
 * Returns an exit code (exitcode.h): EXIT_OK after a graceful stop (every
 * entry read from the relay XADDed and the cursor saved), EXIT_TEMPFAIL
 * when another reader holds the stream's reader lock, EXIT_CONFIG when
 * the configuration can't work. Relay and Redis outages never end it: it
 * backs off and reconnects, resuming from the cursor.
 */
int firehose_run(const struct firehose_options *opt);

#endif
