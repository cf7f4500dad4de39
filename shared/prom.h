/*
 * prom.h: a snapshot of the stats segment (every slot copied consistently
 * at one moment) and the Prometheus text exposition format built from it,
 * shared by sluicectl (stats --prometheus) and sluiced (GET /metrics).
 */
#ifndef SLUICE_PROM_H
#define SLUICE_PROM_H

#include <stdio.h>

#include "shared/stats.h"

struct stats_snapshot {
    int64_t taken_ms;
    struct stats_header hdr;
    struct stats_slot slots[STATS_MAX_SLOTS];
    struct stats_slot firehose; /* the reader's: name "" when none ran */
    struct stats_pipeline pipelines[STATS_MAX_PIPELINES]; /* name "": none */
};

/* The group's figures of a report: filled when have_group is 1. */
struct stats_group {
    int have_group;
    struct stats_group_info gi;
};

/* Copy the segment into snap (each slot with stats_slot_read()). */
void stats_snapshot_take(const struct stats_segment *seg,
                         struct stats_snapshot *snap);

/* 1 if slot s belongs to the report (a worker has used it). */
int stats_slot_used(const struct stats_slot *s);

/*
 * The group's figures the workers published in their slots (each worker
 * asks Redis about once a second): the freshest, when it is at most
 * max_age_ms old, into *grp (have_group 1); else have_group 0 and
 * grp->gi.error says why. Can't fail.
 */
void stats_group_published(const struct stats_snapshot *snap,
                           int64_t max_age_ms, struct stats_group *grp);

/* The same from the slots of one pipeline (every slot when pipeline is
 * NULL). */
void stats_group_published_by(const struct stats_snapshot *snap,
                              const char *pipeline, int64_t max_age_ms,
                              struct stats_group *grp);

/* The text exposition format on out (`sluicectl stats --prometheus` and
 * the supervisor's GET /metrics). grp, the one pipeline's group figures,
 * may be NULL; when the segment names several pipelines, each one's are
 * taken from its workers' slots (at most max_age_ms old) and grp is not
 * used, and every series carries a pipeline label. */
void stats_print_prometheus(FILE *out, const struct stats_snapshot *snap,
                            const struct stats_group *grp, int64_t max_age_ms);

#endif
