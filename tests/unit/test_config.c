/*
 * test_config.c: configuration parsing: defaults, the file format, the
 * precedence of file < environment < command line, refusals that name the
 * file, line and key, durations with units, cross-field checks, password
 * redaction, the derived names, and that the sample etc/sluice.conf names
 * every setting config_print() knows.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shared/config.h"
#include "tests/unit/tap.h"

static char tmpdir[] = "/tmp/sluice-test-config.XXXXXX";

/* Write text to a fresh file in tmpdir; returns its path (static). */
static const char *
write_file(const char *text)
{
    static char path[256];
    static int n;
    snprintf(path, sizeof(path), "%s/c%d.conf", tmpdir, ++n);
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
    return path;
}

/* Load a file over the defaults; returns config_load_file's result. */
static int
load_text(struct config *cfg, const char *text, char *err, size_t errlen,
          const char **path)
{
    config_defaults(cfg);
    *path = write_file(text);
    return config_load_file(cfg, *path, err, errlen);
}

static void
test_defaults(void)
{
    struct config c;
    char err[CONFIG_ERR_MAX];
    config_defaults(&c);
    is_str(c.redis_url, "redis://localhost:6379", "default redis_url");
    is_str(c.stream_key, "firehose:events", "default stream_key");
    is_str(c.consumer_group, "firehose-processors", "default group");
    ok(c.consumer_id[0] != '\0' && strchr(c.consumer_id, '.') == NULL,
       "default consumer_id is the short host name (%s)", c.consumer_id);
    is_int(c.parallel_consumers, 5, "default parallel_consumers");
    is_int(c.batch_size, 500, "default batch_size");
    is_int(c.claim_idle_ms, 60000, "default claim_idle_ms");
    is_str(c.sink, "atproto", "default sink");
    is_int(c.log_level, LOG_LEVEL_INFO, "default log_level");
    ok(config_validate(&c, err, sizeof(err)) < 0 &&
           strstr(err, "database_url") != NULL,
       "defaults alone are refused: database_url is required (%s)", err);
    snprintf(c.database_url, sizeof(c.database_url), "postgresql:///x");
    ok(config_validate(&c, err, sizeof(err)) == 0,
       "defaults plus database_url validate");
}

static void
test_file(void)
{
    struct config c;
    char err[CONFIG_ERR_MAX], want[512];
    const char *path;

    int rc = load_text(&c,
                       "# a comment\n"
                       "\n"
                       "  batch_size = 250  \n"
                       "stream_key=other:stream\n"
                       "consumer_id = \" spaced \"\n"
                       "claim_idle_ms = 90s\n"
                       "block_ms = 250ms\n"
                       "restart_delay_max_ms = 2m\n"
                       "log_level = DEBUG\n"
                       "database_url = postgresql://u:pw#x@h/db\n",
                       err, sizeof(err), &path);
    ok(rc == 0, "a good file loads (%s)", rc ? err : "ok");
    is_int(c.batch_size, 250, "batch_size from the file, blanks trimmed");
    is_str(c.stream_key, "other:stream", "no blanks around '=' is fine");
    is_str(c.consumer_id, " spaced ", "quotes keep blanks");
    is_int(c.claim_idle_ms, 90000, "90s is 90000 ms");
    is_int(c.block_ms, 250, "250ms");
    is_int(c.restart_delay_max_ms, 120000, "2m");
    is_int(c.log_level, LOG_LEVEL_DEBUG, "log level in any case");
    is_str(c.database_url, "postgresql://u:pw#x@h/db",
           "'#' inside a value is part of it");

    rc = load_text(&c, "batch_size = 10\n\nbatch_size = 50O\n", err,
                   sizeof(err), &path);
    snprintf(want, sizeof(want),
             "%s:3: batch_size: set twice (first on line 1)", path);
    ok(rc < 0, "a key set twice is refused");
    is_str(err, want, "... naming both lines");

    rc = load_text(&c, "\n\nbatch_size = 50O\n", err, sizeof(err), &path);
    snprintf(want, sizeof(want), "%s:3: batch_size: not a number: '50O'", path);
    ok(rc < 0, "a malformed number is refused");
    is_str(err, want, "... with file:line and key");

    rc = load_text(&c, "batch_sise = 5\n", err, sizeof(err), &path);
    snprintf(want, sizeof(want), "%s:1: batch_sise: unknown setting", path);
    is_str(rc < 0 ? err : "", want, "an unknown key is refused");

    rc = load_text(&c, "parallel_consumers = 0\n", err, sizeof(err), &path);
    ok(rc < 0 && strstr(err, ":1: parallel_consumers: 0 is out of range "
                             "(1..64)") != NULL,
       "out of range is refused with the range (%s)", err);

    rc = load_text(&c, "block_ms = 5 fortnights\n", err, sizeof(err), &path);
    ok(rc < 0 && strstr(err, "block_ms: not a duration") != NULL,
       "a bad duration unit is refused (%s)", err);

    rc = load_text(&c, "sink = kafka\n", err, sizeof(err), &path);
    ok(rc < 0 && strstr(err, "sink: 'kafka' is not one of atproto|raw"),
       "an unknown sink is refused (%s)", err);

    rc = load_text(&c, "log_level = loud\n", err, sizeof(err), &path);
    ok(rc < 0 && strstr(err, ":1: log_level: 'loud'"),
       "an unknown log level is refused (%s)", err);

    rc = load_text(&c, "just words\n", err, sizeof(err), &path);
    ok(rc < 0 && strstr(err, ":1: expected 'key = value'"),
       "a line without '=' is refused (%s)", err);

    rc = load_text(&c, "consumer_id = \"open\n", err, sizeof(err), &path);
    ok(rc < 0 && strstr(err, "unterminated"), "an open quote is refused");

    config_defaults(&c);
    rc = config_load_file(&c, "/nonexistent/sluice.conf", err, sizeof(err));
    is_str(rc < 0 ? err : "",
           "/nonexistent/sluice.conf: No such file or "
           "directory",
           "a missing file is named");
}

