/*
 * prom.c: a consistent snapshot of the stats segment and the Prometheus
 * text exposition format built from it. Both programs use it: sluicectl
 * (stats --prometheus) and the supervisor's HTTP listener (GET /metrics),
 * so the two print the same text from the same code.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stddef.h>
#include <string.h>

#include "shared/prom.h"

void
stats_snapshot_take(const struct stats_segment *seg,
                    struct stats_snapshot *snap)
{
    snap->taken_ms = stats_now_ms();
    memcpy(&snap->hdr, &seg->hdr, sizeof(snap->hdr));
    for (int i = 0; i < STATS_MAX_SLOTS; i++)
        stats_slot_read(&seg->slots[i], &snap->slots[i]);
    stats_slot_read(&seg->firehose, &snap->firehose);
    for (int i = 0; i < STATS_MAX_PIPELINES; i++)
        stats_pipeline_read(&seg->pipelines[i], &snap->pipelines[i]);
}

int
stats_slot_used(const struct stats_slot *s)
{
    return s->name[0] != '\0';
}

/* A slot whose worker is part of the current set (not scaled away). */
static int
slot_listed(const struct stats_slot *s)
{
    return stats_slot_used(s) && s->state != WORKER_EMPTY;
}

/* ---- Prometheus ------------------------------------------------------- */

/* A label value with \, " and newline escaped, into buf. */
static const char *
prom_escape(const char *in, char *buf, size_t len)
{
    size_t o = 0;

    for (; *in != '\0' && o + 3 < len; in++) {
        if (*in == '\\' || *in == '"') {
            buf[o++] = '\\';
            buf[o++] = *in;
        } else if (*in == '\n') {
            buf[o++] = '\\';
            buf[o++] = 'n';
        } else {
            buf[o++] = *in;
        }
    }
    buf[o] = '\0';
    return buf;
}

struct prom_counter {
    const char *name;
    const char *help;
    size_t offset; /* in struct stats_counters */
};

#define COUNTER(field, help)                                                   \
    {                                                                          \
        "sluice_" #field "_total", help,                                       \
            offsetof(struct stats_counters, field)                             \
    }

static const struct prom_counter prom_counters[] = {
    COUNTER(entries_read, "Stream entries delivered to the worker."),
    COUNTER(events_applied, "Stream entries committed to PostgreSQL."),
    COUNTER(dead_lettered, "Entries moved to the dead-letter stream."),
    COUNTER(batches_committed, "Batches committed to PostgreSQL."),
    COUNTER(batches_retried, "Batches applied again after a transient "
                             "failure."),
    COUNTER(deadlocks, "Batches rolled back by a PostgreSQL deadlock and "
                       "applied again."),
    COUNTER(counter_folds, "Runs of the sink's maintenance that found work "
                           "(atproto: counter deltas folded, or another "
                           "worker folding)."),
    COUNTER(entries_claimed, "Entries taken over with XAUTOCLAIM."),
    COUNTER(acks, "Entries acknowledged with XACK."),
    COUNTER(redis_errors, "Redis errors seen by the worker."),
    COUNTER(pg_errors, "PostgreSQL errors seen by the worker."),
    COUNTER(restarts, "Restarts of the worker by the supervisor."),
    COUNTER(entries_trimmed_unread,
            "Entries the stream lost to trimming before the group read them "
            "(found by this worker)."),
};

#define FH_COUNTER(field, help)                                                \
    {                                                                          \
        "sluice_firehose_" #field "_total", help,                              \
            offsetof(struct stats_firehose, field)                             \
    }

