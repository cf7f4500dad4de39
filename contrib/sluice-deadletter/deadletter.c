/*
 * deadletter.c: sluice-deadletter, the operator's tool for the dead-letter
 * stream.
 *
 * A worker that gives up on an entry (malformed, refused by the sink, or
 * delivered more than max_deliveries times) XADDs it to the dead-letter
 * stream (<stream_key>:dead unless dead_letter_stream says otherwise) as
 *
 *   id <original ID> reason <text> deliveries <n> consumer <name>
 *   time <ISO 8601> f:<name> <value> f:<name> <value> ...
 *
 * (the original fields, in their order, prefixed with "f:"), and acks the
 * original. This tool lists and shows those entries, requeues them to the
 * main stream (the original fields in their original order, optionally
 * with some values replaced: the fix, and a field orig_id holding the ID
 * it first had, which workers take as its place in the order), and purges
 * them. A requeued entry is XADDed first and XDELed from the dead stream
 * only after the XADD succeeded, so a fault in between leaves a
 * duplicate, never a loss.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/config.h"
#include "shared/exitcode.h"
#include "shared/pipeline.h"
#include "shared/redis_conn.h"

#define MAX_SETS  16
#define PAGE_SIZE 100

struct field_set {
    const char *name; /* original field name (without "f:") */
    char *value;      /* malloc'ed */
    size_t len;
};

struct tool {
    struct redis_conn rc;
    const char *dead;
    const char *main_key;
    struct field_set sets[MAX_SETS];
    int nsets;
    int missing; /* IDs asked for that were not there */
};

static void
die(int code, const char *fmt, ...)
{
    va_list ap;

    fputs("sluice-deadletter: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

/* One command; exits on a connection fault or an error reply. The caller
 * frees the reply. */
static redisReply *
command(struct tool *t, int argc, const char **argv, const size_t *argvlen)
{
    redisReply *r = redis_conn_command(&t->rc, argc, argv, argvlen);
    if (r == NULL)
        die(EXIT_TEMPFAIL, "redis: %s", t->rc.err);
    if (r->type == REDIS_REPLY_ERROR)
        die(EXIT_SOFTWARE, "%s %s: %s", argv[0], argc > 1 ? argv[1] : "",
            r->str);
    return r;
}

static redisReply *
command_str(struct tool *t, int argc, const char **argv)
{
    size_t lens[16];
    for (int i = 0; i < argc && i < 16; i++)
        lens[i] = strlen(argv[i]);
    return command(t, argc, argv, lens);
}

/* The value of field name in an XRANGE entry's field array, or NULL. */
static const redisReply *
entry_field(const redisReply *fields, const char *name)
{
    for (size_t i = 0; i + 1 < fields->elements; i += 2)
        if (strcmp(fields->element[i]->str, name) == 0)
            return fields->element[i + 1];
    return NULL;
}

static const char *
field_str(const redisReply *fields, const char *name)
{
    const redisReply *v = entry_field(fields, name);
    return v != NULL && v->str != NULL ? v->str : "-";
}

/* XRANGE dead ID ID: the entry, or NULL when it is not there. The caller
 * frees *reply (set even when NULL is returned). */
static const redisReply *
fetch_one(struct tool *t, const char *id, redisReply **reply)
{
    const char *argv[] = {"XRANGE", t->dead, id, id};
    *reply = command_str(t, 4, argv);
    if ((*reply)->type != REDIS_REPLY_ARRAY || (*reply)->elements == 0)
        return NULL;
    return (*reply)->element[0];
}

/* Print at most width bytes of s on one line (newlines shown as spaces). */
static void
print_clipped(const char *s, size_t width)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n && i < width; i++)
        putchar(s[i] == '\n' || s[i] == '\t' ? ' ' : s[i]);
    if (n > width)
        fputs("...", stdout);
}

static void
cmd_list(struct tool *t, long limit)
{
    char start[64] = "-", count[24];
    long shown = 0;
    const char *argv[6];

    printf("%-20s %-20s %5s %-16s %-24s %s\n", "DEAD-ID", "ORIGINAL-ID",
           "DELIV", "CONSUMER", "TIME", "REASON");
    while (limit <= 0 || shown < limit) {
        long page =
            limit > 0 && limit - shown < PAGE_SIZE ? limit - shown : PAGE_SIZE;
        redisReply *r;
        snprintf(count, sizeof(count), "%ld", page);
        argv[0] = "XRANGE";
        argv[1] = t->dead;
        argv[2] = start;
        argv[3] = "+";
        argv[4] = "COUNT";
        argv[5] = count;
        r = command_str(t, 6, argv);
        if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
            freeReplyObject(r);
            break;
        }
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *e = r->element[i], *f = e->element[1];
            printf("%-20s %-20s %5s %-16s %-24s ", e->element[0]->str,
                   field_str(f, "id"), field_str(f, "deliveries"),
                   field_str(f, "consumer"), field_str(f, "time"));
            print_clipped(field_str(f, "reason"), 100);
            putchar('\n');
            shown++;
        }
        /* the next page starts just after the last ID: "(" exclusive */
        snprintf(start, sizeof(start), "(%s",
                 r->element[r->elements - 1]->element[0]->str);
        freeReplyObject(r);
    }
    printf("%ld dead letter(s) shown from %s\n", shown, t->dead);
}

