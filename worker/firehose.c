/*
 * firehose.c: the firehose reader. It reads a relay's subscribeRepos
 * (relay_conn.c), decodes each frame (firehose_frame.c) and XADDs the
 * entry the workers read:
 *
 *   XADD <stream> * type commit|identity|account data <json> seq <seq>
 *
 * What it guarantees, and how:
 *
 *   - Nothing is lost between the relay and Redis. The cursor (the relay
 *     seq in cursor_key) is saved only after the XADDs it covers
 *     succeeded: it leads the next pipeline of XADDs, or goes alone
 *     within CURSOR_SAVE_MS when the relay is quiet. After a crash the
 *     reader starts from the larger of the cursor and the seq of the
 *     stream's newest entry, so it neither skips nor repeats what the
 *     stream holds. An error reply to any XADD stops the reading; the
 *     reader reconnects from what Redis holds.
 *   - Nothing unread is trimmed (stream_trim = acked, the default). Every
 *     TRIM_INTERVAL_MS the reader finds, over every consumer group of the
 *     stream, the oldest entry some group has not acked (its oldest
 *     pending entry, or the first one after its last delivered), and
 *     trims with XTRIM MINID ~ below that. When the stream still holds
 *     stream_maxlen entries, the reader stops reading the relay (it keeps
 *     days of events) and resumes from the cursor once the stream is
 *     under RESUME_FRACTION of the cap. stream_trim = maxlen is the old
 *     reader's XADD MAXLEN ~ stream_maxlen, which deletes entries
 *     whether they were read or not.
 *   - One reader per stream: a lock key (<stream>:reader-lock) with an
 *     expiry, renewed while the reader runs; a second reader refuses to
 *     start while another holds it.
 *   - Sharded streams (shards = N > 1, stream_key holding "{shard}"): each
 *     entry goes to the shard of its DID (a commit's repo, an identity's or
 *     account's did), stream_key with "{shard}" replaced by "{i}", i =
 *     pipeline_shard_of(did): one DID is always in one shard, and the
 *     XADDs go in relay order, so each DID's entries stay in order. All
 *     shards are written over the one Redis connection, so they must live
 *     on one server (a redis_url with "{shard}" is refused). Everything
 *     above holds per shard: the trimming and the cap (the reading pauses
 *     when any shard is at stream_maxlen and resumes when every one is
 *     under RESUME_FRACTION of it), the start-up look at the newest entry
 *     (of every shard: the highest seq). The cursor stays one key (the
 *     relay's seq is global), and the lock one key, on stream_key with
 *     "{shard}" as written. A bad frame has no DID to go by: its dead
 *     letter goes to the dead-letter stream of shard 0.
 *   - Bad frames lose nothing silently: a frame that can't be decoded or
 *     is over firehose_max_frame is counted, logged (at most one line a
 *     second) and written to the dead-letter stream with its reason, its
 *     seq and its bytes (the first RELAY_OVERSIZE_KEEP of an oversized
 *     one).
 *
 * The loop turns every LOOP_WAIT_MS at least: signals (flags set by
 * worker_signals_install()), the supervisor's pipe, the heartbeat and the
 * periodic work are looked at on every turn.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bsd/string.h>

#include "shared/backoff.h"
#include "shared/clock.h"
#include "shared/exitcode.h"
#include "shared/log.h"
#include "shared/pipeline.h"
#include "shared/redis_conn.h"
#include "worker/firehose.h"
#include "worker/firehose_frame.h"
#include "worker/relay_conn.h"
#include "worker/worker.h"

#define LOOP_WAIT_MS     100
#define FLUSH_MAX        256 /* XADDs in one pipeline */
#define GATHER_TURNS     64  /* service turns that may fill one pipeline */
#define CURSOR_SAVE_MS   200 /* a quiet relay: save the cursor alone */
#define TRIM_INTERVAL_MS 1000
#define RESUME_FRACTION  0.9
#define LOCK_TTL_MS      30000
#define LOCK_RENEW_MS    10000
#define WARN_INTERVAL_MS 1000 /* bad frames: at most one line a second */
#define REDIS_CONNECT_MS 2000
#define SHARDS_MAX       256 /* config.c's bound on shards */
#define SHARD_MARK       "{shard}"
#define KEY_MAX          (CONFIG_STR_MAX + 16)

struct reader {
    const struct config *cfg;
    struct stats_slot *slot;
    int parent_fd;
    struct redis_conn rc;
    int redis_ready;  /* connected, lock held, cursor known */
    int redis_broken; /* a reply failed: stop reading, reconnect */
    struct backoff redis_bo, relay_bo;
    int64_t redis_retry_at, relay_retry_at; /* monotonic ms */

    struct relay_conn *relay;
    struct frame_limits lim;
    struct frame_event ev;
    struct stats_firehose fh;  /* published every turn */
    uint64_t relay_bytes_base; /* fh.bytes before this connection */

    /* The streams written: stream_key itself, or one per shard. */
    unsigned nshards;
    char stream[SHARDS_MAX][KEY_MAX];
    char streams_name[KEY_MAX];       /* for logs: a:{0..N-1} */
    int64_t shard_len[SHARDS_MAX];    /* XLEN at the last check, -1: unknown */
    uint64_t since_check[SHARDS_MAX]; /* entries written since that XLEN */
    struct buf did;                   /* an escaped DID, unescaped */

    char dead_key[KEY_MAX];
    char lock_key[KEY_MAX];
    char token[200];
    int64_t lock_renew_at;

    /* The pipeline: a cursor SET may lead it, then XADDs. */
    unsigned queued;
    int64_t queued_seq[FLUSH_MAX];
    unsigned queued_shard[FLUSH_MAX];
    int set_queued;
    int64_t set_value;
    int64_t written_seq;   /* highest seq whose XADD succeeded */
    int64_t last_flush_ms; /* the last pipeline that carried XADDs */

    int paused;
    int cap_check; /* the cap may be reached: check before more */
    int64_t next_trim_at;
    int64_t last_frame_at; /* monotonic, for relay_idle_timeout */

    int64_t warn_at; /* monotonic: when a bad-frame line may go */
    unsigned warn_suppressed;

    int64_t next_log_at;
    uint64_t log_frames;
    int64_t log_at;
};

static struct stats_slot private_slot;

/* key with every "{shard}" replaced by with, into out. 0, or -1 when it
 * does not fit. */