static const struct prom_counter prom_firehose_counters[] = {
    FH_COUNTER(frames, "Messages received from the relay."),
    FH_COUNTER(bytes, "WebSocket payload bytes received from the relay."),
    FH_COUNTER(entries, "Entries the reader added to the stream."),
    FH_COUNTER(malformed, "Frames skipped as malformed (dead-lettered)."),
    FH_COUNTER(oversize, "Frames over firehose_max_frame (dead-lettered)."),
    FH_COUNTER(sync, "#sync frames, skipped."),
    FH_COUNTER(info, "#info frames from the relay."),
    FH_COUNTER(unknown, "Frames of an unknown type, skipped."),
    FH_COUNTER(relay_errors, "Error frames from the relay."),
    FH_COUNTER(too_big, "Commits flagged tooBig (no records)."),
    FH_COUNTER(ops_without_record, "Create or update ops whose record "
                                   "block was not in the frame."),
    FH_COUNTER(connects, "Connections opened to the relay."),
    FH_COUNTER(pauses, "Times the stream's cap stopped the reading."),
    FH_COUNTER(trimmed, "Entries trimmed after every group acked them."),
};

/* The reader's metrics, when a reader ran. */
static void
prom_firehose(FILE *out, const struct stats_snapshot *snap)
{
    const struct stats_slot *s = &snap->firehose;
    const struct stats_firehose *fh = &s->fh;
    double now_s = (double)snap->taken_ms / 1000.0;

    if (!stats_slot_used(s))
        return;
    for (size_t k = 0;
         k < sizeof(prom_firehose_counters) / sizeof(prom_firehose_counters[0]);
         k++) {
        const struct prom_counter *pc = &prom_firehose_counters[k];
        uint64_t v;

        memcpy(&v, (const char *)fh + pc->offset, sizeof(v));
        fprintf(out, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n",
                pc->name, pc->help, pc->name, pc->name, v);
    }
    fprintf(out,
            "# HELP sluice_firehose_up 1 when the reader process runs.\n"
            "# TYPE sluice_firehose_up gauge\nsluice_firehose_up %d\n",
            s->state != WORKER_DEAD && s->state != WORKER_EMPTY);
    fprintf(out, "# HELP sluice_firehose_state The reader's state (1 for "
                 "the current one).\n# TYPE sluice_firehose_state gauge\n");
    for (int st = FIREHOSE_CONNECTING; st < FIREHOSE_STATE_COUNT; st++)
        fprintf(out, "sluice_firehose_state{state=\"%s\"} %d\n",
                firehose_state_name((enum firehose_state)st),
                (int)fh->state == st);
    fprintf(out,
            "# HELP sluice_firehose_last_seq Relay seq of the last entry "
            "written.\n# TYPE sluice_firehose_last_seq gauge\n"
            "sluice_firehose_last_seq %" PRId64 "\n",
            fh->last_seq);
    fprintf(out,
            "# HELP sluice_firehose_cursor_seq The seq saved as the "
            "cursor.\n# TYPE sluice_firehose_cursor_seq gauge\n"
            "sluice_firehose_cursor_seq %" PRId64 "\n",
            fh->cursor_saved);
    if (fh->last_event_ms > 0)
        fprintf(out,
                "# HELP sluice_firehose_event_lag_seconds Now minus the "
                "relay's time of the last event read.\n"
                "# TYPE sluice_firehose_event_lag_seconds gauge\n"
                "sluice_firehose_event_lag_seconds %.3f\n",
                now_s - (double)fh->last_event_ms / 1000.0);
    if (fh->stream_length >= 0)
        fprintf(out,
                "# HELP sluice_firehose_stream_length XLEN at the reader's "
                "last trim check.\n"
                "# TYPE sluice_firehose_stream_length gauge\n"
                "sluice_firehose_stream_length %" PRId64 "\n",
                fh->stream_length);
    fprintf(out,
            "# HELP sluice_firehose_dead_lettered_total Frames the reader "
            "wrote to the dead-letter stream.\n"
            "# TYPE sluice_firehose_dead_lettered_total counter\n"
            "sluice_firehose_dead_lettered_total %" PRIu64 "\n",
            s->c.dead_lettered);
    if (s->heartbeat_ms > 0)
        fprintf(out,
                "# HELP sluice_firehose_heartbeat_age_seconds Time since the "
                "reader's last heartbeat.\n"
                "# TYPE sluice_firehose_heartbeat_age_seconds gauge\n"
                "sluice_firehose_heartbeat_age_seconds %.3f\n",
                now_s - (double)s->heartbeat_ms / 1000.0);
}