static void
cmd_show(struct tool *t, const char *id)
{
    redisReply *r;
    const redisReply *e = fetch_one(t, id, &r), *f;

    if (e == NULL) {
        fprintf(stderr, "sluice-deadletter: %s: no such entry in %s\n", id,
                t->dead);
        t->missing++;
        freeReplyObject(r);
        return;
    }
    f = e->element[1];
    printf("dead-id:     %s\n", e->element[0]->str);
    printf("original-id: %s\n", field_str(f, "id"));
    printf("reason:      %s\n", field_str(f, "reason"));
    printf("deliveries:  %s\n", field_str(f, "deliveries"));
    printf("consumer:    %s\n", field_str(f, "consumer"));
    printf("time:        %s\n", field_str(f, "time"));
    printf("fields:\n");
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (strncmp(f->element[i]->str, "f:", 2) == 0)
            printf("  %s: %.*s\n", f->element[i]->str + 2,
                   (int)f->element[i + 1]->len, f->element[i + 1]->str);
    freeReplyObject(r);
}

/* XADD the original fields of dead entry e to the main stream (with the
 * --set replacements), then XDEL it. Returns 0, or -1 when the entry holds
 * no original fields (left alone). */
static int
requeue_entry(struct tool *t, const redisReply *e)
{
    const redisReply *f = e->element[1];
    const char **argv;
    size_t *lens, argc = 0;
    redisReply *r;
    char newid[64];

    argv = calloc(f->elements + 5, sizeof(*argv));
    lens = calloc(f->elements + 5, sizeof(*lens));
    if (argv == NULL || lens == NULL)
        die(EXIT_SOFTWARE, "out of memory");
    argv[argc] = "XADD";
    lens[argc++] = 4;
    argv[argc] = t->main_key;
    lens[argc++] = strlen(t->main_key);
    argv[argc] = "*";
    lens[argc++] = 1;
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *name = f->element[i], *val = f->element[i + 1];
        if (name->len < 2 || strncmp(name->str, "f:", 2) != 0)
            continue;
        argv[argc] = name->str + 2;
        lens[argc++] = name->len - 2;
        argv[argc] = val->str;
        lens[argc] = val->len;
        for (int k = 0; k < t->nsets; k++)
            if (strcmp(t->sets[k].name, name->str + 2) == 0) {
                argv[argc] = t->sets[k].value;
                lens[argc] = t->sets[k].len;
            }
        argc++;
    }
    /* its place in the order: the ID it first had (a dead letter of an
     * entry requeued before carries f:orig_id, copied above) */
    const redisReply *orig = entry_field(f, "id");
    if (argc > 3 && entry_field(f, "f:orig_id") == NULL && orig != NULL &&
        orig->str != NULL) {
        argv[argc] = "orig_id";
        lens[argc++] = 7;
        argv[argc] = orig->str;
        lens[argc++] = orig->len;
    }
    if (argc == 3) {
        fprintf(stderr,
                "sluice-deadletter: %s: no original fields (f:NAME); left "
                "in %s\n",
                e->element[0]->str, t->dead);
        free(argv);
        free(lens);
        return -1;
    }
    r = command(t, (int)argc, argv, lens);
    snprintf(newid, sizeof(newid), "%s", r->str != NULL ? r->str : "?");
    freeReplyObject(r);
    free(argv);
    free(lens);

    const char *del[] = {"XDEL", t->dead, e->element[0]->str};
    r = command_str(t, 3, del);
    freeReplyObject(r);
    printf("requeued %s (originally %s) to %s as %s\n", e->element[0]->str,
           field_str(f, "id"), t->main_key, newid);
    return 0;
}

