/*
 * replay.c: sluice-replay, Jetstream v1 JSON lines into stream entries.
 *
 * Jetstream is the ecosystem's common JSON form of the firehose:
 *
 *   {"did", "time_us", "kind": "commit",
 *    "commit": {"rev", "operation", "collection", "rkey", "record"?, "cid"?}}
 *   {"did", "time_us", "kind": "identity", "identity": {"did", "handle", ...}}
 *   {"did", "time_us", "kind": "account", "account": {"did", "active", ...}}
 *
 * Each line becomes one entry in the format the old readers wrote:
 *
 *   XADD key MAXLEN ~ 500000 * type <kind> data <json> seq <seq>
 *
 * with, for a commit, data = {"repo", "ops": [{"action", "path", "cid",
 * "record"}], "rev", "time"} (deletes carry no cid and record) and an empty
 * seq (Jetstream drops the relay's sequence number of commits); identity
 * and account events keep their object as data (identity always has a
 * "handle", null when absent) and their relay seq.
 *
 * A line that is not such an event is reported with its line number and
 * skipped; the exit status is then 1. XADDs are pipelined, optionally paced
 * at --rate lines per second.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "shared/exitcode.h"
#include "shared/redis_conn.h"

#define PIPELINE 1000

static volatile sig_atomic_t stop_requested;

static void
on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void
die(int code, const char *fmt, ...)
{
    va_list ap;

    fputs("sluice-replay: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

struct sender {
    struct redis_conn rc;
    const char *key;
    char maxlen[24];
    size_t inflight;
    uint64_t added;
};

/* Read the replies of everything queued. Exits on a fault. */
static void
sender_drain(struct sender *s)
{
    while (s->inflight > 0) {
        redisReply *r = redis_conn_reply(&s->rc);
        if (r == NULL)
            die(EXIT_TEMPFAIL, "redis: %s", s->rc.err);
        if (r->type == REDIS_REPLY_ERROR)
            die(EXIT_SOFTWARE, "XADD refused: %s", r->str);
        freeReplyObject(r);
        s->inflight--;
        s->added++;
    }
}

static void
sender_add(struct sender *s, const char *type, const char *data,
           const char *seq)
{
    const char *argv[12];
    size_t argvlen[12];
    int argc = 0;

    argv[argc++] = "XADD";
    argv[argc++] = s->key;
    if (s->maxlen[0] != '\0') {
        argv[argc++] = "MAXLEN";
        argv[argc++] = "~";
        argv[argc++] = s->maxlen;
    }
    argv[argc++] = "*";
    argv[argc++] = "type";
    argv[argc++] = type;
    argv[argc++] = "data";
    argv[argc++] = data;
    argv[argc++] = "seq";
    argv[argc++] = seq;
    for (int i = 0; i < argc; i++)
        argvlen[i] = strlen(argv[i]);
    if (redis_conn_append(&s->rc, argc, argv, argvlen) < 0)
        die(EXIT_TEMPFAIL, "redis: %s", s->rc.err);
    if (++s->inflight >= PIPELINE)
        sender_drain(s);
}

static void
format_iso_us(char *out, size_t len, int64_t us)
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    char base[24];

    gmtime_r(&secs, &tm);
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, len, "%s.%03dZ", base, (int)((us / 1000) % 1000));
}

/* Move member key of from (if present) into to, under the same name. */
static void
move_member(cJSON *from, cJSON *to, const char *key)
{
    cJSON *item = cJSON_DetachItemFromObjectCaseSensitive(from, key);
    if (item != NULL)
        cJSON_AddItemToObject(to, key, item);
}

/*
 * Turn one Jetstream line into an entry: *type (static), *data (malloc'ed,
 * the caller frees it) and seq. Returns 0, or -1 with a reason in why.
 */