static void
test_precedence(void)
{
    struct config c;
    char err[CONFIG_ERR_MAX];
    const char *path = write_file("batch_size = 100\nstream_key = from:file\n"
                                  "database_url = postgresql:///f\n"
                                  "block_ms = 300\n");
    char *opts[] = {"batch_size=7"};

    setenv("BATCH_SIZE", "50", 1);
    setenv("REDIS_STREAM_KEY", "from:env", 1);
    setenv("SLUICE_BLOCK_MS", "2s", 1);
    int rc = config_load(&c, path, opts, 1, err, sizeof(err));
    ok(rc == 0, "file + environment + option load (%s)", rc ? err : "ok");
    is_int(c.batch_size, 7, "the command line wins over everything");
    is_str(c.stream_key, "from:env", "the environment wins over the file");
    is_int(c.block_ms, 2000, "SLUICE_<KEY> works for any key");
    is_str(c.database_url, "postgresql:///f", "the file wins over defaults");

    setenv("BATCH_SIZE", "lots", 1);
    rc = config_load(&c, path, NULL, 0, err, sizeof(err));
    is_str(rc < 0 ? err : "", "environment: BATCH_SIZE: not a number: 'lots'",
           "a bad environment value names the variable");
    unsetenv("BATCH_SIZE");
    unsetenv("REDIS_STREAM_KEY");
    unsetenv("SLUICE_BLOCK_MS");

    char *bad[] = {"batch_size=0"};
    rc = config_load(&c, path, bad, 1, err, sizeof(err));
    ok(rc < 0 && strstr(err, "command line: batch_size: 0 is out of range"),
       "a bad option is refused as a command-line error (%s)", err);
    char *noeq[] = {"batch_size"};
    rc = config_load(&c, path, noeq, 1, err, sizeof(err));
    ok(rc < 0 && strstr(err, "expected key=value"), "an option needs '='");
}

