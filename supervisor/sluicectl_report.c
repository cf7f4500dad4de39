/*
 * sluicectl_report.c: the three ways sluicectl shows a snapshot of the
 * stats segment: the operator's table (status, top), one JSON object
 * (stats --json) and the Prometheus text exposition format (stats
 * --prometheus, for node_exporter's textfile collector).
 *
 * Totals include slots of workers that were scaled away, so that the
 * totals keep counting everything this supervisor applied.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "supervisor/sluicectl.h"

/* The group's figures the workers published are taken when at most this
 * old (they publish about once a second). */
#define PUBLISHED_FRESH_MS 5000

/* A slot whose worker is part of the current set (not scaled away). */
static int
slot_listed(const struct stats_slot *s)
{
    return stats_slot_used(s) && s->state != WORKER_EMPTY;
}

static void
counters_add(struct stats_counters *sum, const struct stats_counters *c)
{
    sum->entries_read += c->entries_read;
    sum->events_applied += c->events_applied;
    sum->dead_lettered += c->dead_lettered;
    sum->batches_committed += c->batches_committed;
    sum->batches_retried += c->batches_retried;
    sum->deadlocks += c->deadlocks;
    sum->counter_folds += c->counter_folds;
    sum->entries_claimed += c->entries_claimed;
    sum->acks += c->acks;
    sum->redis_errors += c->redis_errors;
    sum->pg_errors += c->pg_errors;
    sum->restarts += c->restarts;
    sum->entries_trimmed_unread += c->entries_trimmed_unread;
}

/* events/s of slot i between prev and snap; -1 when unknown. */
static double
slot_rate(const struct stats_snapshot *snap, const struct stats_snapshot *prev,
          int i)
{
    double secs;

    if (prev == NULL || snap->taken_ms <= prev->taken_ms)
        return -1;
    if (snap->slots[i].c.events_applied < prev->slots[i].c.events_applied)
        return -1; /* the slot was reset meanwhile */
    secs = (double)(snap->taken_ms - prev->taken_ms) / 1000.0;
    return (double)(snap->slots[i].c.events_applied -
                    prev->slots[i].c.events_applied) /
           secs;
}

static void
format_uptime(char *buf, size_t len, int64_t ms)
{
    int64_t s = ms / 1000;

    if (ms < 0)
        snprintf(buf, len, "-");
    else if (s < 60)
        snprintf(buf, len, "%" PRId64 "s", s);
    else if (s < 3600)
        snprintf(buf, len, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, len, "%" PRId64 "h%02" PRId64 "m", s / 3600,
                 s % 3600 / 60);
    else
        snprintf(buf, len, "%" PRId64 "d%02" PRId64 "h", s / 86400,
                 s % 86400 / 3600);
}

static void
format_rate(char *buf, size_t len, double r)
{
    if (r < 0)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%.0f", r);
}

/* The table's rows of the listed workers of pipeline (every one when
 * NULL). */
static void
print_workers(FILE *out, const struct stats_snapshot *snap,
              const struct stats_snapshot *prev, const char *pipeline)
{
    char up[32], rate[32];

    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        const struct stats_slot *s = &snap->slots[i];

        if (!slot_listed(s) ||
            (pipeline != NULL && strcmp(s->pipeline, pipeline) != 0))
            continue;
        format_uptime(up, sizeof(up),
                      s->state == WORKER_DEAD ? -1
                                              : snap->taken_ms - s->started_ms);
        format_rate(rate, sizeof(rate), slot_rate(snap, prev, i));
        fprintf(out,
                "%-24s %-9s %8d %9s %9s %12" PRIu64 " %9" PRIu64 " %7" PRIu64
                " %9" PRIu64 " %8" PRIu64 "\n",
                s->name, worker_state_name((enum worker_state)s->state),
                (int)s->pid, up, rate, s->c.events_applied, s->c.dead_lettered,
                s->c.redis_errors + s->c.pg_errors, s->c.deadlocks,
                s->c.restarts);
        if (s->state == WORKER_DEAD || s->state == WORKER_BACKOFF)
            if (s->last_error[0] != '\0')
                fprintf(out, "  last error: %s\n", s->last_error);
    }
}