/* The labels of slot s's series, into buf: worker="NAME", with
 * pipeline="P" first when the segment names pipelines. */
static const char *
slot_labels(const struct stats_snapshot *snap, const struct stats_slot *s,
            char *buf, size_t len)
{
    char a[STATS_NAME_MAX * 2 + 1], b[STATS_NAME_MAX * 2 + 1];

    prom_escape(s->name, a, sizeof(a));
    if (snap->hdr.labelled)
        snprintf(buf, len, "pipeline=\"%s\",worker=\"%s\"",
                 prom_escape(s->pipeline, b, sizeof(b)), a);
    else
        snprintf(buf, len, "worker=\"%s\"", a);
    return buf;
}

/* One pipeline (labels "" when there is only one): wanted workers and the
 * group's figures, each family's HELP and TYPE printed by the caller. */
enum group_family {
    FAM_WANTED,
    FAM_PENDING,
    FAM_LAG,
    FAM_LENGTH,
    FAM_UP,
    FAM_COUNT
};

static const char *const fam_head[FAM_COUNT] = {
    "# HELP sluice_workers_wanted Worker processes sluiced keeps "
    "running.\n# TYPE sluice_workers_wanted gauge\n",
    "# HELP sluice_group_pending Entries delivered to the group and not yet "
    "acknowledged.\n# TYPE sluice_group_pending gauge\n",
    "# HELP sluice_group_lag Stream entries not yet delivered to the "
    "group.\n# TYPE sluice_group_lag gauge\n",
    "# HELP sluice_stream_length Entries in the stream (XLEN).\n# TYPE "
    "sluice_stream_length gauge\n",
    "# HELP sluice_group_up 1 when Redis answered the group query.\n# TYPE "
    "sluice_group_up gauge\n",
};

static void
group_series(FILE *out, enum group_family f, const char *labels,
             unsigned wanted, const struct stats_group *grp)
{
    int have = grp != NULL && grp->have_group;

    switch (f) {
    case FAM_WANTED:
        fprintf(out, "sluice_workers_wanted%s %u\n", labels, wanted);
        break;
    case FAM_PENDING:
        if (have)
            fprintf(out, "sluice_group_pending%s %lld\n", labels,
                    grp->gi.pending);
        break;
    case FAM_LAG:
        if (have && grp->gi.lag >= 0)
            fprintf(out, "sluice_group_lag%s %lld\n", labels, grp->gi.lag);
        break;
    case FAM_LENGTH:
        if (have)
            fprintf(out, "sluice_stream_length%s %lld\n", labels,
                    grp->gi.length);
        break;
    case FAM_UP:
        fprintf(out, "sluice_group_up%s %d\n", labels, have);
        break;
    case FAM_COUNT:
        break;
    }
}

/* One pipeline: the families as before pipelines had names. */
static void
prom_group(FILE *out, const struct stats_snapshot *snap,
           const struct stats_group *grp)
{
    int have = grp != NULL && grp->have_group;

    for (int f = 0; f < FAM_COUNT; f++) {
        if ((f == FAM_PENDING || f == FAM_LENGTH) && !have)
            continue;
        if (f == FAM_LAG && !(have && grp->gi.lag >= 0))
            continue;
        fputs(fam_head[f], out);
        group_series(out, (enum group_family)f, "",
                     (unsigned)snap->hdr.workers_wanted, grp);
    }
}