static int
convert_line(const char *line, size_t len, const char **type, char **data,
             char *seq, size_t seqlen, char *why, size_t whylen)
{
    cJSON *root = cJSON_ParseWithLength(line, len), *out = NULL;
    const cJSON *did, *kind, *time_us;
    int rc = -1;

    *data = NULL;
    seq[0] = '\0';
    if (root == NULL || !cJSON_IsObject(root)) {
        snprintf(why, whylen, "not a JSON object");
        goto done;
    }
    did = cJSON_GetObjectItemCaseSensitive(root, "did");
    kind = cJSON_GetObjectItemCaseSensitive(root, "kind");
    time_us = cJSON_GetObjectItemCaseSensitive(root, "time_us");
    if (!cJSON_IsString(did) || strncmp(did->valuestring, "did:", 4) != 0) {
        snprintf(why, whylen, "no \"did\"");
        goto done;
    }
    if (!cJSON_IsString(kind)) {
        snprintf(why, whylen, "no \"kind\"");
        goto done;
    }

    if (strcmp(kind->valuestring, "commit") == 0) {
        cJSON *c = cJSON_GetObjectItemCaseSensitive(root, "commit");
        const cJSON *op, *coll, *rkey, *rev;
        cJSON *ops, *o;
        char path[1024], when[40];

        if (!cJSON_IsObject(c)) {
            snprintf(why, whylen, "commit without a \"commit\" object");
            goto done;
        }
        op = cJSON_GetObjectItemCaseSensitive(c, "operation");
        coll = cJSON_GetObjectItemCaseSensitive(c, "collection");
        rkey = cJSON_GetObjectItemCaseSensitive(c, "rkey");
        rev = cJSON_GetObjectItemCaseSensitive(c, "rev");
        if (!cJSON_IsString(op) || !cJSON_IsString(coll) ||
            !cJSON_IsString(rkey)) {
            snprintf(why, whylen,
                     "commit without operation, collection or rkey");
            goto done;
        }
        if (strcmp(op->valuestring, "create") != 0 &&
            strcmp(op->valuestring, "update") != 0 &&
            strcmp(op->valuestring, "delete") != 0) {
            snprintf(why, whylen, "unknown operation \"%.40s\"",
                     op->valuestring);
            goto done;
        }
        if (strcmp(op->valuestring, "delete") != 0 &&
            !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(c, "record"))) {
            snprintf(why, whylen, "%s without a record", op->valuestring);
            goto done;
        }
        snprintf(path, sizeof(path), "%s/%s", coll->valuestring,
                 rkey->valuestring);
        out = cJSON_CreateObject();
        ops = cJSON_CreateArray();
        o = cJSON_CreateObject();
        if (out == NULL || ops == NULL || o == NULL)
            die(EXIT_SOFTWARE, "out of memory");
        cJSON_AddStringToObject(out, "repo", did->valuestring);
        cJSON_AddItemToObject(out, "ops", ops);
        cJSON_AddItemToArray(ops, o);
        cJSON_AddStringToObject(o, "action", op->valuestring);
        cJSON_AddStringToObject(o, "path", path);
        if (strcmp(op->valuestring, "delete") != 0) {
            move_member(c, o, "cid");
            move_member(c, o, "record");
        }
        if (cJSON_IsString(rev))
            cJSON_AddStringToObject(out, "rev", rev->valuestring);
        if (cJSON_IsNumber(time_us)) {
            format_iso_us(when, sizeof(when), (int64_t)time_us->valuedouble);
            cJSON_AddStringToObject(out, "time", when);
        }
        *type = "commit";
    } else if (strcmp(kind->valuestring, "identity") == 0 ||
               strcmp(kind->valuestring, "account") == 0) {
        int is_identity = kind->valuestring[0] == 'i';
        cJSON *obj =
            cJSON_DetachItemFromObjectCaseSensitive(root, kind->valuestring);
        const cJSON *s;

        if (!cJSON_IsObject(obj)) {
            cJSON_Delete(obj);
            snprintf(why, whylen, "%s without an \"%s\" object",
                     kind->valuestring, kind->valuestring);
            goto done;
        }
        out = obj;
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(out, "did")))
            cJSON_AddStringToObject(out, "did", did->valuestring);
        if (is_identity &&
            cJSON_GetObjectItemCaseSensitive(out, "handle") == NULL)
            cJSON_AddNullToObject(out, "handle");
        if (!is_identity &&
            !cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(out, "active"))) {
            snprintf(why, whylen, "account without \"active\"");
            goto done;
        }
        s = cJSON_GetObjectItemCaseSensitive(out, "seq");
        if (cJSON_IsNumber(s) && s->valuedouble >= 0)
            snprintf(seq, seqlen, "%.0f", s->valuedouble);
        *type = is_identity ? "identity" : "account";
    } else {
        snprintf(why, whylen, "unknown kind \"%.40s\"", kind->valuestring);
        goto done;
    }
    *data = cJSON_PrintUnformatted(out);
    if (*data == NULL)
        die(EXIT_SOFTWARE, "out of memory");
    rc = 0;
done:
    cJSON_Delete(out);
    cJSON_Delete(root);
    return rc;
}