/* The reader's lines of the table, when a reader ran. */
static void
print_firehose(FILE *out, const struct stats_snapshot *snap,
               const struct stats_snapshot *prev)
{
    const struct stats_slot *s = &snap->firehose;
    const struct stats_firehose *fh = &s->fh;
    char up[32], rate[32] = "-", behind[32] = "-";

    if (!stats_slot_used(s))
        return;
    format_uptime(up, sizeof(up),
                  s->state == WORKER_DEAD ? -1
                                          : snap->taken_ms - s->started_ms);
    if (prev != NULL && snap->taken_ms > prev->taken_ms &&
        fh->frames >= prev->firehose.fh.frames)
        format_rate(rate, sizeof(rate),
                    (double)(fh->frames - prev->firehose.fh.frames) * 1000.0 /
                        (double)(snap->taken_ms - prev->taken_ms));
    if (fh->last_event_ms > 0)
        snprintf(behind, sizeof(behind), "%.1f s",
                 (double)(snap->taken_ms - fh->last_event_ms) / 1000.0);
    fprintf(out,
            "firehose reader: %s, pid %d, up %s, %s frames/s, seq %" PRId64
            ", %s behind the relay's clock, %.1f MiB in\n",
            s->state == WORKER_DEAD
                ? "dead"
                : firehose_state_name((enum firehose_state)fh->state),
            (int)s->pid, up, rate, fh->last_seq, behind,
            (double)fh->bytes / (1024.0 * 1024.0));
    fprintf(out,
            "  entries %" PRIu64 ", stream length %" PRId64 ", trimmed %" PRIu64
            ", paused %" PRIu64 " times, %" PRIu64 " connections, %" PRIu64
            " restarts\n",
            fh->entries, fh->stream_length, fh->trimmed, fh->pauses,
            fh->connects, s->c.restarts);
    fprintf(out,
            "  skipped: %" PRIu64 " malformed, %" PRIu64 " oversize (%" PRIu64
            " dead-lettered), %" PRIu64 " unknown, %" PRIu64 " #sync, %" PRIu64
            " relay errors, %" PRIu64 " tooBig commits\n",
            fh->malformed, fh->oversize, s->c.dead_lettered, fh->unknown,
            fh->sync, fh->relay_errors, fh->too_big);
    if (fh->state == FIREHOSE_PAUSED && fh->paused_since_ms > 0)
        fprintf(out, "  paused for %.0f s: the stream is at its cap\n",
                (double)(snap->taken_ms - fh->paused_since_ms) / 1000.0);
    if (s->last_error[0] != '\0' && fh->state != FIREHOSE_CONNECTED)
        fprintf(out, "  last error: %s\n", s->last_error);
}

