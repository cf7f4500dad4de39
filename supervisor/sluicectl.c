/*
 * sluicectl.c: the operator's tool for a running sluiced.
 *
 *   sluicectl [-c FILE] [-s KEY=VALUE]... status
 *   sluicectl ... top
 *   sluicectl ... stats --json | stats --prometheus
 *   sluicectl ... reload | stop | scale N
 *
 * It finds the supervisor through the stats segment named by the same
 * configuration sluiced uses (config_stats_name()), reads it without ever
 * writing, and controls the supervisor with signals to the pid recorded
 * in the segment's header. The configuration is loaded without the
 * cross-field checks, so sluicectl works without database_url.
 *
 * `scale N` sends SIGTTIN or SIGTTOU once per step and waits for the
 * segment's workers_wanted to move before the next one (signals of one
 * kind don't queue, so a burst would be merged). When the supervisor
 * stops short of N (its limit: the slots and db_pool_size), the steps
 * taken are undone, so that a failed scale changes nothing.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "shared/config.h"
#include "shared/exitcode.h"
#include "shared/log.h"
#include "shared/stats.h"
#include "supervisor/sluicectl.h"

#define MAX_SET_OPTIONS  128
#define GROUP_TIMEOUT_MS 1000
#define STEP_TIMEOUT_MS  5000

struct ctl {
    struct config cfg;
    char segname[256];
    const struct stats_segment *seg;
};

static volatile sig_atomic_t got_interrupt;

static void
on_interrupt(int sig)
{
    (void)sig;
    got_interrupt = 1;
}

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: sluicectl [-c FILE] [-s KEY=VALUE]... COMMAND\n"
            "\n"
            "Commands:\n"
            "  status               one table: every worker and the total,\n"
            "                       the group's lag and pending count\n"
            "  top                  the same, refreshed every second (q or\n"
            "                       Ctrl-C to leave)\n"
            "  stats --json         all counters as one JSON object\n"
            "  stats --prometheus   Prometheus text exposition format\n"
            "  reload               SIGHUP: re-read the configuration\n"
            "  stop                 SIGTERM: graceful stop; waits for it\n"
            "  scale N              run N workers (SIGTTIN/SIGTTOU steps)\n"
            "\n"
            "  -c, --config FILE    the configuration sluiced runs with (the\n"
            "                       stats segment is named after it)\n"
            "  -s, --set KEY=VALUE  override one setting\n"
            "\n"
            "Exit status: 0 done; 1 the request failed; 3 sluiced is not\n"
            "running; 4 segment of another layout version; 5 permission\n"
            "denied; 64 bad command line; 78 configuration error.\n");
}

/*
 * Load the configuration the way sluiced does, without config_validate():
 * sluicectl needs only the names. Returns 0 or EXIT_CONFIG.
 */
static int
load_config(struct config *cfg, const char *path, char *const *opts, int n)
{
    char err[CONFIG_ERR_MAX];

    config_defaults(cfg);
    if ((path != NULL && config_load_file(cfg, path, err, sizeof(err)) < 0) ||
        config_load_env(cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "sluicectl: configuration refused: %s\n", err);
        return EXIT_CONFIG;
    }
    for (int i = 0; i < n; i++)
        if (config_set_option(cfg, opts[i], err, sizeof(err)) < 0) {
            fprintf(stderr, "sluicectl: configuration refused: %s\n", err);
            return EXIT_CONFIG;
        }
    return 0;
}

/* Map the segment; on failure print why and return the exit code. */
static int
open_segment(struct ctl *ctl)
{
    enum stats_open_result r;
    uint32_t v;

    config_stats_name(&ctl->cfg, ctl->segname, sizeof(ctl->segname));
    r = stats_open(ctl->segname, &ctl->seg);
    switch (r) {
    case STATS_OK:
        return 0;
    case STATS_NOT_FOUND:
        fprintf(stderr,
                "sluicectl: sluiced is not running (no stats segment %s)\n",
                ctl->segname);
        return CTL_EXIT_NOT_RUNNING;
    case STATS_NO_ACCESS:
        fprintf(stderr,
                "sluicectl: permission denied on stats segment %s (run as "
                "the user sluiced runs as, or root)\n",
                ctl->segname);
        return CTL_EXIT_NO_ACCESS;
    case STATS_BAD_LAYOUT:
        v = stats_peek_version(ctl->segname);
        if (v != 0 && v != STATS_LAYOUT_VERSION)
            fprintf(stderr,
                    "sluicectl: stats segment %s has layout version %u, this "
                    "sluicectl reads version %u: use the sluicectl of the "
                    "running sluiced\n",
                    ctl->segname, (unsigned)v, (unsigned)STATS_LAYOUT_VERSION);
        else
            fprintf(stderr,
                    "sluicectl: stats segment %s is not a sluice stats "
                    "segment of layout version %u (wrong size or magic)\n",
                    ctl->segname, (unsigned)STATS_LAYOUT_VERSION);
        return CTL_EXIT_LAYOUT;
    case STATS_SYS_ERROR:
    default:
        fprintf(stderr, "sluicectl: stats segment %s: %s\n", ctl->segname,
                strerror(errno));
        return CTL_EXIT_FAILED;
    }
}