static void
test_validate(void)
{
    struct config c;
    char err[CONFIG_ERR_MAX];
    const char *path;

    load_text(&c, "database_url = x\nparallel_consumers = 12\n", err,
              sizeof(err), &path);
    ok(config_validate(&c, err, sizeof(err)) < 0 &&
           strstr(err, "parallel_consumers: 12 workers need 12 PostgreSQL "
                       "connections, more than db_pool_size (10)"),
       "more workers than db_pool_size is refused (%s)", err);
    load_text(&c, "database_url = x\nraw_table = bad-name\n", err, sizeof(err),
              &path);
    ok(config_validate(&c, err, sizeof(err)) < 0 &&
           strstr(err, "raw_table: 'bad-name' is not a table name"),
       "raw_table must be an identifier (%s)", err);
    load_text(&c, "database_url = x\nraw_table = appview.events\n", err,
              sizeof(err), &path);
    ok(config_validate(&c, err, sizeof(err)) == 0,
       "a schema-qualified raw_table is fine");
    load_text(&c, "database_url = x\ngroup_start_id = 12-x\n", err, sizeof(err),
              &path);
    ok(config_validate(&c, err, sizeof(err)) < 0 &&
           strstr(err, "group_start_id"),
       "a bad group start ID is refused");
    load_text(&c,
              "database_url = x\nreconnect_delay_ms = 5s\n"
              "reconnect_delay_max_ms = 1s\n",
              err, sizeof(err), &path);
    ok(config_validate(&c, err, sizeof(err)) < 0 &&
           strstr(err, "reconnect_delay_max_ms: less than"),
       "a backoff cap below its start is refused");
    load_text(&c, "database_url = x\nlog_target = relative.log\n", err,
              sizeof(err), &path);
    ok(config_validate(&c, err, sizeof(err)) < 0 && strstr(err, "log_target"),
       "a relative log file is refused");
}

static void
test_redact(void)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"redis://:secret@h:6379/0", "redis://:***@h:6379/0"},
        {"redis://user:secret@h", "redis://user:***@h"},
        {"redis://secret@h", "redis://***@h"},
        {"redis://h:6379", "redis://h:6379"},
        {"unix://:pw@/run/redis.sock", "unix://:***@/run/redis.sock"},
        {"postgresql://u:p%40ss@db:5432/app", "postgresql://u:***@db:5432/app"},
        {"postgresql://u@db/app", "postgresql://u@db/app"},
        {"postgresql:///app?host=/tmp&password=pw&user=u",
         "postgresql:///app?host=/tmp&password=***&user=u"},
        {"host=db password=pw dbname=app", "host=db password=*** dbname=app"},
        {"host=db password = 'p w\\'x' dbname=app",
         "host=db password = *** dbname=app"},
        {"host=db dbname=app", "host=db dbname=app"},
    };
    char buf[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        is_str(config_redact_url(cases[i].in, buf, sizeof(buf)), cases[i].out,
               "redact %s", cases[i].out);
    char tiny[8];
    config_redact_url("redis://:secret@host", tiny, sizeof(tiny));
    ok(strstr(tiny, "sec") == NULL && strlen(tiny) < sizeof(tiny),
       "a short buffer never shows the password (%s)", tiny);
}

static void
test_names(void)
{
    struct config c;
    char buf[300];
    config_defaults(&c);
    is_str(config_stats_name(&c, buf, sizeof(buf)),
           "/sluice.firehose:events.firehose-processors",
           "derived stats segment name");
    snprintf(c.stream_key, sizeof(c.stream_key), "a/b");
    is_str(config_stats_name(&c, buf, sizeof(buf)),
           "/sluice.a_b.firehose-processors", "'/' in the name replaced");
    memset(c.stream_key, 'k', 400);
    c.stream_key[400] = '\0';
    config_stats_name(&c, buf, sizeof(buf));
    ok(strlen(buf) < 255 && buf[0] == '/' && strchr(buf + 1, '/') == NULL,
       "a long derived name is cut to a valid shm name (%zu)", strlen(buf));
    snprintf(c.stats_name, sizeof(c.stats_name), "/mine");
    is_str(config_stats_name(&c, buf, sizeof(buf)), "/mine", "stats_name wins");

    config_defaults(&c);
    is_str(config_dead_letter_stream(&c, buf, sizeof(buf)),
           "firehose:events:dead", "default dead-letter stream");
    snprintf(c.dead_letter_stream, sizeof(c.dead_letter_stream), "dlq");
    is_str(config_dead_letter_stream(&c, buf, sizeof(buf)), "dlq",
           "dead_letter_stream wins");
}

/* config_print() round-trips through the file parser, hides passwords, and
 * every key it prints is documented in etc/sluice.conf. */