void
ctl_print_table(FILE *out, const struct stats_snapshot *snap,
                const struct stats_snapshot *prev,
                const struct stats_group *grp)
{
    struct stats_counters total;
    double total_rate = 0;
    int have_rate = prev != NULL;
    char up[32], rate[32];

    memset(&total, 0, sizeof(total));
    format_uptime(up, sizeof(up), snap->taken_ms - snap->hdr.started_ms);
    if (snap->hdr.labelled)
        fprintf(out,
                "sluiced pid %d, up %s, several pipelines, generation %u, %u "
                "workers wanted\n",
                (int)snap->hdr.supervisor_pid, up,
                (unsigned)snap->hdr.generation,
                (unsigned)snap->hdr.workers_wanted);
    else
        fprintf(out,
                "sluiced pid %d, up %s, %s/%s, generation %u, %u workers "
                "wanted\n",
                (int)snap->hdr.supervisor_pid, up, snap->hdr.stream,
                snap->hdr.group, (unsigned)snap->hdr.generation,
                (unsigned)snap->hdr.workers_wanted);
    fprintf(out, "%-24s %-9s %8s %9s %9s %12s %9s %7s %9s %8s\n", "WORKER",
            "STATE", "PID", "UPTIME", "EVENTS/S", "APPLIED", "DEAD", "ERRORS",
            "DEADLOCKS", "RESTARTS");
    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        const struct stats_slot *s = &snap->slots[i];
        double r;

        if (!stats_slot_used(s))
            continue;
        counters_add(&total, &s->c);
        r = slot_rate(snap, prev, i);
        if (r >= 0)
            total_rate += r;
    }
    if (!snap->hdr.labelled) {
        print_workers(out, snap, prev, NULL);
    } else {
        for (int k = 0; k < STATS_MAX_PIPELINES; k++) {
            const struct stats_pipeline *p = &snap->pipelines[k];
            struct stats_group pg;
            char lag[32] = "unknown";

            if (p->name[0] == '\0')
                continue;
            stats_group_published_by(snap, p->name, PUBLISHED_FRESH_MS, &pg);
            if (pg.have_group && pg.gi.lag >= 0)
                snprintf(lag, sizeof(lag), "%lld", pg.gi.lag);
            if (pg.have_group)
                fprintf(out,
                        "pipeline %s: %s/%s, %u workers wanted, lag %s, "
                        "pending %lld, stream length %lld\n",
                        p->name, p->stream, p->group, (unsigned)p->wanted, lag,
                        pg.gi.pending, pg.gi.length);
            else
                fprintf(out,
                        "pipeline %s: %s/%s, %u workers wanted, lag and "
                        "pending unknown (%s)\n",
                        p->name, p->stream, p->group, (unsigned)p->wanted,
                        pg.gi.error);
            print_workers(out, snap, prev, p->name);
        }
    }
    format_rate(rate, sizeof(rate), have_rate ? total_rate : -1);
    fprintf(out,
            "%-24s %-9s %8s %9s %9s %12" PRIu64 " %9" PRIu64 " %7" PRIu64
            " %9" PRIu64 " %8" PRIu64 "\n",
            "total", "", "", "", rate, total.events_applied,
            total.dead_lettered, total.redis_errors + total.pg_errors,
            total.deadlocks, total.restarts);
    if (total.entries_trimmed_unread > 0)
        fprintf(out,
                "LOST: %" PRIu64 " entries were trimmed from the stream "
                "before the group read them (see the workers' log)\n",
                total.entries_trimmed_unread);
    print_firehose(out, snap, prev);
    if (grp == NULL || snap->hdr.labelled)
        return;
    if (grp->have_group) {
        char lag[32];

        if (grp->gi.lag >= 0)
            snprintf(lag, sizeof(lag), "%lld", grp->gi.lag);
        else
            snprintf(lag, sizeof(lag), "unknown");
        fprintf(out,
                "group %s: lag %s, pending %lld, stream length %lld, "
                "%lld consumers\n",
                snap->hdr.group, lag, grp->gi.pending, grp->gi.length,
                grp->gi.consumers);
    } else {
        fprintf(out, "group %s: lag and pending unknown (%s)\n",
                snap->hdr.group, grp->gi.error);
    }
}

/* ---- JSON -------------------------------------------------------------- */

static void
json_counters(cJSON *obj, const struct stats_counters *c)
{
    cJSON_AddNumberToObject(obj, "entries_read", (double)c->entries_read);
    cJSON_AddNumberToObject(obj, "events_applied", (double)c->events_applied);
    cJSON_AddNumberToObject(obj, "dead_lettered", (double)c->dead_lettered);
    cJSON_AddNumberToObject(obj, "batches_committed",
                            (double)c->batches_committed);
    cJSON_AddNumberToObject(obj, "batches_retried", (double)c->batches_retried);
    cJSON_AddNumberToObject(obj, "deadlocks", (double)c->deadlocks);
    cJSON_AddNumberToObject(obj, "counter_folds", (double)c->counter_folds);
    cJSON_AddNumberToObject(obj, "entries_claimed", (double)c->entries_claimed);
    cJSON_AddNumberToObject(obj, "acks", (double)c->acks);
    cJSON_AddNumberToObject(obj, "redis_errors", (double)c->redis_errors);
    cJSON_AddNumberToObject(obj, "pg_errors", (double)c->pg_errors);
    cJSON_AddNumberToObject(obj, "restarts", (double)c->restarts);
    cJSON_AddNumberToObject(obj, "entries_trimmed_unread",
                            (double)c->entries_trimmed_unread);
}

/* "pipelines": each one's name, stream, group, wanted workers and the
 * group's figures its workers published. */