static void
cmd_requeue(struct tool *t, char **ids, int nids, int all)
{
    long done = 0;

    if (all) {
        /* page from the start; every requeued entry leaves the stream,
         * one that can't be requeued is stepped over */
        char start[64] = "-";
        for (;;) {
            const char *argv[] = {"XRANGE", t->dead, start,
                                  "+",      "COUNT", "100"};
            redisReply *r = command_str(t, 6, argv);
            if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
                freeReplyObject(r);
                break;
            }
            for (size_t i = 0; i < r->elements; i++)
                done += requeue_entry(t, r->element[i]) == 0;
            snprintf(start, sizeof(start), "(%s",
                     r->element[r->elements - 1]->element[0]->str);
            freeReplyObject(r);
        }
    } else {
        for (int i = 0; i < nids; i++) {
            redisReply *r;
            const redisReply *e = fetch_one(t, ids[i], &r);
            if (e == NULL) {
                fprintf(stderr, "sluice-deadletter: %s: no such entry in %s\n",
                        ids[i], t->dead);
                t->missing++;
            } else if (requeue_entry(t, e) == 0) {
                done++;
            } else {
                t->missing++;
            }
            freeReplyObject(r);
        }
    }
    printf("%ld entr%s requeued to %s\n", done, done == 1 ? "y" : "ies",
           t->main_key);
}

static void
cmd_purge(struct tool *t, char **ids, int nids, int all)
{
    redisReply *r;

    if (all) {
        const char *argv[] = {"XTRIM", t->dead, "MAXLEN", "0"};
        r = command_str(t, 4, argv);
        printf("%lld entries purged from %s\n", r->integer, t->dead);
        freeReplyObject(r);
        return;
    }
    for (int i = 0; i < nids; i++) {
        const char *argv[] = {"XDEL", t->dead, ids[i]};
        r = command_str(t, 3, argv);
        if (r->integer == 0) {
            fprintf(stderr, "sluice-deadletter: %s: no such entry in %s\n",
                    ids[i], t->dead);
            t->missing++;
        } else {
            printf("purged %s\n", ids[i]);
        }
        freeReplyObject(r);
    }
}

