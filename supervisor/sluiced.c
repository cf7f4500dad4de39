/*
 * sluiced.c: the command line of sluiced. It loads the configuration and
 * then becomes one of three things:
 *
 *   sluiced -c FILE                 the supervisor (supervisor.c), which
 *                                   forks PARALLEL_CONSUMERS workers
 *   sluiced -c FILE --worker NAME   one worker in the foreground, no
 *                                   supervisor (debugging, foreign
 *                                   supervisors)
 *   sluiced -c FILE --firehose      the firehose reader alone in the
 *                                   foreground (worker/firehose.c)
 *   sluiced -c FILE --init-schema   apply the sink's DDL and exit
 *   sluiced -c FILE --recount       set the sink's counters from its rows
 *                                   (worker/recount.c) and exit
 *   sluiced -c FILE --check[=SCAN]  report inconsistent rows (worker/
 *                                   check.c); exit 1 when there are any
 *   sluiced --list-settings         print the settings table (what
 *                                   etc/man/gen-sluice-conf.pl reads)
 *
 * Exit codes are those of shared/exitcode.h: 78 for a configuration error,
 * 64 for a bad command line, so that an init system does not loop on them.
 */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bsd/string.h>
#include <bsd/unistd.h>

#include "shared/config.h"
#include "shared/exitcode.h"
#include "shared/log.h"
#include "shared/pipeline.h"
#include "supervisor/supervisor.h"
#include "worker/firehose.h"
#include "worker/sink.h"
#include "worker/worker.h"

#define SLUICE_VERSION  "0.1.0"
#define MAX_SET_OPTIONS 128

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: sluiced [-d] [-c FILE] [-s KEY=VALUE]...\n"
            "       sluiced [-c FILE] [-s KEY=VALUE]... --worker NAME\n"
            "       sluiced [-c FILE] [-s KEY=VALUE]... --firehose\n"
            "       sluiced [-c FILE] [-s KEY=VALUE]... --init-schema\n"
            "       sluiced [-c FILE] [-s KEY=VALUE]... --recount\n"
            "       sluiced [-c FILE] [-s KEY=VALUE]... --check[=SCAN]\n"
            "       sluiced [-c FILE] [-s KEY=VALUE]... --check-config\n"
            "\n"
            "sluiced drains a Redis stream into PostgreSQL with a group of\n"
            "consumer worker processes.\n"
            "\n"
            "  -c, --config FILE    read settings from FILE (key = value);\n"
            "                       SIGHUP re-reads it\n"
            "  -s, --set KEY=VALUE  override one setting (repeatable);\n"
            "                       wins over the file and the environment\n"
            "  -d, --daemonize      detach and write the pidfile (SysV "
            "init);\n"
            "                       default: stay in the foreground\n"
            "      --ready-fd FD    write a newline to FD once the workers\n"
            "                       consume, and close it (s6's\n"
            "                       notification-fd)\n"
            "      --worker NAME    run one worker named NAME in the "
            "foreground,\n"
            "                       without a supervisor\n"
            "      --firehose       run the firehose reader (relay_url) "
            "alone in the\n"
            "                       foreground\n"
            "      --init-schema    apply the configured sink's SQL schema\n"
            "                       (idempotent) and exit\n"
            "      --recount        set every counter of the atproto sink\n"
            "                       from its rows (beside running workers)\n"
            "                       and exit\n"
            "      --check[=SCAN]   report the atproto rows that disagree\n"
            "                       (counters, orphans, missing users),\n"
            "                       reading at most SCAN rows a table\n"
            "                       (default 100000, 0 = all); exit 1 if\n"
            "                       any\n"
            "      --check-config   validate the configuration (and load a\n"
            "                       plugin sink), print it (passwords\n"
            "                       hidden) and exit\n"
            "      --pipeline NAME  the pipeline --worker, --init-schema,\n"
            "                       --recount and --check work on, when\n"
            "                       the file has several ([pipeline NAME])\n"
            "      --list-settings  print every setting sluiced knows: key,\n"
            "                       type, default, range, environment\n"
            "                       names (tab-separated) and exit\n"
            "  -h, --help           this text\n"
            "  -V, --version        print the version\n"
            "\n"
            "Precedence: defaults < FILE < environment (REDIS_URL,\n"
            "DATABASE_URL, REDIS_STREAM_KEY, REDIS_CONSUMER_GROUP,\n"
            "CONSUMER_ID, PARALLEL_CONSUMERS, BATCH_SIZE, DB_POOL_SIZE,\n"
            "LOG_LEVEL) < -s. Every setting is documented in the sample\n"
            "configuration, sluice.conf.\n"
            "\n"
            "Signals (supervisor): HUP reload, TERM/INT graceful stop,\n"
            "QUIT immediate stop, USR1 reopen logs, TTIN/TTOU one worker\n"
            "more/less.\n"
            "\n"
            "Exit status: 0 stopped cleanly; 1 --check found inconsistent\n"
            "rows; 64 bad command line; 75 temporary failure; 78\n"
            "configuration error; 70 internal error.\n");
}