static void
json_pipelines(cJSON *root, const struct stats_snapshot *snap)
{
    cJSON *arr = cJSON_AddArrayToObject(root, "pipelines");

    for (int k = 0; k < STATS_MAX_PIPELINES; k++) {
        const struct stats_pipeline *p = &snap->pipelines[k];
        struct stats_group pg;
        cJSON *o;

        if (p->name[0] == '\0')
            continue;
        stats_group_published_by(snap, p->name, PUBLISHED_FRESH_MS, &pg);
        o = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "name", p->name);
        cJSON_AddStringToObject(o, "stream", p->stream);
        cJSON_AddStringToObject(o, "group", p->group);
        cJSON_AddNumberToObject(o, "workers_wanted", p->wanted);
        if (pg.have_group) {
            cJSON_AddNumberToObject(o, "length", (double)pg.gi.length);
            cJSON_AddNumberToObject(o, "pending", (double)pg.gi.pending);
            if (pg.gi.lag >= 0)
                cJSON_AddNumberToObject(o, "lag", (double)pg.gi.lag);
            else
                cJSON_AddNullToObject(o, "lag");
        } else {
            cJSON_AddStringToObject(o, "error", pg.gi.error);
        }
    }
}

/* The reader's object, or null when no reader ran. */
static void
json_firehose(cJSON *root, const struct stats_slot *s)
{
    const struct stats_firehose *fh = &s->fh;
    cJSON *o;

    if (!stats_slot_used(s)) {
        cJSON_AddNullToObject(root, "firehose");
        return;
    }
    o = cJSON_AddObjectToObject(root, "firehose");
    cJSON_AddStringToObject(
        o, "state",
        s->state == WORKER_DEAD
            ? "dead"
            : firehose_state_name((enum firehose_state)fh->state));
    cJSON_AddNumberToObject(o, "pid", s->pid);
    cJSON_AddNumberToObject(o, "started_ms", (double)s->started_ms);
    cJSON_AddNumberToObject(o, "heartbeat_ms", (double)s->heartbeat_ms);
#define FH_NUM(f) cJSON_AddNumberToObject(o, #f, (double)fh->f)
    FH_NUM(last_seq);
    FH_NUM(cursor_saved);
    FH_NUM(last_event_ms);
    FH_NUM(last_frame_ms);
    FH_NUM(paused_since_ms);
    FH_NUM(stream_length);
    FH_NUM(frames);
    FH_NUM(bytes);
    FH_NUM(entries);
    FH_NUM(malformed);
    FH_NUM(oversize);
    FH_NUM(sync);
    FH_NUM(info);
    FH_NUM(unknown);
    FH_NUM(relay_errors);
    FH_NUM(too_big);
    FH_NUM(ops_without_record);
    FH_NUM(connects);
    FH_NUM(pauses);
    FH_NUM(trimmed);
#undef FH_NUM
    cJSON_AddNumberToObject(o, "dead_lettered", (double)s->c.dead_lettered);
    cJSON_AddNumberToObject(o, "restarts", (double)s->c.restarts);
    if (s->last_error[0] != '\0')
        cJSON_AddStringToObject(o, "last_error", s->last_error);
    else
        cJSON_AddNullToObject(o, "last_error");
}