static int
shard_key(char *out, size_t outlen, const char *key, const char *with)
{
    size_t at = 0, wlen = strlen(with);
    const char *p = key, *hit;

    while ((hit = strstr(p, SHARD_MARK)) != NULL) {
        size_t head = (size_t)(hit - p);
        if (at + head + wlen >= outlen)
            return -1;
        memcpy(out + at, p, head);
        memcpy(out + at + head, with, wlen);
        at += head + wlen;
        p = hit + strlen(SHARD_MARK);
    }
    if (at + strlen(p) >= outlen)
        return -1;
    strlcpy(out + at, p, outlen - at);
    return 0;
}

/* The keys the reader writes: one stream, or one per shard, and the
 * dead-letter stream. 0, or an exit code (logged). */
static int
reader_keys(struct reader *r)
{
    const struct config *cfg = r->cfg;
    char dead[KEY_MAX], tag[32];
    /* config_dead_letter_stream() writes into dead only when it makes the
     * name (dead_letter_stream empty) */
    const char *d = config_dead_letter_stream(cfg, dead, sizeof(dead));

    if (d != dead)
        strlcpy(dead, d, sizeof(dead));
    r->nshards = cfg->shards > 1 ? (unsigned)cfg->shards : 1;
    if (r->nshards > SHARDS_MAX) {
        log_error("firehose: shards = %u: at most %d", r->nshards, SHARDS_MAX);
        return EXIT_CONFIG;
    }
    if (r->nshards == 1) {
        strlcpy(r->stream[0], cfg->stream_key, sizeof(r->stream[0]));
        strlcpy(r->streams_name, cfg->stream_key, sizeof(r->streams_name));
        strlcpy(r->dead_key, dead, sizeof(r->dead_key));
        return 0;
    }
    if (strstr(cfg->stream_key, SHARD_MARK) == NULL) {
        log_error("firehose: stream_key: '%s' has no %s for the shard's "
                  "number (shards = %u)",
                  cfg->stream_key, SHARD_MARK, r->nshards);
        return EXIT_CONFIG;
    }
    if (strstr(cfg->redis_url, SHARD_MARK) != NULL) {
        log_error("firehose: redis_url holds %s: the reader writes every "
                  "shard over one connection, so the shards must live on "
                  "one Redis server (shards = %u)",
                  SHARD_MARK, r->nshards);
        return EXIT_CONFIG;
    }
    for (unsigned s = 0; s < r->nshards; s++) {
        snprintf(tag, sizeof(tag), "{%u}", s);
        if (shard_key(r->stream[s], sizeof(r->stream[s]), cfg->stream_key,
                      tag) < 0) {
            log_error("firehose: stream_key: too long for shard %u", s);
            return EXIT_CONFIG;
        }
    }
    snprintf(tag, sizeof(tag), "{0..%u}", r->nshards - 1);
    /* a bad frame has no DID to choose a shard by: shard 0's dead letters */
    if (shard_key(r->streams_name, sizeof(r->streams_name), cfg->stream_key,
                  tag) < 0 ||
        shard_key(r->dead_key, sizeof(r->dead_key), dead, "{0}") < 0) {
        log_error("firehose: stream_key: too long");
        return EXIT_CONFIG;
    }
    return 0;
}

/* ---- the stats slot ------------------------------------------------- */

/* Publish the counters, the state and the heartbeat. Can't fail. */
static void
reader_publish(struct reader *r, enum worker_state st)
{
    r->fh.bytes = r->relay_bytes_base + relay_conn_bytes(r->relay);
    stats_slot_write_begin(r->slot);
    r->slot->state = (uint32_t)st;
    r->slot->heartbeat_ms = stats_now_ms();
    r->slot->c.entries_read = r->fh.frames;
    r->slot->c.events_applied = r->fh.entries;
    r->slot->fh = r->fh;
    stats_slot_write_end(r->slot);
}

static void
reader_set_error(struct reader *r, const char *msg)
{
    stats_slot_write_begin(r->slot);
    strlcpy(r->slot->last_error, msg, sizeof(r->slot->last_error));
    r->slot->last_error_ms = stats_now_ms();
    stats_slot_write_end(r->slot);
}

/* A bad-frame line, at most one a second; the rest are counted and
 * named in the next line. */
static void __attribute__((format(printf, 2, 3)))
reader_warn(struct reader *r, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    int64_t now = clock_mono_ms();

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    reader_set_error(r, msg);
    if (now < r->warn_at) {
        r->warn_suppressed++;
        return;
    }
    if (r->warn_suppressed > 0)
        log_warnx("firehose: %s (and %u more such lines not logged)", msg,
                  r->warn_suppressed);
    else
        log_warnx("firehose: %s", msg);
    r->warn_suppressed = 0;
    r->warn_at = now + WARN_INTERVAL_MS;
}

/* ---- Redis: commands, the pipeline, the cursor ----------------------- */

/* One command and its reply (the caller frees it); NULL when the
 * connection failed (r->redis_broken set). */
static redisReply *
reader_command(struct reader *r, int argc, const char **argv,
               const size_t *lens)
{
    redisReply *reply = redis_conn_command(&r->rc, argc, argv, lens);

    if (reply == NULL) {
        r->redis_broken = 1;
        log_warnx("firehose: redis: %s", r->rc.err);
    }
    return reply;
}

/*
 * Read the replies of everything the pipeline holds. The written seq
 * moves only over XADDs that succeeded, in order; the first error reply
 * stops it there and marks Redis broken, so that the reader reconnects
 * and starts again from what the stream holds. Returns 0 or -1.
 */
static int
reader_flush(struct reader *r)
{
    int rv = 0;

    if (r->set_queued) {
        redisReply *reply = redis_conn_reply(&r->rc);
        if (reply == NULL) {
            r->redis_broken = 1;
            log_warnx("firehose: redis: %s", r->rc.err);
            r->queued = 0;
            r->set_queued = 0;
            return -1;
        }
        if (reply->type == REDIS_REPLY_ERROR)
            log_warnx("firehose: saving the cursor in %s: %s",
                      r->cfg->cursor_key, reply->str);
        else
            r->fh.cursor_saved = r->set_value;
        freeReplyObject(reply);
        r->set_queued = 0;
    }
    for (unsigned i = 0; i < r->queued; i++) {
        redisReply *reply = redis_conn_reply(&r->rc);
        if (reply == NULL) {
            r->redis_broken = 1;
            log_warnx("firehose: redis: %s", r->rc.err);
            rv = -1;
            break;
        }
        if (reply->type == REDIS_REPLY_ERROR) {
            if (rv == 0)
                log_error("firehose: XADD to %s failed: %s; stopping the "
                          "reading, resuming from seq %lld",
                          r->stream[r->queued_shard[i]], reply->str,
                          (long long)r->written_seq);
            r->redis_broken = 1;
            rv = -1;
        } else if (rv == 0) {
            r->written_seq = r->queued_seq[i];
            r->fh.entries++;
        }
        freeReplyObject(reply);
    }
    if (r->queued > 0)
        r->last_flush_ms =
            clock_mono_ms(); /* a quiet relay is timed from here */
    r->queued = 0;
    if (rv == 0)
        r->fh.last_seq = r->written_seq;
    return rv;
}