/* The supervisor's pid, or 0 after printing why it is not there (a
 * segment left by a killed supervisor). */
static pid_t
supervisor_pid(const struct ctl *ctl)
{
    pid_t pid = (pid_t)ctl->seg->hdr.supervisor_pid;

    if (!stats_supervisor_alive(&ctl->seg->hdr)) {
        fprintf(stderr,
                "sluicectl: sluiced is not running (stats segment %s is "
                "left over from pid %d)\n",
                ctl->segname, (int)pid);
        return 0;
    }
    return pid;
}

/*
 * The Redis URL to ask for the group's figures. The header's copy has its
 * password redacted, so the configuration's URL is used when it names the
 * same server; otherwise the header's, when it has no password.
 */
static const char *
group_redis_url(const struct ctl *ctl)
{
    char redacted[CONFIG_STR_MAX];
    const char *hdr_url = ctl->seg->hdr.redis_url;

    config_redact_url(ctl->cfg.redis_url, redacted, sizeof(redacted));
    if (strcmp(redacted, hdr_url) == 0 || hdr_url[0] == '\0')
        return ctl->cfg.redis_url;
    if (strstr(hdr_url, "***") == NULL)
        return hdr_url;
    return ctl->cfg.redis_url;
}

static void
group_fetch(const struct ctl *ctl, struct stats_group *grp)
{
    grp->have_group =
        stats_group_info(group_redis_url(ctl), ctl->seg->hdr.stream,
                         ctl->seg->hdr.group, GROUP_TIMEOUT_MS, &grp->gi) == 0;
}

/* Sleep ms, returning early (1) when interrupted. */
static int
nap(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

    return nanosleep(&ts, NULL) < 0 && got_interrupt;
}

static int
cmd_status(struct ctl *ctl)
{
    static struct stats_snapshot a, b;
    struct stats_group grp;

    stats_snapshot_take(ctl->seg, &a);
    group_fetch(ctl, &grp);
    /* events/s over about one second */
    int64_t left = 1000 - (stats_now_ms() - a.taken_ms);
    if (left > 0)
        nap(left);
    stats_snapshot_take(ctl->seg, &b);
    ctl_print_table(stdout, &b, &a, &grp);
    return 0;
}

static int
cmd_top(struct ctl *ctl)
{
    static struct stats_snapshot snaps[2];
    struct termios saved, raw;
    int tty = isatty(STDIN_FILENO), cur = 0, have_prev = 0, quit = 0;
    struct stats_group grp;

    if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
        raw = saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    } else {
        tty = 0;
    }
    while (!quit && !got_interrupt) {
        struct pollfd pfd = {STDIN_FILENO, POLLIN, 0};
        int64_t until;

        stats_snapshot_take(ctl->seg, &snaps[cur]);
        group_fetch(ctl, &grp);
        if (tty || isatty(STDOUT_FILENO))
            fputs("\033[H\033[2J", stdout);
        ctl_print_table(stdout, &snaps[cur], have_prev ? &snaps[!cur] : NULL,
                        &grp);
        if (tty)
            fputs("(q to quit)\n", stdout);
        fflush(stdout);
        if (!stats_supervisor_alive(&snaps[cur].hdr)) {
            fprintf(stderr, "sluicectl: sluiced (pid %d) has exited\n",
                    (int)snaps[cur].hdr.supervisor_pid);
            break;
        }
        have_prev = 1;
        cur = !cur;
        until = stats_now_ms() + 1000;
        while (!quit && !got_interrupt) {
            int64_t left = until - stats_now_ms();
            char ch;

            if (left <= 0)
                break;
            if (poll(&pfd, 1, (int)left) > 0) {
                if (read(STDIN_FILENO, &ch, 1) == 1) {
                    if (ch == 'q' || ch == 'Q')
                        quit = 1;
                } else {
                    pfd.fd = -1; /* EOF on stdin: only Ctrl-C ends top */
                }
            }
        }
    }
    if (tty)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    return 0;
}