int
ctl_print_json(FILE *out, const struct stats_snapshot *snap,
               const char *segment_name, const struct stats_group *grp)
{
    cJSON *root, *sup, *bounds, *workers, *total, *group;
    struct stats_counters sum;
    char *text;

    memset(&sum, 0, sizeof(sum));
    if ((root = cJSON_CreateObject()) == NULL)
        return -1;
    sup = cJSON_AddObjectToObject(root, "supervisor");
    cJSON_AddNumberToObject(sup, "pid", snap->hdr.supervisor_pid);
    cJSON_AddNumberToObject(sup, "started_ms", (double)snap->hdr.started_ms);
    cJSON_AddNumberToObject(sup, "generation", snap->hdr.generation);
    cJSON_AddNumberToObject(sup, "workers_wanted", snap->hdr.workers_wanted);
    cJSON_AddStringToObject(sup, "stream", snap->hdr.stream);
    cJSON_AddStringToObject(sup, "group", snap->hdr.group);
    cJSON_AddStringToObject(sup, "redis_url", snap->hdr.redis_url);
    cJSON_AddStringToObject(sup, "segment", segment_name);
    cJSON_AddNumberToObject(root, "taken_ms", (double)snap->taken_ms);
    /* each worker's latency_ms.histogram[i] counts the commits below
     * bound i; the last (null) bucket is the overflow */
    bounds = cJSON_AddArrayToObject(root, "latency_bucket_upper_ms");
    for (unsigned b = 0; b < STATS_HIST_BUCKETS; b++)
        cJSON_AddItemToArray(
            bounds,
            b == STATS_HIST_BUCKETS - 1
                ? cJSON_CreateNull()
                : cJSON_CreateNumber((double)stats_hist_bucket_upper_ms(b)));

    workers = cJSON_AddArrayToObject(root, "workers");
    for (int i = 0; i < STATS_MAX_SLOTS; i++) {
        const struct stats_slot *s = &snap->slots[i];
        cJSON *w, *lat, *hist;

        if (!stats_slot_used(s))
            continue;
        counters_add(&sum, &s->c);
        w = cJSON_CreateObject();
        cJSON_AddItemToArray(workers, w);
        cJSON_AddStringToObject(w, "name", s->name);
        cJSON_AddStringToObject(w, "pipeline", s->pipeline);
        cJSON_AddNumberToObject(w, "slot", i);
        cJSON_AddStringToObject(
            w, "state",
            s->state == WORKER_EMPTY
                ? "retired"
                : worker_state_name((enum worker_state)s->state));
        cJSON_AddNumberToObject(w, "pid", s->pid);
        cJSON_AddNumberToObject(w, "started_ms", (double)s->started_ms);
        cJSON_AddNumberToObject(w, "heartbeat_ms", (double)s->heartbeat_ms);
        cJSON_AddNumberToObject(w, "last_batch_size", s->last_batch_size);
        cJSON_AddNumberToObject(w, "last_batch_us", (double)s->last_batch_us);
        json_counters(w, &s->c);
        lat = cJSON_AddObjectToObject(w, "latency_ms");
        cJSON_AddNumberToObject(
            lat, "p50", (double)stats_hist_quantile(s->latency_hist, 0.5));
        cJSON_AddNumberToObject(
            lat, "p90", (double)stats_hist_quantile(s->latency_hist, 0.9));
        cJSON_AddNumberToObject(
            lat, "p99", (double)stats_hist_quantile(s->latency_hist, 0.99));
        cJSON_AddNumberToObject(lat, "sum", (double)s->latency_sum_ms);
        hist = cJSON_AddArrayToObject(lat, "histogram");
        for (unsigned b = 0; b < STATS_HIST_BUCKETS; b++)
            cJSON_AddItemToArray(
                hist, cJSON_CreateNumber((double)s->latency_hist[b]));
        if (s->last_error[0] != '\0') {
            cJSON_AddStringToObject(w, "last_error", s->last_error);
            cJSON_AddNumberToObject(w, "last_error_ms",
                                    (double)s->last_error_ms);
        } else {
            cJSON_AddNullToObject(w, "last_error");
        }
    }
    total = cJSON_AddObjectToObject(root, "total");
    json_counters(total, &sum);
    json_pipelines(root, snap);
    json_firehose(root, &snap->firehose);

    if (grp != NULL) {
        group = cJSON_AddObjectToObject(root, "group");
        if (grp->have_group) {
            cJSON_AddNumberToObject(group, "length", (double)grp->gi.length);
            cJSON_AddNumberToObject(group, "pending", (double)grp->gi.pending);
            if (grp->gi.lag >= 0)
                cJSON_AddNumberToObject(group, "lag", (double)grp->gi.lag);
            else
                cJSON_AddNullToObject(group, "lag");
            cJSON_AddNumberToObject(group, "consumers",
                                    (double)grp->gi.consumers);
        } else {
            cJSON_AddStringToObject(group, "error", grp->gi.error);
        }
    }
    text = cJSON_Print(root);
    cJSON_Delete(root);
    if (text == NULL)
        return -1;
    fprintf(out, "%s\n", text);
    free(text);
    return 0;
}