/* Queue SET cursor_key <written seq> when it moved (it then leads the
 * next pipeline). */
static void
reader_queue_cursor(struct reader *r)
{
    char v[24];
    const char *argv[3] = {"SET", r->cfg->cursor_key, v};
    size_t lens[3];

    if (r->set_queued || r->written_seq <= r->fh.cursor_saved ||
        r->written_seq <= 0)
        return;
    snprintf(v, sizeof(v), "%lld", (long long)r->written_seq);
    for (int i = 0; i < 3; i++)
        lens[i] = strlen(argv[i]);
    if (redis_conn_append(&r->rc, 3, argv, lens) < 0) {
        r->redis_broken = 1;
        return;
    }
    r->set_queued = 1;
    r->set_value = r->written_seq;
}

/* Queue the XADD of the decoded event into shard s. */
static int
reader_queue_entry(struct reader *r, const struct frame_event *ev, unsigned s)
{
    char seq[24], maxlen[24];
    const char *argv[12];
    size_t lens[12];
    int n = 0;

    if (r->queued == 0)
        reader_queue_cursor(r);
    snprintf(seq, sizeof(seq), "%lld", (long long)ev->seq);
    argv[n++] = "XADD";
    argv[n++] = r->stream[s];
    if (strcmp(r->cfg->stream_trim, "maxlen") == 0 &&
        r->cfg->stream_maxlen > 0) {
        snprintf(maxlen, sizeof(maxlen), "%ld", r->cfg->stream_maxlen);
        argv[n++] = "MAXLEN";
        argv[n++] = "~";
        argv[n++] = maxlen;
    }
    argv[n++] = "*";
    argv[n++] = "type";
    argv[n++] = ev->type;
    argv[n++] = "data";
    argv[n] = ev->data.p;
    lens[n++] = ev->data.len;
    argv[n++] = "seq";
    argv[n++] = seq;
    for (int i = 0; i < n; i++)
        if (argv[i] != ev->data.p)
            lens[i] = strlen(argv[i]);
    if (redis_conn_append(&r->rc, n, argv, lens) < 0) {
        r->redis_broken = 1;
        log_warnx("firehose: redis: %s", r->rc.err);
        return -1;
    }
    r->queued_shard[r->queued] = s;
    r->queued_seq[r->queued++] = ev->seq;
    if (r->queued == FLUSH_MAX)
        return reader_flush(r);
    return 0;
}

/* Write a frame that is skipped to the dead-letter stream. */
static void
reader_dead_letter(struct reader *r, const char *reason, int64_t seq,
                   const uint8_t *msg, size_t len)
{
    char seqs[24], when[24];
    const char *argv[] = {
        "XADD",           r->dead_key, "*",  "source", "firehose", "reason",
        reason,           "seq",       seqs, "time",   when,       "frame",
        (const char *)msg};
    size_t lens[13];
    redisReply *reply;

    if (reader_flush(r) < 0)
        return;
    if (seq >= 0)
        snprintf(seqs, sizeof(seqs), "%lld", (long long)seq);
    else
        seqs[0] = '\0';
    snprintf(when, sizeof(when), "%lld", (long long)stats_now_ms());
    for (int i = 0; i < 12; i++)
        lens[i] = strlen(argv[i]);
    lens[12] = len;
    if ((reply = reader_command(r, 13, argv, lens)) == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR)
        log_warnx("firehose: dead letter to %s: %s", r->dead_key, reply->str);
    else {
        stats_slot_write_begin(r->slot);
        r->slot->c.dead_lettered++;
        stats_slot_write_end(r->slot);
    }
    freeReplyObject(reply);
}

/* ---- the shard of an entry -------------------------------------------- */