static int
cmd_stats(struct ctl *ctl, const char *format)
{
    static struct stats_snapshot snap;
    struct stats_group grp;

    stats_snapshot_take(ctl->seg, &snap);
    group_fetch(ctl, &grp);
    if (strcmp(format, "--json") == 0) {
        if (ctl_print_json(stdout, &snap, ctl->segname, &grp) < 0) {
            fprintf(stderr, "sluicectl: out of memory\n");
            return CTL_EXIT_FAILED;
        }
    } else {
        stats_print_prometheus(stdout, &snap, &grp, 5000);
    }
    return fflush(stdout) == 0 ? 0 : CTL_EXIT_FAILED;
}

static int
send_signal(pid_t pid, int sig, const char *what)
{
    if (kill(pid, sig) < 0) {
        fprintf(stderr, "sluicectl: %s to sluiced (pid %d): %s\n", what,
                (int)pid, strerror(errno));
        return errno == EPERM ? CTL_EXIT_NO_ACCESS : CTL_EXIT_FAILED;
    }
    return 0;
}

static int
cmd_reload(struct ctl *ctl)
{
    pid_t pid = supervisor_pid(ctl);
    uint32_t gen;
    int rc;

    if (pid == 0)
        return CTL_EXIT_NOT_RUNNING;
    gen = atomic_load(&ctl->seg->hdr.generation);
    if ((rc = send_signal(pid, SIGHUP, "SIGHUP")) != 0)
        return rc;
    for (int64_t until = stats_now_ms() + STEP_TIMEOUT_MS;
         stats_now_ms() < until && !got_interrupt; nap(50))
        if (atomic_load(&ctl->seg->hdr.generation) != gen) {
            printf("sluiced (pid %d) reloaded its configuration "
                   "(generation %u)\n",
                   (int)pid, (unsigned)atomic_load(&ctl->seg->hdr.generation));
            return 0;
        }
    fprintf(stderr,
            "sluicectl: sluiced (pid %d) did not take the new configuration; "
            "its log says why (a refused file is logged with file:line)\n",
            (int)pid);
    return CTL_EXIT_FAILED;
}

static int
cmd_stop(struct ctl *ctl)
{
    pid_t pid = supervisor_pid(ctl);
    int rc;
    long wait_ms = ctl->cfg.shutdown_timeout_ms + 10000;

    if (pid == 0)
        return CTL_EXIT_NOT_RUNNING;
    if ((rc = send_signal(pid, SIGTERM, "SIGTERM")) != 0)
        return rc;
    for (int64_t until = stats_now_ms() + wait_ms;
         stats_now_ms() < until && !got_interrupt; nap(50))
        if (!stats_supervisor_alive(&ctl->seg->hdr)) {
            printf("sluiced (pid %d) stopped\n", (int)pid);
            return 0;
        }
    fprintf(stderr, "sluicectl: sluiced (pid %d) still runs after %ld ms\n",
            (int)pid, wait_ms);
    return CTL_EXIT_FAILED;
}

/*
 * Step the supervisor's wanted workers towards want, one signal a step.
 * Returns 0 once there, 1 when a step did not move (*at: the count it
 * stays at), or an exit code when a signal could not be sent.
 */
static int
scale_steps(struct ctl *ctl, pid_t pid, long want, uint32_t *at)
{
    int rc;

    for (;;) {
        uint32_t cur = atomic_load(&ctl->seg->hdr.workers_wanted);
        int sig = (long)cur < want ? SIGTTIN : SIGTTOU;
        int moved = 0;

        *at = cur;
        if ((long)cur == want)
            return 0;
        if ((rc = send_signal(pid, sig,
                              sig == SIGTTIN ? "SIGTTIN" : "SIGTTOU")) != 0)
            return rc;
        for (int64_t until = stats_now_ms() + STEP_TIMEOUT_MS;
             stats_now_ms() < until && !got_interrupt; nap(20))
            if (atomic_load(&ctl->seg->hdr.workers_wanted) != cur) {
                moved = 1;
                break;
            }
        if (!moved)
            return 1;
    }
}