/* Read a whole file into a malloc'ed buffer; exits on failure. */
static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0, got;

    if (f == NULL)
        die(66, "%s: %s", path, strerror(errno));
    do {
        if (n + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            if ((buf = realloc(buf, cap)) == NULL)
                die(EXIT_SOFTWARE, "out of memory");
        }
        got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
    } while (got > 0);
    if (ferror(f))
        die(66, "%s: %s", path, strerror(errno));
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void
usage(FILE *f)
{
    fputs("usage: sluice-deadletter [-c FILE [-p PIPELINE]] [-u REDIS_URL]\n"
          "                         [-k DEADSTREAM] [-m STREAM] COMMAND\n"
          "\n"
          "commands:\n"
          "  list [-n N]                 the dead letters, oldest first: dead "
          "ID,\n"
          "                              original ID, deliveries, consumer, "
          "time,\n"
          "                              reason (all of them, or the first N)\n"
          "  show ID                     one dead letter with its original "
          "fields\n"
          "  requeue [--set NAME=VALUE] ID...\n"
          "  requeue [--set NAME=VALUE] --all\n"
          "                              XADD the original fields (in their "
          "order)\n"
          "                              to the main stream, then XDEL the "
          "dead\n"
          "                              letter; --set replaces a field's "
          "value\n"
          "                              (VALUE @FILE: the file's contents), "
          "to\n"
          "                              requeue a fixed entry\n"
          "  purge ID... | purge --all   delete dead letters for good\n"
          "\n"
          "options:\n"
          "  -c, --config FILE   read redis_url, stream_key and "
          "dead_letter_stream\n"
          "                      from sluiced's config file (the environment\n"
          "                      REDIS_URL, REDIS_STREAM_KEY applies on top)\n"
          "  -p, --pipeline NAME the pipeline of a file of [pipeline NAME]\n"
          "                      sections whose settings count (NAME.N:\n"
          "                      shard N of a sharded one)\n"
          "  -u, --url URL       Redis (default: config, $REDIS_URL,\n"
          "                      redis://localhost:6379)\n"
          "  -k, --dead STREAM   the dead-letter stream (default: config's\n"
          "                      dead_letter_stream, or STREAM:dead)\n"
          "  -m, --main STREAM   where requeue writes (default: config's\n"
          "                      stream_key, firehose:events)\n"
          "  -h, --help          this text\n"
          "\n"
          "Exit: 0 done, 1 an ID was not found or had no fields, 64 usage,\n"
          "66 unreadable file, 75 Redis unreachable, 78 bad config file.\n",
          f);
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"url", required_argument, NULL, 'u'},
        {"dead", required_argument, NULL, 'k'},
        {"main", required_argument, NULL, 'm'},
        {"pipeline", required_argument, NULL, 'p'},
        {"count", required_argument, NULL, 'n'},
        {"set", required_argument, NULL, 's'},
        {"all", no_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    static struct config cfg;
    struct tool t = {0};
    const char *cfile = NULL, *url = NULL, *dead = NULL, *main_key = NULL;
    const char *pipeline = NULL;
    const char *cmd;
    char err[CONFIG_ERR_MAX], deadbuf[CONFIG_STR_MAX + 8], red[CONFIG_STR_MAX];
    struct redis_target target;
    long limit = 0;
    int all = 0, ch;

    /* "+" stops at the command; the command's own options come after */
    while ((ch = getopt_long(argc, argv, "+c:u:k:m:p:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            cfile = optarg;
            break;
        case 'u':
            url = optarg;
            break;
        case 'k':
            dead = optarg;
            break;
        case 'm':
            main_key = optarg;
            break;
        case 'p':
            pipeline = optarg;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    cmd = argv[optind];
    argc -= optind;
    argv += optind;
    optind = 0; /* GNU getopt: start over */
    while ((ch = getopt_long(argc, argv, "n:s:a", opts, NULL)) != -1) {
        switch (ch) {
        case 'n': {
            char *end;
            limit = strtol(optarg, &end, 10);
            if (*end != '\0' || limit <= 0)
                die(EXIT_USAGE, "-n: not a positive number: %s", optarg);
            break;
        }
        case 's': {
            char *eq = strchr(optarg, '=');
            struct field_set *s;
            if (eq == NULL || eq == optarg || t.nsets == MAX_SETS)
                die(EXIT_USAGE, "--set NAME=VALUE (at most %d)", MAX_SETS);
            s = &t.sets[t.nsets++];
            *eq = '\0';
            s->name = optarg;
            if (eq[1] == '@') {
                s->value = slurp(eq + 2, &s->len);
            } else if ((s->value = strdup(eq + 1)) == NULL) {
                die(EXIT_SOFTWARE, "out of memory");
            } else {
                s->len = strlen(s->value);
            }
            break;
        }
        case 'a':
            all = 1;
            break;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    argc -= optind;
    argv += optind;

    if (strcmp(cmd, "list") == 0) {
        if (argc != 0 || all || t.nsets)
            die(EXIT_USAGE, "list takes no IDs, --all or --set");
    } else if (strcmp(cmd, "show") == 0) {
        if (argc != 1 || all || t.nsets || limit)
            die(EXIT_USAGE, "show takes one ID");
    } else if (strcmp(cmd, "requeue") == 0 || strcmp(cmd, "purge") == 0) {
        if ((argc == 0) == !all || limit)
            die(EXIT_USAGE, "%s takes IDs or --all", cmd);
        if (t.nsets && strcmp(cmd, "purge") == 0)
            die(EXIT_USAGE, "purge takes no --set");
    } else {
        die(EXIT_USAGE,
            "unknown command \"%s\" (list, show, requeue, "
            "purge)",
            cmd);
    }

    if (pipeline != NULL && cfile == NULL)
        die(EXIT_USAGE, "-p needs the configuration file (-c)");
    if (pipeline != NULL) {
        if (pipeline_config_load(&cfg, cfile, pipeline, err, sizeof(err)) < 0)
            die(EXIT_CONFIG, "%s", err);
    } else {
        config_defaults(&cfg);
        if (cfile != NULL &&
            config_load_file(&cfg, cfile, err, sizeof(err)) < 0)
            die(EXIT_CONFIG, "%s", err);
        if (config_load_env(&cfg, err, sizeof(err)) < 0)
            die(EXIT_CONFIG, "%s", err);
    }
    if (url == NULL)
        url = cfg.redis_url;
    if (main_key == NULL)
        main_key = cfg.stream_key;
    if (dead == NULL) {
        if (cfg.dead_letter_stream[0] != '\0')
            dead = cfg.dead_letter_stream;
        else {
            snprintf(deadbuf, sizeof(deadbuf), "%s:dead", main_key);
            dead = deadbuf;
        }
    }
    t.dead = dead;
    t.main_key = main_key;
    if (redis_url_parse(url, &target, err, sizeof(err)) < 0)
        die(EXIT_USAGE, "%s: %s", config_redact_url(url, red, sizeof(red)),
            err);
    redis_conn_init(&t.rc, &target, 5000, 30000);
    if (redis_conn_connect(&t.rc) < 0)
        die(EXIT_TEMPFAIL, "redis %s: %s",
            config_redact_url(url, red, sizeof(red)), t.rc.err);

    if (strcmp(cmd, "list") == 0)
        cmd_list(&t, limit);
    else if (strcmp(cmd, "show") == 0)
        cmd_show(&t, argv[0]);
    else if (strcmp(cmd, "requeue") == 0)
        cmd_requeue(&t, argv, argc, all);
    else
        cmd_purge(&t, argv, argc, all);

    redis_conn_close(&t.rc);
    for (int k = 0; k < t.nsets; k++)
        free(t.sets[k].value);
    return t.missing > 0 ? 1 : EXIT_OK;
}