static int
hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * The DID of a decoded entry, into *did and *len: the first value of its
 * JSON data, as firehose_frame.c writes it ({"repo":"did..." for a commit,
 * {"did":"..." for an identity or an account). A DID has nothing to
 * escape, so it is the bytes between the quotes; otherwise it is unescaped
 * into r->did (dagcbor.c escapes only ASCII: \" \\ \n \r \t \b \f and
 * \u00XX), so that the hash is of the DID's own bytes. Returns 0, or -1
 * when the data does not start so (never with frame_decode()'s output).
 */
static int
entry_did(struct reader *r, const struct frame_event *ev, const char **did,
          size_t *len)
{
    static const char commit[] = "{\"repo\":\"", other[] = "{\"did\":\"";
    const char *p = ev->data.p, *end = ev->data.p + ev->data.len, *q;
    int escaped = 0;

    if (ev->data.len > sizeof(commit) - 1 &&
        memcmp(p, commit, sizeof(commit) - 1) == 0)
        p += sizeof(commit) - 1;
    else if (ev->data.len > sizeof(other) - 1 &&
             memcmp(p, other, sizeof(other) - 1) == 0)
        p += sizeof(other) - 1;
    else
        return -1;
    for (q = p; q < end && *q != '"'; q++)
        if (*q == '\\') {
            escaped = 1;
            if (++q == end)
                return -1;
        }
    if (q == end)
        return -1;
    if (!escaped) {
        *did = p;
        *len = (size_t)(q - p);
        return 0;
    }
    r->did.len = 0;
    if (buf_reserve(&r->did, (size_t)(q - p)) < 0)
        return -1;
    for (; p < q; p++) {
        char c = *p;
        if (c == '\\') {
            switch (*++p) {
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'u': {
                int v = 0;
                if (q - p < 5)
                    return -1;
                for (int i = 1; i <= 4; i++) {
                    int d = hex_digit(p[i]);
                    if (d < 0)
                        return -1;
                    v = v * 16 + d;
                }
                if (v > 0x7f) /* never from dagcbor.c */
                    return -1;
                c = (char)v;
                p += 4;
                break;
            }
            default: /* \" \\ \/ */
                c = *p;
                break;
            }
        }
        r->did.p[r->did.len++] = c;
    }
    *did = r->did.p;
    *len = r->did.len;
    return 0;
}

/* The shard an entry goes to: 0 when the stream is not sharded, else its
 * DID's (pipeline_shard_of(), the contract of every producer). */
static unsigned
reader_shard(struct reader *r, const struct frame_event *ev)
{
    const char *did;
    size_t len;

    if (r->nshards <= 1)
        return 0;
    if (entry_did(r, ev, &did, &len) < 0) {
        /* frame_decode() always writes the DID first: not reached */
        reader_warn(r, "seq %lld: no DID found in the %s entry; written to %s",
                    (long long)ev->seq, ev->type, r->stream[0]);
        return 0;
    }
    return pipeline_shard_of(did, len, r->nshards);
}

/* ---- one message from the relay -------------------------------------- */

/* Log what a relay says about itself; count the kinds that make no
 * entry. */
static void
reader_note_frame(struct reader *r, const struct frame_event *ev)
{
    switch (ev->kind) {
    case FRAME_SYNC:
        r->fh.sync++;
        break;
    case FRAME_INFO:
        r->fh.info++;
        if (strcmp(ev->name, "OutdatedCursor") == 0)
            log_warnx("firehose: relay: OutdatedCursor (%s): the cursor is "
                      "older than the relay keeps; it goes on from its "
                      "oldest event, and the events in between are not in "
                      "the stream",
                      ev->message);
        else
            log_info("firehose: relay info %s: %s", ev->name, ev->message);
        break;
    case FRAME_ERROR:
        r->fh.relay_errors++;
        if (strcmp(ev->name, "FutureCursor") == 0)
            log_error("firehose: relay error FutureCursor (%s): the cursor "
                      "%lld is ahead of the relay's newest event, so it came "
                      "from another relay or the relay lost events; "
                      "retrying with backoff. To read from the live tail "
                      "instead, delete the key %s",
                      ev->message, (long long)r->written_seq,
                      r->cfg->cursor_key);
        else
            log_error("firehose: relay error %s: %s; reconnecting with "
                      "backoff",
                      ev->name, ev->message);
        break;
    default:
        r->fh.unknown++;
        reader_warn(r, "frame seq %lld of unknown type '%s' skipped",
                    (long long)ev->seq, ev->name);
        break;
    }
}

/* relay_message_fn: decode and queue one message. Returns 1 to close the
 * connection (Redis failed under it). */
static int
on_message(void *arg, const uint8_t *msg, size_t len, int oversize)
{
    struct reader *r = arg;
    const char *why = NULL;
    int64_t seq = -1;

    if (r->redis_broken)
        return 1;
    r->fh.frames++;
    r->fh.last_frame_ms = stats_now_ms();
    r->last_frame_at = clock_mono_ms();
    if (oversize) {
        r->fh.oversize++;
        (void)frame_seq(msg, len, &seq);
        reader_warn(r,
                    "frame seq %lld over firehose_max_frame (%ld bytes) "
                    "skipped; its first %zu bytes are in %s",
                    (long long)seq, r->cfg->firehose_max_frame, len,
                    r->dead_key);
        reader_dead_letter(r, "frame over firehose_max_frame", seq, msg, len);
        return r->redis_broken;
    }
    if (frame_decode(msg, len, &r->lim, &r->ev, &why) < 0) {
        r->fh.malformed++;
        reader_warn(r, "malformed frame seq %lld (%zu bytes) skipped: %s",
                    (long long)r->ev.seq, len, why);
        reader_dead_letter(r, why, r->ev.seq, msg, len);
        return r->redis_broken;
    }
    if (r->ev.time_ms > 0)
        r->fh.last_event_ms = r->ev.time_ms;
    if (r->ev.type == NULL) {
        reader_note_frame(r, &r->ev);
        /* an error frame ends the stream: reconnect with backoff */
        return r->ev.kind == FRAME_ERROR;
    }
    int64_t newest =
        r->queued > 0 ? r->queued_seq[r->queued - 1] : r->written_seq;
    if (r->ev.seq >= 0 && r->ev.seq <= newest) {
        log_debug("firehose: seq %lld again (the stream has up to %lld): "
                  "skipped",
                  (long long)r->ev.seq, (long long)newest);
        return 0;
    }
    if (r->ev.too_big) {
        r->fh.too_big++;
        reader_warn(r,
                    "commit seq %lld flagged tooBig: its ops carry no "
                    "records",
                    (long long)r->ev.seq);
    }
    r->fh.ops_without_record += r->ev.ops_without_record;
    unsigned s = reader_shard(r, &r->ev);
    if (reader_queue_entry(r, &r->ev, s) < 0)
        return 1;
    /* At the cap of its shard (acked trimming): stop here, before the next
     * frame, and let the loop check the streams (the frames not read are
     * read again from the cursor). */
    r->since_check[s]++;
    if (strcmp(r->cfg->stream_trim, "acked") == 0 &&
        r->cfg->stream_maxlen > 0 && r->shard_len[s] >= 0 &&
        r->shard_len[s] + (int64_t)r->since_check[s] >= r->cfg->stream_maxlen) {
        r->cap_check = 1;
        return 1;
    }
    return 0;
}

/* ---- the lock, the cursor, trimming ----------------------------------- */

/* 1 when the lock token "host:pid:ms" names a process of this host that
 * no longer runs (a reader killed with -9), 0 otherwise. */
static int
holder_gone(const char *token)
{
    char host[128], mine[128];
    const char *colon = strrchr(token, ':');
    long pid;

    if (colon == NULL || gethostname(mine, sizeof(mine)) < 0)
        return 0;
    mine[sizeof(mine) - 1] = '\0';
    const char *pidp = colon;
    while (pidp > token && pidp[-1] != ':')
        pidp--;
    if (pidp == token || (size_t)(pidp - 1 - token) >= sizeof(host))
        return 0;
    memcpy(host, token, (size_t)(pidp - 1 - token));
    host[pidp - 1 - token] = '\0';
    pid = strtol(pidp, NULL, 10);
    if (strcmp(host, mine) != 0 || pid <= 1 || pid == (long)getpid())
        return 0;
    return kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

/* Take the reader lock, or renew it. Returns 0, or -1 (logged) when
 * another reader holds it or Redis failed. */
static int
reader_lock(struct reader *r, int renew)
{
    static const char renew_script[] =
        "if redis.call('get', KEYS[1]) == ARGV[1] then "
        "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0";
    char ttl[24];
    redisReply *reply;

    snprintf(ttl, sizeof(ttl), "%d", LOCK_TTL_MS);
    if (renew) {
        const char *argv[] = {"EVAL",      renew_script, "1",
                              r->lock_key, r->token,     ttl};
        size_t lens[6];
        for (int i = 0; i < 6; i++)
            lens[i] = strlen(argv[i]);
        if ((reply = reader_command(r, 6, argv, lens)) == NULL)
            return -1;
        int held = reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
        freeReplyObject(reply);
        if (held)
            return 0;
        log_warnx("firehose: the reader lock %s expired under us; taking "
                  "it again",
                  r->lock_key);
    }
    const char *argv[] = {"SET", r->lock_key, r->token, "NX", "PX", ttl};
    size_t lens[6];
    for (int i = 0; i < 6; i++)
        lens[i] = strlen(argv[i]);
    if ((reply = reader_command(r, 6, argv, lens)) == NULL)
        return -1;
    int ok = reply->type == REDIS_REPLY_STATUS;
    freeReplyObject(reply);
    if (ok)
        return 0;

    char holder[160] = "?";
    long long left = -1;
    const char *gargv[] = {"GET", r->lock_key};
    size_t glens[] = {3, strlen(r->lock_key)};
    if ((reply = reader_command(r, 2, gargv, glens)) != NULL) {
        if (reply->type == REDIS_REPLY_STRING)
            strlcpy(holder, reply->str, sizeof(holder));
        freeReplyObject(reply);
    }
    const char *pargv[] = {"PTTL", r->lock_key};
    size_t plens[] = {4, strlen(r->lock_key)};
    if ((reply = reader_command(r, 2, pargv, plens)) != NULL) {
        if (reply->type == REDIS_REPLY_INTEGER)
            left = reply->integer;
        freeReplyObject(reply);
    }
    if (strcmp(holder, r->token) == 0) {
        /* ours already: Redis came back from a snapshot taken while we
         * held it */
        log_info("firehose: the reader lock %s is still ours", r->lock_key);
        return reader_lock(r, 1);
    }
    if (holder_gone(holder)) {
        static const char swap_script[] =
            "if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) end "
            "return 0";
        const char *sargv[] = {"EVAL", swap_script, "1", r->lock_key,
                               holder, r->token,    ttl};
        size_t slens[7];
        for (int i = 0; i < 7; i++)
            slens[i] = strlen(sargv[i]);
        if ((reply = reader_command(r, 7, sargv, slens)) == NULL)
            return -1;
        ok = reply->type == REDIS_REPLY_STATUS;
        freeReplyObject(reply);
        if (ok) {
            log_notice("firehose: the reader lock %s was held by %s, a "
                       "process of this host that is gone: taken over",
                       r->lock_key, holder);
            return 0;
        }
    }
    log_error("firehose: another reader (%s) holds the lock %s for %lld ms "
              "more; two readers would write every event twice. Not "
              "starting: stop the other one first",
              holder, r->lock_key, left);
    return -1;
}

/* Give the lock back if it is still ours. */
static void
reader_unlock(struct reader *r)
{
    static const char del_script[] =
        "if redis.call('get', KEYS[1]) == ARGV[1] then "
        "return redis.call('del', KEYS[1]) end return 0";
    const char *argv[] = {"EVAL", del_script, "1", r->lock_key, r->token};
    size_t lens[5];
    redisReply *reply;

    for (int i = 0; i < 5; i++)
        lens[i] = strlen(argv[i]);
    if ((reply = reader_command(r, 5, argv, lens)) != NULL)
        freeReplyObject(reply);
}

/* An integer reply or string reply holding one; -1 otherwise. */
static long long
reply_ll(const redisReply *reply)
{
    if (reply == NULL)
        return -1;
    if (reply->type == REDIS_REPLY_INTEGER)
        return reply->integer;
    if (reply->type == REDIS_REPLY_STRING) {
        char *end;
        long long v = strtoll(reply->str, &end, 10);
        return end != reply->str && *end == '\0' ? v : -1;
    }
    return -1;
}

/* The seq of the newest entry of stream (0 when it has none) into
 * *seq. 0, or -1 when Redis failed. */
static int
reader_newest_seq(struct reader *r, const char *stream, long long *seq)
{
    const char *xargv[] = {"XREVRANGE", stream, "+", "-", "COUNT", "1"};
    size_t xlens[6];
    redisReply *reply;

    *seq = 0;
    for (int i = 0; i < 6; i++)
        xlens[i] = strlen(xargv[i]);
    if ((reply = reader_command(r, 6, xargv, xlens)) == NULL)
        return -1;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
        reply->element[0]->type == REDIS_REPLY_ARRAY &&
        reply->element[0]->elements == 2) {
        const redisReply *f = reply->element[0]->element[1];
        for (size_t i = 0; f->type == REDIS_REPLY_ARRAY && i + 1 < f->elements;
             i += 2)
            if (f->element[i]->type == REDIS_REPLY_STRING &&
                strcmp(f->element[i]->str, "seq") == 0)
                *seq = reply_ll(f->element[i + 1]);
    }
    freeReplyObject(reply);
    return 0;
}

/* Where to start: the larger of the saved cursor and the seq of the
 * stream's newest entry (an XADD whose cursor save a crash lost); with
 * shards, the highest seq among the newest entries of every shard (the
 * XADDs go in relay order, so no shard holds a seq past it missing from
 * another). */
static int
reader_read_cursor(struct reader *r)
{
    const char *gargv[] = {"GET", r->cfg->cursor_key};
    size_t glens[] = {3, strlen(r->cfg->cursor_key)};
    redisReply *reply;
    long long cursor = 0, newest = 0;
    unsigned newest_in = 0;

    if ((reply = reader_command(r, 2, gargv, glens)) == NULL)
        return -1;
    if (reply->type == REDIS_REPLY_STRING && (cursor = reply_ll(reply)) < 0) {
        log_warnx("firehose: %s holds '%s', not a seq; ignoring it",
                  r->cfg->cursor_key, reply->str);
        cursor = 0;
    }
    freeReplyObject(reply);
    for (unsigned s = 0; s < r->nshards; s++) {
        long long seq;
        if (reader_newest_seq(r, r->stream[s], &seq) < 0)
            return -1;
        if (seq > newest) {
            newest = seq;
            newest_in = s;
        }
    }
    if (newest > cursor) {
        if (r->nshards > 1)
            log_info("firehose: the shards' newest entry has seq %lld (in "
                     "%s), past the saved cursor %lld: going on from there",
                     newest, r->stream[newest_in], cursor);
        else
            log_info("firehose: the stream's newest entry has seq %lld, past "
                     "the saved cursor %lld: going on from there",
                     newest, cursor);
        cursor = newest;
    }
    r->written_seq = cursor > 0 ? cursor : 0;
    r->fh.cursor_saved = cursor;
    r->fh.last_seq = r->written_seq;
    return 0;
}

struct stream_id {
    unsigned long long ms, seq;
};

static int
id_parse(const char *s, struct stream_id *id)
{
    return sscanf(s, "%llu-%llu", &id->ms, &id->seq) == 2 ? 0 : -1;
}

static int
id_less(const struct stream_id *a, const struct stream_id *b)
{
    return a->ms < b->ms || (a->ms == b->ms && a->seq < b->seq);
}

/*
 * The first ID that some consumer group on stream has not acked, into
 * *safe: per group its oldest pending entry, or the one after its last
 * delivered. Returns 1 with *safe set, 0 when the stream has no group (then
 * nothing is trimmed), -1 when Redis failed.
 */
static int
reader_oldest_unacked(struct reader *r, const char *stream,
                      struct stream_id *safe)
{
    const char *argv[] = {"XINFO", "GROUPS", stream};
    size_t lens[] = {5, 6, strlen(stream)};
    redisReply *reply;
    int found = 0;

    if ((reply = reader_command(r, 3, argv, lens)) == NULL)
        return -1;
    if (reply->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(reply); /* no stream yet */
        return 0;
    }
    for (size_t g = 0; g < reply->elements; g++) {
        const redisReply *m = reply->element[g];
        const char *name = NULL, *last = NULL;
        long long pending = 0;
        struct stream_id id;

        for (size_t i = 0; m->type == REDIS_REPLY_ARRAY && i + 1 < m->elements;
             i += 2) {
            const redisReply *k = m->element[i], *v = m->element[i + 1];
            if (k->type != REDIS_REPLY_STRING)
                continue;
            if (strcmp(k->str, "name") == 0 && v->type == REDIS_REPLY_STRING)
                name = v->str;
            else if (strcmp(k->str, "pending") == 0)
                pending = reply_ll(v);
            else if (strcmp(k->str, "last-delivered-id") == 0 &&
                     v->type == REDIS_REPLY_STRING)
                last = v->str;
        }
        if (name == NULL || last == NULL || id_parse(last, &id) < 0)
            continue;
        if (id.seq == ULLONG_MAX) {
            id.ms++;
            id.seq = 0;
        } else {
            id.seq++;
        }
        if (pending > 0) {
            const char *pargv[] = {"XPENDING", stream, name};
            size_t plens[] = {8, strlen(stream), strlen(name)};
            redisReply *p = reader_command(r, 3, pargv, plens);
            struct stream_id oldest;
            if (p == NULL) {
                freeReplyObject(reply);
                return -1;
            }
            if (p->type == REDIS_REPLY_ARRAY && p->elements >= 2 &&
                p->element[1]->type == REDIS_REPLY_STRING &&
                id_parse(p->element[1]->str, &oldest) == 0 &&
                id_less(&oldest, &id))
                id = oldest;
            freeReplyObject(p);
        }
        if (!found || id_less(&id, safe))
            *safe = id;
        found = 1;
    }
    freeReplyObject(reply);
    return found;
}

/* Trim what every group on stream acked (stream_trim = acked) and read
 * its length into *len (-1 when unknown). 0, or -1 when Redis failed. */
static int
reader_trim_one(struct reader *r, const char *stream, int64_t known,
                int64_t *len)
{
    long cap = r->cfg->stream_maxlen;
    struct stream_id safe = {0, 0};
    redisReply *reply;

    *len = -1;
    if (strcmp(r->cfg->stream_trim, "acked") == 0) {
        int rv = reader_oldest_unacked(r, stream, &safe);
        if (rv < 0)
            return -1;
        if (rv > 0) {
            char minid[48];
            /* Near the cap, trim exactly: "~" removes whole nodes of the
             * stream only (stream-node-max-entries, 100 by default), so
             * a small cap could otherwise never go under RESUME_FRACTION */
            int near_cap =
                cap > 0 &&
                (r->paused || (double)known >= RESUME_FRACTION * (double)cap);
            snprintf(minid, sizeof(minid), "%llu-%llu", safe.ms, safe.seq);
            const char *argv[] = {"XTRIM", stream, "MINID",
                                  near_cap ? "=" : "~", minid};
            size_t lens[5];
            for (int i = 0; i < 5; i++)
                lens[i] = strlen(argv[i]);
            if ((reply = reader_command(r, 5, argv, lens)) == NULL)
                return -1;
            if (reply->type == REDIS_REPLY_INTEGER)
                r->fh.trimmed += (uint64_t)reply->integer;
            freeReplyObject(reply);
        }
    }
    const char *largv[] = {"XLEN", stream};
    size_t llens[] = {4, strlen(stream)};
    if ((reply = reader_command(r, 2, largv, llens)) == NULL)
        return -1;
    *len = reply_ll(reply);
    freeReplyObject(reply);
    return 0;
}

/* Trim what every group acked (stream_trim = acked), read the streams'
 * lengths, and pause or resume the reading at the cap: pause when a
 * shard is at it, resume when every shard is under RESUME_FRACTION of
 * it. */
static void
reader_trim(struct reader *r)
{
    long cap = r->cfg->stream_maxlen;
    int64_t total = 0, fullest = -1;
    unsigned full = 0;

    if (reader_flush(r) < 0)
        return;
    for (unsigned s = 0; s < r->nshards; s++) {
        int64_t len;
        if (reader_trim_one(r, r->stream[s], r->shard_len[s], &len) < 0)
            return;
        r->shard_len[s] = len;
        r->since_check[s] = 0;
        if (len < 0 || total < 0)
            total = -1;
        else
            total += len;
        if (len > fullest) {
            fullest = len;
            full = s;
        }
    }
    r->fh.stream_length = total;

    if (strcmp(r->cfg->stream_trim, "acked") != 0 || cap <= 0 || total < 0)
        return;
    if (!r->paused && fullest >= cap) {
        r->paused = 1;
        r->fh.pauses++;
        r->fh.paused_since_ms = stats_now_ms();
        if (r->nshards > 1)
            log_warnx("firehose: paused: the shard %s holds %lld entries "
                      "that some consumer group has not acked, at its cap "
                      "stream_maxlen %ld (%lld in the %u shards); not "
                      "reading the relay until every shard is under %.0f%% "
                      "(resuming from seq %lld)",
                      r->stream[full], (long long)fullest, cap,
                      (long long)total, r->nshards, RESUME_FRACTION * 100,
                      (long long)r->written_seq);
        else
            log_warnx("firehose: paused: the stream holds %lld entries that "
                      "some consumer group has not acked, at its cap "
                      "stream_maxlen %ld; not reading the relay until it is "
                      "under %.0f%% (resuming from seq %lld)",
                      (long long)total, cap, RESUME_FRACTION * 100,
                      (long long)r->written_seq);
        relay_conn_close(r->relay);
        r->relay = NULL;
    } else if (r->paused && (double)fullest < RESUME_FRACTION * (double)cap) {
        if (r->nshards > 1)
            log_info("firehose: resuming after %lld s: the %u shards hold "
                     "%lld entries, the fullest %lld (cap %ld)",
                     (long long)(stats_now_ms() - r->fh.paused_since_ms) / 1000,
                     r->nshards, (long long)total, (long long)fullest, cap);
        else
            log_info("firehose: resuming after %lld s: the stream holds %lld "
                     "entries (cap %ld)",
                     (long long)(stats_now_ms() - r->fh.paused_since_ms) / 1000,
                     (long long)total, cap);
        r->paused = 0;
        r->fh.paused_since_ms = 0;
        r->relay_retry_at = 0;
    }
}

/* ---- connections -------------------------------------------------------- */

static void
reader_relay_close(struct reader *r)
{
    r->relay_bytes_base += relay_conn_bytes(r->relay);
    relay_conn_close(r->relay);
    r->relay = NULL;
}

/* Connect to Redis, take the lock, read the cursor. Returns 0, -1 to
 * retry later, or an exit code > 0 to end with. */
static int
reader_redis_up(struct reader *r)
{
    r->redis_broken = 0;
    r->queued = 0;
    r->set_queued = 0;
    if (redis_conn_connect(&r->rc) < 0) {
        log_warnx("firehose: redis: %s", r->rc.err);
        return -1;
    }
    if (reader_lock(r, 0) < 0)
        return r->redis_broken ? -1 : EXIT_TEMPFAIL;
    if (reader_read_cursor(r) < 0)
        return -1;
    r->lock_renew_at = clock_mono_ms() + LOCK_RENEW_MS;
    r->redis_ready = 1;
    backoff_reset(&r->redis_bo);
    return 0;
}

static void
reader_relay_open(struct reader *r)
{
    char err[256], url[CONFIG_STR_MAX];

    r->relay = relay_conn_open(r->cfg->relay_url, r->written_seq,
                               (size_t)r->cfg->firehose_max_frame, on_message,
                               r, err, sizeof(err));
    if (r->relay == NULL) {
        log_error("firehose: %s", err);
        r->relay_retry_at = clock_mono_ms() + backoff_next(&r->relay_bo);
        return;
    }
    r->fh.connects++;
    r->last_frame_at = clock_mono_ms();
    strlcpy(url, r->cfg->relay_url, sizeof(url));
    log_info("firehose: connecting to %s, cursor %lld", url,
             (long long)r->written_seq);
}

/* Sleep up to ms, watching the flags, the parent and the heartbeat. */
static void
reader_wait(struct reader *r, long ms, enum worker_state st)
{
    int64_t until = clock_mono_ms() + ms;

    while (!worker_stop_requested && !worker_quit_requested) {
        int64_t left = until - clock_mono_ms();
        reader_publish(r, st);
        if (worker_parent_gone(&r->parent_fd))
            worker_stop_requested = 1;
        if (left <= 0)
            break;
        (void)poll(NULL, 0, (int)(left < LOOP_WAIT_MS ? left : LOOP_WAIT_MS));
    }
}

/* The periodic line: frames/s, the seq and how far behind it is. */
static void
reader_log_rate(struct reader *r)
{
    int64_t now = clock_mono_ms();
    double secs = (double)(now - r->log_at) / 1000.0;

    if (r->cfg->stats_interval_ms <= 0 || now < r->next_log_at)
        return;
    if (secs > 0 && r->log_at > 0) {
        double behind =
            r->fh.last_event_ms > 0
                ? (double)(stats_now_ms() - r->fh.last_event_ms) / 1000.0
                : 0;
        log_info("firehose: %s, %.0f frames/s, %llu entries, seq %lld, "
                 "%.1f s behind the relay's clock, stream length %lld",
                 firehose_state_name((enum firehose_state)r->fh.state),
                 (double)(r->fh.frames - r->log_frames) / secs,
                 (unsigned long long)r->fh.entries, (long long)r->fh.last_seq,
                 behind, (long long)r->fh.stream_length);
    }
    r->log_frames = r->fh.frames;
    r->log_at = now;
    r->next_log_at = now + r->cfg->stats_interval_ms;
}

/* A graceful stop: what is queued is written, the cursor saved, the lock
 * given back. */
static void
reader_finish(struct reader *r)
{
    reader_relay_close(r);
    if (!r->redis_ready || r->redis_broken)
        return;
    if (reader_flush(r) == 0) {
        reader_queue_cursor(r);
        if (r->set_queued)
            (void)reader_flush(r);
    }
    if (!r->redis_broken)
        reader_unlock(r);
    log_info("firehose: stopped at seq %lld (cursor %s = %lld)",
             (long long)r->written_seq, r->cfg->cursor_key,
             (long long)r->fh.cursor_saved);
}

int
firehose_run(const struct firehose_options *opt)
{
    static struct reader r; /* large: not on the stack */
    const struct config *cfg = opt->cfg;
    struct redis_target target;
    char err[256], host[128];
    int rc = EXIT_OK;

    memset(&r, 0, sizeof(r));
    r.cfg = cfg;
    r.slot = opt->slot ? opt->slot : &private_slot;
    r.parent_fd = opt->parent_fd;
    worker_signals_install();
    if (cfg->relay_url[0] == '\0') {
        log_error("firehose: relay_url is empty: no relay to read");
        return EXIT_CONFIG;
    }
    if (redis_url_parse(cfg->redis_url, &target, err, sizeof(err)) < 0) {
        log_error("firehose: redis_url: %s", err);
        return EXIT_CONFIG;
    }
    redis_conn_init(&r.rc, &target, REDIS_CONNECT_MS, cfg->redis_timeout_ms);
    frame_limits_default(&r.lim);
    r.lim.max_frame = (size_t)cfg->firehose_max_frame;
    r.lim.max_block = (size_t)cfg->firehose_max_block;
    r.lim.max_items = (size_t)cfg->firehose_max_items;
    r.lim.max_depth = (unsigned)cfg->firehose_max_depth;
    if ((rc = reader_keys(&r)) != 0)
        return rc;
    for (unsigned s = 0; s < r.nshards; s++)
        r.shard_len[s] = -1;
    frame_event_init(&r.ev);
    /* one lock for every shard: on stream_key with its "{shard}" */
    snprintf(r.lock_key, sizeof(r.lock_key), "%s:reader-lock", cfg->stream_key);
    if (gethostname(host, sizeof(host)) < 0)
        strlcpy(host, "?", sizeof(host));
    host[sizeof(host) - 1] = '\0';
    snprintf(r.token, sizeof(r.token), "%.100s:%d:%lld", host, (int)getpid(),
             (long long)stats_now_ms());
    backoff_init(&r.redis_bo, cfg->reconnect_delay_ms,
                 cfg->reconnect_delay_max_ms);
    backoff_init(&r.relay_bo, cfg->reconnect_delay_ms,
                 cfg->reconnect_delay_max_ms);
    r.fh.stream_length = -1;
    r.fh.state = FIREHOSE_CONNECTING;
    stats_slot_write_begin(r.slot);
    r.slot->pid = (int32_t)getpid();
    r.slot->started_ms = stats_now_ms();
    stats_slot_write_end(r.slot);
    if (r.nshards > 1)
        log_info("firehose reader: relay %s into %s (%u shards by DID), "
                 "cursor in %s, trim %s (stream_maxlen %ld a shard), bad "
                 "frames to %s",
                 cfg->relay_url, r.streams_name, r.nshards, cfg->cursor_key,
                 cfg->stream_trim, cfg->stream_maxlen, r.dead_key);
    else
        log_info("firehose reader: relay %s into %s, cursor in %s, trim %s "
                 "(stream_maxlen %ld)",
                 cfg->relay_url, cfg->stream_key, cfg->cursor_key,
                 cfg->stream_trim, cfg->stream_maxlen);

    while (!worker_stop_requested && !worker_quit_requested) {
        int64_t now = clock_mono_ms();

        if (worker_reopen_logs) {
            worker_reopen_logs = 0;
            if (log_reopen() < 0)
                log_warn("cannot reopen the log");
        }
        if (worker_parent_gone(&r.parent_fd))
            break;
        if (r.redis_broken) {
            reader_relay_close(&r);
            redis_conn_close(&r.rc);
            r.redis_ready = 0;
            r.redis_broken = 0;
            r.redis_retry_at = now + backoff_next(&r.redis_bo);
        }
        if (!r.redis_ready) {
            r.fh.state = FIREHOSE_CONNECTING;
            if (now < r.redis_retry_at) {
                reader_wait(&r, r.redis_retry_at - now, WORKER_BACKOFF);
                continue;
            }
            int up = reader_redis_up(&r);
            if (up > 0) {
                rc = up;
                break;
            }
            if (up < 0) {
                redis_conn_close(&r.rc);
                r.redis_retry_at = clock_mono_ms() + backoff_next(&r.redis_bo);
                continue;
            }
            r.next_trim_at = 0;
        }
        if (now >= r.next_trim_at) {
            reader_trim(&r);
            r.next_trim_at = now + TRIM_INTERVAL_MS;
        }
        if (now >= r.lock_renew_at) {
            if (reader_flush(&r) == 0 && reader_lock(&r, 1) < 0 &&
                !r.redis_broken) {
                rc = EXIT_TEMPFAIL;
                break;
            }
            r.lock_renew_at = now + LOCK_RENEW_MS;
        }
        if (r.redis_broken)
            continue;
        if (r.paused) {
            r.fh.state = FIREHOSE_PAUSED;
            reader_log_rate(&r);
            reader_wait(&r, TRIM_INTERVAL_MS, WORKER_RUNNING);
            continue;
        }
        if (r.relay == NULL) {
            r.fh.state = FIREHOSE_CONNECTING;
            if (now < r.relay_retry_at) {
                reader_wait(&r, r.relay_retry_at - now, WORKER_BACKOFF);
                continue;
            }
            reader_relay_open(&r);
            continue;
        }

        relay_conn_service(r.relay, LOOP_WAIT_MS);
        /* Take what the socket already holds before the round trip to
         * Redis: one pipeline of up to FLUSH_MAX XADDs, not one a read */
        for (int i = 0;
             i < GATHER_TURNS && r.queued > 0 && r.queued < FLUSH_MAX &&
             relay_conn_state(r.relay) == RELAY_OPEN;
             i++) {
            uint64_t before = r.fh.frames;
            relay_conn_service(r.relay, 0);
            if (r.fh.frames == before)
                break;
        }
        if (reader_flush(&r) == 0 && r.queued == 0 &&
            clock_mono_ms() - r.last_flush_ms >= CURSOR_SAVE_MS) {
            reader_queue_cursor(&r);
            if (r.set_queued)
                (void)reader_flush(&r);
        }
        switch (relay_conn_state(r.relay)) {
        case RELAY_OPEN:
            if (r.fh.state != FIREHOSE_CONNECTED) {
                log_info("firehose: connected to %s", cfg->relay_url);
                r.fh.state = FIREHOSE_CONNECTED;
            }
            if (r.fh.frames > 0 && clock_mono_ms() - r.last_frame_at > 1000)
                backoff_reset(&r.relay_bo);
            if (clock_mono_ms() - r.last_frame_at >
                cfg->relay_idle_timeout_ms) {
                log_warnx("firehose: no frame from the relay for %ld ms "
                          "(relay_idle_timeout_ms); reconnecting",
                          cfg->relay_idle_timeout_ms);
                reader_relay_close(&r);
                r.relay_retry_at = 0;
            }
            break;
        case RELAY_CONNECTING:
            if (clock_mono_ms() - r.last_frame_at >
                cfg->relay_idle_timeout_ms) {
                log_warnx("firehose: connecting to %s took over %ld ms; "
                          "trying again",
                          cfg->relay_url, cfg->relay_idle_timeout_ms);
                reader_relay_close(&r);
                r.relay_retry_at = clock_mono_ms() + backoff_next(&r.relay_bo);
            }
            break;
        case RELAY_CLOSED: {
            if (r.cap_check) {
                /* on_message stopped at the stream's cap */
                r.cap_check = 0;
                reader_relay_close(&r);
                r.next_trim_at = 0;
                r.relay_retry_at = 0;
                break;
            }
            long delay = backoff_next(&r.relay_bo);
            log_warnx("firehose: %s: %s; reconnecting in %ld ms from seq "
                      "%lld",
                      cfg->relay_url, relay_conn_error(r.relay), delay,
                      (long long)r.written_seq);
            reader_set_error(&r, relay_conn_error(r.relay));
            reader_relay_close(&r);
            r.fh.state = FIREHOSE_CONNECTING;
            r.relay_retry_at = clock_mono_ms() + delay;
            break;
        }
        }
        reader_log_rate(&r);
        reader_publish(&r, WORKER_RUNNING);
    }
    if (worker_quit_requested) {
        reader_relay_close(&r);
    } else {
        reader_publish(&r, WORKER_DRAINING);
        reader_finish(&r);
    }
    r.fh.state = FIREHOSE_OFF;
    reader_publish(&r, WORKER_DEAD);
    redis_conn_close(&r.rc);
    frame_event_free(&r.ev);
    buf_free(&r.did);
    return rc;
}
