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

#include <bsd/unistd.h>

#include "shared/config.h"
#include "shared/exitcode.h"
#include "shared/log.h"
#include "supervisor/supervisor.h"
#include "worker/firehose.h"
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
            "      --check-config   validate the configuration, print it\n"
            "                       (passwords hidden) and exit\n"
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
        {"list-settings", no_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *worker_name = NULL;
    char *set_options[MAX_SET_OPTIONS];
    int nset = 0, daemonize = 0, init_schema = 0, check_config = 0, ch;
    int ready_fd = -1;
    int recount = 0, check = 0, firehose = 0;
    long long check_scan = 100000;
    char err[CONFIG_ERR_MAX];
    static struct config cfg;

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
    if ((firehose ? config_load_reader : config_load)(
            &cfg, config_path, set_options, nset, err, sizeof(err)) < 0) {
        fprintf(stderr, "sluiced: configuration refused: %s\n", err);
        return EXIT_CONFIG;
    }
    if (check_config) {
        config_print(&cfg, stdout);
        return EXIT_OK;
    }
    if (log_init(cfg.log_target, cfg.log_level) < 0) {
        fprintf(stderr, "sluiced: log_target %s: cannot open\n",
                cfg.log_target);
        return EXIT_CONFIG;
    }

    if (init_schema) {
        log_set_identity("init-schema", NULL);
        return worker_init_schema(&cfg);
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
    return supervisor_run(&so, &cfg);
}