static void
test_print(void)
{
    struct config c, back;
    char err[CONFIG_ERR_MAX], path[256], line[1024];
    const char *p;

    load_text(&c,
              "database_url = postgresql://u:topsecret@h/db\n"
              "consumer_id = \" x \"\nbatch_size = 42\nclaim_idle_ms = 2m\n",
              err, sizeof(err), &p);
    snprintf(path, sizeof(path), "%s/printed.conf", tmpdir);
    FILE *f = fopen(path, "w");
    config_print(&c, f);
    fclose(f);
    config_defaults(&back);
    ok(config_load_file(&back, path, err, sizeof(err)) == 0,
       "config_print's output loads back");
    is_int(back.batch_size, 42, "... with the values");
    is_int(back.claim_idle_ms, 120000, "... durations in ms");
    is_str(back.consumer_id, " x ", "... quoted where needed");
    is_str(back.database_url, "postgresql://u:***@h/db",
           "... and the password hidden");

    FILE *sample = fopen("etc/sluice.conf", "r");
    if (sample == NULL) {
        ok(0, "etc/sluice.conf readable (run from the repository root)");
        return;
    }
    char documented[16384] = "";
    while (fgets(line, sizeof(line), sample) != NULL) {
        char key[128];
        if (sscanf(line, "# %127[a-z_] =", key) == 1 ||
            sscanf(line, "%127[a-z_] =", key) == 1) {
            strcat(documented, " ");
            strcat(documented, key);
            strcat(documented, " ");
        }
    }
    fclose(sample);
    f = fopen(path, "r");
    int missing = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        char key[128], pat[140];
        if (sscanf(line, "%127[a-z_] =", key) != 1)
            continue;
        snprintf(pat, sizeof(pat), " %s ", key);
        if (strstr(documented, pat) == NULL) {
            diag("  %s is not in etc/sluice.conf", key);
            missing++;
        }
    }
    fclose(f);
    is_int(missing, 0, "etc/sluice.conf documents every setting");
    unlink(path);
}

/* Where each setting and each column.NAME came from, and that a setting
 * moved to another line is no change for a reload. */
static void
test_where(void)
{
    static struct config a, b;
    char err[CONFIG_ERR_MAX], where[CONFIG_STR_MAX + 32], want[600];
    const char *pa, *pb;

    ok(load_text(&a, "batch_size = 7\nplugin = /x.so\ncolumn.id = $id\n", err,
                 sizeof(err), &pa) == 0,
       "a file with a pair loads (%s)", err);
    snprintf(want, sizeof(want), "%s:2", pa);
    is_str(config_key_where(&a, "plugin", where, sizeof(where)), want,
           "plugin: its file and line");
    is_str(config_key_where(&a, "function", where, sizeof(where)), "default",
           "an unset key: default");
    snprintf(want, sizeof(want), "%s:3", pa);
    is_str(config_pair_where(&a, &a.columns[0], where, sizeof(where)), want,
           "column.id: its file and line");
    ok(config_set_option(&a, "plugin=/y.so", err, sizeof(err)) == 0,
       "-s plugin=");
    is_str(config_key_where(&a, "plugin", where, sizeof(where)), "command line",
           "... then it comes from the command line");
    setenv("SLUICE_FUNCTION", "fn", 1);
    ok(config_load_env(&a, err, sizeof(err)) == 0, "SLUICE_FUNCTION");
    unsetenv("SLUICE_FUNCTION");
    is_str(config_key_where(&a, "function", where, sizeof(where)),
           "environment", "... from the environment");

    load_text(&a, "batch_size = 7\ncolumn.id = $id\n", err, sizeof(err), &pa);
    load_text(&b,
              "# a comment moves everything down\n\ncolumn.id = $id\n"
              "batch_size = 7\n",
              err, sizeof(err), &pb);
    ok(config_same(&a, &b), "the same values on other lines: the same");
    load_text(&b, "batch_size = 8\ncolumn.id = $id\n", err, sizeof(err), &pb);
    ok(!config_same(&a, &b), "another value: not the same");
}

int
main(void)
{
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    test_defaults();
    test_file();
    test_precedence();
    test_validate();
    test_redact();
    test_names();
    test_print();
    test_where();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        diag("could not remove %s", tmpdir);
    return done_testing();
}