static int
cmd_scale(struct ctl *ctl, const char *arg)
{
    pid_t pid = supervisor_pid(ctl);
    char *end;
    long want = strtol(arg, &end, 10);
    uint32_t start, at;
    int rc;

    if (*arg == '\0' || *end != '\0' || want < 1 || want > STATS_MAX_SLOTS) {
        fprintf(stderr, "sluicectl: scale: N must be 1..%d, not '%s'\n",
                STATS_MAX_SLOTS, arg);
        return EXIT_USAGE;
    }
    if (pid == 0)
        return CTL_EXIT_NOT_RUNNING;
    if (ctl->seg->hdr.labelled) {
        fprintf(stderr,
                "sluicectl: scale: sluiced (pid %d) runs several pipelines; "
                "set parallel_consumers in the pipeline's section and "
                "reload\n",
                (int)pid);
        return EXIT_USAGE;
    }
    start = atomic_load(&ctl->seg->hdr.workers_wanted);
    rc = scale_steps(ctl, pid, want, &at);
    if (rc == 0) {
        printf("sluiced (pid %d) runs %ld workers\n", (int)pid, want);
        return 0;
    }
    if (rc != 1)
        return rc;
    fprintf(stderr,
            "sluicectl: sluiced (pid %d) can't run %ld workers: it stops at "
            "%u (its limit: db_pool_size and %d slots; see its log)\n",
            (int)pid, want, (unsigned)at, STATS_MAX_SLOTS);
    if (at != start && scale_steps(ctl, pid, (long)start, &at) != 0) {
        fprintf(stderr,
                "sluicectl: and it stays at %u workers, not back at "
                "%u\n",
                (unsigned)at, (unsigned)start);
        return CTL_EXIT_FAILED;
    }
    fprintf(stderr, "sluicectl: nothing changed: %u workers\n",
            (unsigned)start);
    return CTL_EXIT_FAILED;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"set", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static struct ctl ctl;
    const char *config_path = NULL, *cmd;
    char *set_options[MAX_SET_OPTIONS];
    int nset = 0, ch, rc;
    struct sigaction sa;

    /* "+": stop at the command, so "stats --json" keeps its flag. */
    while ((ch = getopt_long(argc, argv, "+c:s:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config_path = optarg;
            break;
        case 's':
            if (nset == MAX_SET_OPTIONS) {
                fprintf(stderr, "sluicectl: too many -s options\n");
                return EXIT_USAGE;
            }
            set_options[nset++] = optarg;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    argc -= optind;
    argv += optind;
    if (argc < 1) {
        usage(stderr);
        return EXIT_USAGE;
    }
    cmd = argv[0];
    if (!((strcmp(cmd, "status") == 0 && argc == 1) ||
          (strcmp(cmd, "top") == 0 && argc == 1) ||
          (strcmp(cmd, "reload") == 0 && argc == 1) ||
          (strcmp(cmd, "stop") == 0 && argc == 1) ||
          (strcmp(cmd, "scale") == 0 && argc == 2) ||
          (strcmp(cmd, "stats") == 0 && argc == 2 &&
           (strcmp(argv[1], "--json") == 0 ||
            strcmp(argv[1], "--prometheus") == 0)))) {
        fprintf(stderr, "sluicectl: bad command: %s\n", cmd);
        usage(stderr);
        return EXIT_USAGE;
    }

    log_set_identity("sluicectl", NULL);
    if ((rc = load_config(&ctl.cfg, config_path, set_options, nset)) != 0)
        return rc;
    if ((rc = open_segment(&ctl)) != 0)
        return rc;
    if (supervisor_pid(&ctl) == 0) {
        stats_close(ctl.seg);
        return CTL_EXIT_NOT_RUNNING;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    if (strcmp(cmd, "status") == 0)
        rc = cmd_status(&ctl);
    else if (strcmp(cmd, "top") == 0)
        rc = cmd_top(&ctl);
    else if (strcmp(cmd, "stats") == 0)
        rc = cmd_stats(&ctl, argv[1]);
    else if (strcmp(cmd, "reload") == 0)
        rc = cmd_reload(&ctl);
    else if (strcmp(cmd, "stop") == 0)
        rc = cmd_stop(&ctl);
    else
        rc = cmd_scale(&ctl, argv[1]);
    stats_close(ctl.seg);
    return rc;
}