/* Several pipelines: each family once, a series per pipeline. */
static void
prom_pipelines(FILE *out, const struct stats_snapshot *snap, int64_t max_age_ms)
{
    static struct stats_group grps[STATS_MAX_PIPELINES];
    char labels[STATS_NAME_MAX * 2 + 32], e[STATS_NAME_MAX * 2 + 1];

    for (int i = 0; i < STATS_MAX_PIPELINES; i++)
        if (snap->pipelines[i].name[0] != '\0')
            stats_group_published_by(snap, snap->pipelines[i].name, max_age_ms,
                                     &grps[i]);
    for (int f = 0; f < FAM_COUNT; f++) {
        fputs(fam_head[f], out);
        for (int i = 0; i < STATS_MAX_PIPELINES; i++) {
            const struct stats_pipeline *p = &snap->pipelines[i];

            if (p->name[0] == '\0')
                continue;
            snprintf(labels, sizeof(labels), "{pipeline=\"%s\"}",
                     prom_escape(p->name, e, sizeof(e)));
            group_series(out, (enum group_family)f, labels, p->wanted,
                         &grps[i]);
        }
    }
}

void
stats_print_prometheus(FILE *out, const struct stats_snapshot *snap,
                       const struct stats_group *grp, int64_t max_age_ms)
{
    char w[STATS_NAME_MAX * 4 + 32];
    double now_s = (double)snap->taken_ms / 1000.0;

    for (size_t k = 0; k < sizeof(prom_counters) / sizeof(prom_counters[0]);
         k++) {
        const struct prom_counter *pc = &prom_counters[k];

        fprintf(out, "# HELP %s %s\n# TYPE %s counter\n", pc->name, pc->help,
                pc->name);
        for (int i = 0; i < STATS_MAX_SLOTS; i++) {
            const struct stats_slot *s = &snap->slots[i];
            uint64_t v;

            if (!stats_slot_used(s))
                continue;
            memcpy(&v, (const char *)&s->c + pc->offset, sizeof(v));
            fprintf(out, "%s{%s} %" PRIu64 "\n", pc->name,
                    slot_labels(snap, s, w, sizeof(w)), v);
        }
    }

    fprintf(out, "# HELP sluice_worker_up 1 when the worker process runs "
                 "(starting, running, draining or backing off).\n"
                 "# TYPE sluice_worker_up gauge\n");
    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        const struct stats_slot *s = &snap->slots[i];
        if (!slot_listed(s))
            continue;
        fprintf(out, "sluice_worker_up{%s} %d\n",
                slot_labels(snap, s, w, sizeof(w)),
                s->state != WORKER_DEAD ? 1 : 0);
    }

    fprintf(out, "# HELP sluice_worker_state The worker's state (1 for the "
                 "current one).\n"
                 "# TYPE sluice_worker_state gauge\n");
    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        const struct stats_slot *s = &snap->slots[i];
        if (!slot_listed(s))
            continue;
        slot_labels(snap, s, w, sizeof(w));
        for (int st = WORKER_STARTING; st < WORKER_STATE_COUNT; st++)
            fprintf(out, "sluice_worker_state{%s,state=\"%s\"} %d\n", w,
                    worker_state_name((enum worker_state)st),
                    (int)s->state == st);
    }

    fprintf(out, "# HELP sluice_worker_heartbeat_age_seconds Time since the "
                 "worker's last heartbeat.\n"
                 "# TYPE sluice_worker_heartbeat_age_seconds gauge\n");
    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        const struct stats_slot *s = &snap->slots[i];
        if (!slot_listed(s) || s->heartbeat_ms == 0)
            continue;
        fprintf(out,
                "sluice_worker_heartbeat_age_seconds{%s} "
                "%.3f\n",
                slot_labels(snap, s, w, sizeof(w)),
                now_s - (double)s->heartbeat_ms / 1000.0);
    }

    fprintf(out, "# HELP sluice_worker_start_time_seconds When the worker "
                 "process started (Unix time).\n"
                 "# TYPE sluice_worker_start_time_seconds gauge\n");
    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        const struct stats_slot *s = &snap->slots[i];
        if (!slot_listed(s) || s->started_ms == 0)
            continue;
        fprintf(out, "sluice_worker_start_time_seconds{%s} %.3f\n",
                slot_labels(snap, s, w, sizeof(w)),
                (double)s->started_ms / 1000.0);
    }

    fprintf(out, "# HELP sluice_last_batch_size Entries in the worker's last "
                 "batch.\n# TYPE sluice_last_batch_size gauge\n");
    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        const struct stats_slot *s = &snap->slots[i];
        if (!slot_listed(s))
            continue;
        fprintf(out, "sluice_last_batch_size{%s} %u\n",
                slot_labels(snap, s, w, sizeof(w)), s->last_batch_size);
    }

    fprintf(out, "# HELP sluice_commit_latency_seconds Time from the stream "
                 "entry's ID to the commit of its batch.\n"
                 "# TYPE sluice_commit_latency_seconds histogram\n");
    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        const struct stats_slot *s = &snap->slots[i];
        uint64_t cum = 0;

        if (!stats_slot_used(s))
            continue;
        slot_labels(snap, s, w, sizeof(w));
        for (unsigned b = 0; b < STATS_HIST_BUCKETS; b++) {
            cum += s->latency_hist[b];
            if (b == STATS_HIST_BUCKETS - 1)
                fprintf(out,
                        "sluice_commit_latency_seconds_bucket{%s,"
                        "le=\"+Inf\"} %" PRIu64 "\n",
                        w, cum);
            else
                fprintf(out,
                        "sluice_commit_latency_seconds_bucket{%s,"
                        "le=\"%g\"} %" PRIu64 "\n",
                        w, (double)stats_hist_bucket_upper_ms(b) / 1000.0, cum);
        }
        fprintf(out,
                "sluice_commit_latency_seconds_sum{%s} %.3f\n"
                "sluice_commit_latency_seconds_count{%s} %" PRIu64 "\n",
                w, (double)s->latency_sum_ms / 1000.0, w, cum);
    }

    fprintf(out,
            "# HELP sluice_supervisor_start_time_seconds When sluiced "
            "started (Unix time).\n"
            "# TYPE sluice_supervisor_start_time_seconds gauge\n"
            "sluice_supervisor_start_time_seconds %.3f\n",
            (double)snap->hdr.started_ms / 1000.0);
    fprintf(out,
            "# HELP sluice_config_generation Reloads since sluiced "
            "started.\n# TYPE sluice_config_generation gauge\n"
            "sluice_config_generation %u\n",
            (unsigned)snap->hdr.generation);
    if (snap->hdr.labelled)
        prom_pipelines(out, snap, max_age_ms);
    else
        prom_group(out, snap, grp);
    prom_firehose(out, snap);
}

