/*
 * sluicectl.h: what the parts of sluicectl share: a snapshot of the stats
 * segment (every slot copied consistently at one moment) and the output
 * formats built from it.
 */
#ifndef SLUICE_SLUICECTL_H
#define SLUICE_SLUICECTL_H

#include <stdio.h>

#include "shared/prom.h"
#include "shared/stats.h"

/* Exit codes of sluicectl (besides 0, 64 usage and 78 configuration). */
#define CTL_EXIT_FAILED      1 /* the request failed (signal, timeout) */
#define CTL_EXIT_NOT_RUNNING 3 /* no segment, or its supervisor is gone */
#define CTL_EXIT_LAYOUT      4 /* segment of another layout version */
#define CTL_EXIT_NO_ACCESS   5 /* permission denied on the segment */

/* `stats --json`: one JSON object on out. Returns 0, or -1 when out of
 * memory. */
int ctl_print_json(FILE *out, const struct stats_snapshot *snap,
                   const char *segment_name, const struct stats_group *grp);

/*
 * `status` and `top`: the table. prev (may be NULL) is an earlier snapshot
 * for the events/s column; without it the column shows "-".
 */
void ctl_print_table(FILE *out, const struct stats_snapshot *snap,
                     const struct stats_snapshot *prev,
                     const struct stats_group *grp);

#endif
