/*
 * sluicectl.h: what the parts of sluicectl share: a snapshot of the stats
 * segment (every slot copied consistently at one moment) and the output
 * formats built from it.
 */
#ifndef SLUICE_SLUICECTL_H
#define SLUICE_SLUICECTL_H

#include <stdio.h>

#include "shared/stats.h"

/* Exit codes of sluicectl (besides 0, 64 usage and 78 configuration). */
#define CTL_EXIT_FAILED      1 /* the request failed (signal, timeout) */
#define CTL_EXIT_NOT_RUNNING 3 /* no segment, or its supervisor is gone */
#define CTL_EXIT_LAYOUT      4 /* segment of another layout version */
#define CTL_EXIT_NO_ACCESS   5 /* permission denied on the segment */

struct ctl_snapshot {
    int64_t taken_ms;
    struct stats_header hdr;
    struct stats_slot slots[STATS_MAX_SLOTS];
    struct stats_slot firehose; /* the reader's: name "" when none ran */
};

/* The Redis side of a report: filled when have_group is 1. */
struct ctl_group {
    int have_group;
    struct stats_group_info gi;
};

/* Copy the segment into snap (each slot with stats_slot_read()). */
void ctl_snapshot_take(const struct stats_segment *seg,
                       struct ctl_snapshot *snap);

/* 1 if slot s belongs to the report (a worker has used it). */
int ctl_slot_used(const struct stats_slot *s);

/* `stats --json`: one JSON object on out. Returns 0, or -1 when out of
 * memory. */
int ctl_print_json(FILE *out, const struct ctl_snapshot *snap,
                   const char *segment_name, const struct ctl_group *grp);

/* `stats --prometheus`: the text exposition format on out. */
void ctl_print_prometheus(FILE *out, const struct ctl_snapshot *snap,
                          const struct ctl_group *grp);

/*
 * `status` and `top`: the table. prev (may be NULL) is an earlier snapshot
 * for the events/s column; without it the column shows "-".
 */
void ctl_print_table(FILE *out, const struct ctl_snapshot *snap,
                     const struct ctl_snapshot *prev,
                     const struct ctl_group *grp);

#endif