/* The sink's own checks of cfg (a plugin is loaded and its version
 * checked; create() connects to nothing). 0, or -1 with the reason on
 * stderr. */
static int
check_sink(const char *who, const struct config *cfg)
{
    const struct sink_type *st = sink_type_find(cfg->sink);
    char err[CONFIG_ERR_MAX];
    struct sink *sink;

    if (st == NULL)
        return 0;
    if ((sink = st->create(cfg, err, sizeof(err))) == NULL) {
        fprintf(stderr, "sluiced: configuration refused: %ssink %s: %s\n", who,
                cfg->sink, err);
        return -1;
    }
    st->destroy(sink);
    return 0;
}

/* The lines of config_print(cfg) into a new string (the caller frees
 * it); NULL when out of memory. */
static char *
printed(const struct config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    if (f == NULL)
        return NULL;
    config_print(cfg, f);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/*
 * --check-config: every pipeline's sink checked, then the settings
 * printed (passwords hidden): a file of one pipeline as the settings it
 * gives; one of several as the shared settings, then each pipeline's
 * section with what differs from them (a shard, commented, with the hash
 * slot of its stream). Returns the exit code.
 */
static int
check_configuration(const struct pipeline_set *set)
{
    char who[PIPELINE_NAME_MAX + 16];
    char *base;

    for (int i = 0; i < set->n; i++) {
        snprintf(who, sizeof(who), "[pipeline %s]: ", set->p[i].name);
        if (check_sink(set->labelled ? who : "", &set->p[i].cfg) < 0)
            return EXIT_CONFIG;
    }
    if (!set->labelled) {
        config_print(&set->p[0].cfg, stdout);
        return EXIT_OK;
    }
    if ((base = printed(&set->base)) == NULL)
        return EXIT_SOFTWARE;
    fputs(base, stdout);
    for (int i = 0; i < set->n; i++) {
        const struct pipeline_config *pc = &set->p[i];
        char *mine = printed(&pc->cfg), *line, *save = NULL;
        const char *mark = pc->shard >= 0 ? "# " : "";

        if (mine == NULL) {
            free(base);
            return EXIT_SOFTWARE;
        }
        printf("\n%s[pipeline %s]\n", mark, pc->name);
        if (pc->shard >= 0)
            printf("# shard %d: stream %s, Redis Cluster hash slot %u\n",
                   pc->shard, pc->cfg.stream_key,
                   pipeline_hash_slot(pc->cfg.stream_key));
        for (line = strtok_r(mine, "\n", &save); line != NULL;
             line = strtok_r(NULL, "\n", &save)) {
            char *hit = strstr(base, line);
            size_t n = strlen(line);
            /* the same whole line among the shared ones: not printed */
            while (hit != NULL && !((hit == base || hit[-1] == '\n') &&
                                    (hit[n] == '\n' || hit[n] == '\0')))
                hit = strstr(hit + 1, line);
            if (hit == NULL)
                printf("%s%s\n", mark, line);
        }
        free(mine);
    }
    free(base);
    return EXIT_OK;
}

int
main(int argc, char **argv, char **envp)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"set", required_argument, NULL, 's'},
        {"daemonize", no_argument, NULL, 'd'},
        {"ready-fd", required_argument, NULL, 'N'},
        {"worker", required_argument, NULL, 'W'},
        {"firehose", no_argument, NULL, 'F'},
        {"init-schema", no_argument, NULL, 'I'},
        {"recount", no_argument, NULL, 'R'},
        {"check", optional_argument, NULL, 'K'},
        {"check-config", no_argument, NULL, 'C'},
        {"pipeline", required_argument, NULL, 'P'},
        {"list-settings", no_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *worker_name = NULL, *pipeline_name = NULL;
    char *set_options[MAX_SET_OPTIONS];
    int nset = 0, daemonize = 0, init_schema = 0, check_config = 0, ch;
    int ready_fd = -1;
    int recount = 0, check = 0, firehose = 0;
    long long check_scan = 100000;
    char err[CONFIG_ERR_MAX];
    static struct config cfg;
    static struct pipeline_set set;

    /* Process titles (sluiced: supervisor ..., sluiced: worker NAME)
     * need the argument and environment area; this must come first. */
    setproctitle_init(argc, argv, envp);

    while ((ch = getopt_long(argc, argv, "c:s:dhV", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config_path = optarg;
            break;
        case 's':
            if (nset == MAX_SET_OPTIONS) {
                fprintf(stderr, "sluiced: too many -s options\n");
                return EXIT_USAGE;
            }
            set_options[nset++] = optarg;
            break;
        case 'N': {
            char *end;
            long fd = strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || fd < 3 || fd > 1023 ||
                fcntl((int)fd, F_GETFD) < 0) {
                fprintf(stderr,
                        "sluiced: --ready-fd %s: not an open descriptor "
                        "(3 or above)\n",
                        optarg);
                return EXIT_USAGE;
            }
            /* the children must not hold it: only this process says */
            (void)fcntl((int)fd, F_SETFD, FD_CLOEXEC);
            ready_fd = (int)fd;
            break;
        }
        case 'd':
            daemonize = 1;
            break;
        case 'W':
            worker_name = optarg;
            break;
        case 'P':
            pipeline_name = optarg;
            break;
        case 'F':
            firehose = 1;
            break;
        case 'I':
            init_schema = 1;
            break;
        case 'C':
            check_config = 1;
            break;
        case 'R':
            recount = 1;
            break;
        case 'K': {
            char *end;
            check = 1;
            if (optarg != NULL) {
                check_scan = strtoll(optarg, &end, 10);
                if (*optarg == '\0' || *end != '\0' || check_scan < 0) {
                    fprintf(stderr,
                            "sluiced: --check=%s: not a row count (0 or "
                            "more)\n",
                            optarg);
                    return EXIT_USAGE;
                }
            }
            break;
        }
        case 'h':
            usage(stdout);
            return EXIT_OK;
        case 'L':
            config_print_settings(stdout);
            return EXIT_OK;
        case 'V':
            printf("sluiced %s\n", SLUICE_VERSION);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "sluiced: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    if ((worker_name != NULL) + firehose + init_schema + recount + check +
            check_config + daemonize >
        1) {
        fprintf(stderr, "sluiced: --worker, --firehose, --init-schema, "
                        "--recount, --check, --check-config and -d exclude "
                        "each other\n");
        return EXIT_USAGE;
    }

    /* the reader alone never opens PostgreSQL: no database_url needed */
    if (firehose) {
        if (config_load_reader(&cfg, config_path, set_options, nset, err,
                               sizeof(err)) < 0) {
            fprintf(stderr, "sluiced: configuration refused: %s\n", err);
            return EXIT_CONFIG;
        }
    } else {
        const struct pipeline_config *pc;

        if (pipeline_set_load(&set, config_path, set_options, nset, err,
                              sizeof(err)) < 0) {
            fprintf(stderr, "sluiced: configuration refused: %s\n", err);
            return EXIT_CONFIG;
        }
        if (check_config)
            return check_configuration(&set);
        /* one pipeline's settings for the one-shot modes and --worker */
        if (pipeline_name == NULL && set.n > 1 && !daemonize &&
            (worker_name != NULL || recount || check)) {
            fprintf(stderr,
                    "sluiced: the configuration has %d pipelines: name one "
                    "with --pipeline\n",
                    set.n);
            return EXIT_USAGE;
        }
        pc = pipeline_name != NULL ? pipeline_set_find(&set, pipeline_name)
                                   : &set.p[0];
        if (pc == NULL) {
            fprintf(stderr, "sluiced: --pipeline %s: no such pipeline\n",
                    pipeline_name);
            return EXIT_USAGE;
        }
        cfg = pc->cfg;
        if (set.labelled) {
            /* the log and the supervisor's own are the shared settings */
            strlcpy(cfg.log_target, set.base.log_target,
                    sizeof(cfg.log_target));
            cfg.log_level = set.base.log_level;
        }
    }
    if (log_init(cfg.log_target, cfg.log_level) < 0) {
        fprintf(stderr, "sluiced: log_target %s: cannot open\n",
                cfg.log_target);
        return EXIT_CONFIG;
    }

    if (init_schema) {
        log_set_identity("init-schema", NULL);
        if (pipeline_name != NULL || set.n == 1)
            return worker_init_schema(&cfg);
        /* every pipeline's schema, in file order */
        for (int i = 0; i < set.n; i++) {
            int rc;
            log_info("pipeline %s: %s sink", set.p[i].name, set.p[i].cfg.sink);
            if ((rc = worker_init_schema(&set.p[i].cfg)) != EXIT_OK)
                return rc;
        }
        return EXIT_OK;
    }
    if (recount) {
        log_set_identity("recount", NULL);
        return worker_recount(&cfg);
    }
    if (check) {
        log_set_identity("check", NULL);
        return worker_check(&cfg, check_scan);
    }
    if (worker_name != NULL) {
        struct worker_options wo = {
            .cfg = &cfg,
            .name = worker_name,
            .slot = NULL,
            .parent_fd = -1,
            /* the name was given: a foreign supervisor restarting its
             * worker at once under that name means it */
            .name_known = 1,
        };
        log_set_identity("worker", worker_name);
        return worker_run(&wo);
    }

    if (firehose) {
        struct firehose_options fo = {
            .cfg = &cfg, .slot = NULL, .parent_fd = -1};
        log_set_identity("firehose", NULL);
        return firehose_run(&fo);
    }

    struct supervisor_options so = {
        .config_path = config_path,
        .set_options = set_options,
        .nset_options = nset,
        .daemonize = daemonize,
        .ready_fd = ready_fd,
    };
    log_set_identity("supervisor", NULL);
    if (pipeline_name != NULL) {
        fprintf(stderr, "sluiced: --pipeline goes with --worker, "
                        "--init-schema, --recount or --check\n");
        return EXIT_USAGE;
    }
    return supervisor_run(&so, &set);
}