static int64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
usage(FILE *f)
{
    fputs("usage: sluice-replay [-u REDIS_URL] [-k STREAM] [--rate N] "
          "[--maxlen N] [-q] FILE.jsonl|-\n"
          "\n"
          "Load Jetstream v1 JSON lines (commit, identity, account) into a\n"
          "Redis stream, one entry per line: XADD key MAXLEN ~ N * type T\n"
          "data JSON seq S, in the format of the old firehose readers.\n"
          "\n"
          "  -u, --url URL     Redis (default $REDIS_URL or\n"
          "                    redis://localhost:6379); unix:///path works\n"
          "  -k, --key STREAM  stream key (default $REDIS_STREAM_KEY or\n"
          "                    firehose:events)\n"
          "  -r, --rate N      pace at N lines/s (default: as fast as "
          "possible)\n"
          "  -m, --maxlen N    MAXLEN ~ N on each XADD (default 500000; 0 =\n"
          "                    no trimming)\n"
          "  -q, --quiet       no summary\n"
          "  -h, --help        this text\n"
          "\n"
          "A line that is not a Jetstream event is reported on stderr with\n"
          "its line number and skipped; blank lines are ignored.\n"
          "Exit: 0 all lines loaded, 1 some lines skipped, 64 usage, 66 file\n"
          "unreadable, 75 Redis unreachable or lost, 70 XADD refused.\n",
          f);
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},
        {"key", required_argument, NULL, 'k'},
        {"rate", required_argument, NULL, 'r'},
        {"maxlen", required_argument, NULL, 'm'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *url = getenv("REDIS_URL");
    const char *key = getenv("REDIS_STREAM_KEY");
    const char *file;
    unsigned long long maxlen = 500000;
    double rate = 0;
    int quiet = 0, ch;
    struct sender s = {0};
    struct redis_target t;
    char err[256], *line = NULL, *end;
    size_t cap = 0;
    ssize_t len;
    uint64_t lineno = 0, bad = 0, n = 0;
    FILE *in;
    int64_t t0;

    if (url == NULL || *url == '\0')
        url = "redis://localhost:6379";
    if (key == NULL || *key == '\0')
        key = "firehose:events";
    while ((ch = getopt_long(argc, argv, "u:k:r:m:qh", opts, NULL)) != -1) {
        switch (ch) {
        case 'u':
            url = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'r':
            rate = strtod(optarg, &end);
            if (*end != '\0' || !(rate > 0))
                die(EXIT_USAGE, "--rate: not a positive number: %s", optarg);
            break;
        case 'm':
            errno = 0;
            maxlen = strtoull(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || *optarg == '\0' || *optarg == '-')
                die(EXIT_USAGE, "--maxlen: not a number: %s", optarg);
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    file = argv[optind];
    if (strcmp(file, "-") == 0) {
        in = stdin;
    } else if ((in = fopen(file, "r")) == NULL) {
        die(66, "%s: %s", file, strerror(errno));
    }

    if (redis_url_parse(url, &t, err, sizeof(err)) < 0)
        die(EXIT_USAGE, "-u: %s", err);
    redis_conn_init(&s.rc, &t, 5000, 30000);
    if (redis_conn_connect(&s.rc) < 0)
        die(EXIT_TEMPFAIL, "redis: %s", s.rc.err);
    s.key = key;
    if (maxlen > 0)
        snprintf(s.maxlen, sizeof(s.maxlen), "%llu", maxlen);

    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);
    signal(SIGPIPE, SIG_IGN);
    t0 = mono_us();
    while (!stop_requested && (len = getline(&line, &cap, in)) != -1) {
        const char *type;
        char *data, seq[32], why[160];

        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        if (convert_line(line, (size_t)len, &type, &data, seq, sizeof(seq), why,
                         sizeof(why)) < 0) {
            fprintf(stderr, "sluice-replay: %s:%" PRIu64 ": %s: skipped\n",
                    file, lineno, why);
            bad++;
            continue;
        }
        if (rate > 0) {
            int64_t due = t0 + (int64_t)((double)n * 1e6 / rate);
            int64_t now = mono_us();
            if (due > now + 2000) {
                sender_drain(&s);
                struct timespec ts = {(due - now) / 1000000,
                                      (long)((due - now) % 1000000) * 1000};
                nanosleep(&ts, NULL);
            }
        }
        sender_add(&s, type, data, seq);
        free(data);
        n++;
    }
    if (ferror(in))
        die(66, "%s: %s", file, strerror(errno));
    sender_drain(&s);
    redis_conn_close(&s.rc);
    free(line);
    if (in != stdin)
        fclose(in);
    if (!quiet)
        printf("sluice-replay: %" PRIu64 " entries added to %s, %" PRIu64
               " lines skipped, in %.2f s\n",
               s.added, key, bad, (double)(mono_us() - t0) / 1e6);
    return bad > 0 ? 1 : EXIT_OK;
}