void
stats_group_published(const struct stats_snapshot *snap, int64_t max_age_ms,
                      struct stats_group *grp)
{
    stats_group_published_by(snap, NULL, max_age_ms, grp);
}

void
stats_group_published_by(const struct stats_snapshot *snap,
                         const char *pipeline, int64_t max_age_ms,
                         struct stats_group *grp)
{
    const struct stats_slot *best = NULL;

    memset(grp, 0, sizeof(*grp));
    grp->gi.length = grp->gi.pending = grp->gi.lag = grp->gi.consumers = -1;
    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        const struct stats_slot *s = &snap->slots[i];

        if (stats_slot_used(s) && s->group_ms > 0 &&
            (pipeline == NULL || strcmp(s->pipeline, pipeline) == 0) &&
            (best == NULL || s->group_ms > best->group_ms))
            best = s;
    }
    if (best == NULL) {
        snprintf(grp->gi.error, sizeof(grp->gi.error),
                 "redis: no worker has read the group's figures yet");
        return;
    }
    if (snap->taken_ms - best->group_ms > max_age_ms) {
        snprintf(grp->gi.error, sizeof(grp->gi.error),
                 "redis: no worker has read the group's figures for %.1f s",
                 (double)(snap->taken_ms - best->group_ms) / 1000.0);
        return;
    }
    grp->have_group = 1;
    grp->gi.length = best->group_length;
    grp->gi.pending = best->group_pending;
    grp->gi.lag = best->group_lag;
    grp->gi.consumers = best->group_consumers;
}
