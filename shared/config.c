/*
 * config.c: sluice's settings (interface in config.h).
 *
 * The table settings[] below is the single source of every setting's name,
 * the old workers' environment variable for it, its type, range and
 * default. Defaults are applied by parsing the default text through the
 * same code that parses a config file, so a default can never be out of
 * range without the unit test noticing.
 *
 * Sources, in rising precedence: defaults, the file (`key = value`, one per
 * line, `#` starts a comment line, a value may be "double-quoted" to keep
 * spaces), the environment (the old workers' names, REDIS_URL ..., and
 * SLUICE_<KEY> for every key), the command line (-s key=value).
 *
 * Every error is one line naming where and what: "FILE:LINE: KEY: ...",
 * "environment: VAR: ...", "command line: KEY: ...". A value that may hold
 * a password (the URLs) is never echoed back in an error.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <bsd/string.h>

#include "shared/config.h"

enum setting_type {
    SET_STRING,   /* char[] of size .size */
    SET_INT,      /* int, in [min, max] */
    SET_LONG,     /* long, in [min, max] */
    SET_DURATION, /* long milliseconds; the value may end in ms, s, m, h */
    SET_LEVEL,    /* enum log_level */
    SET_CHOICE,   /* char[]: one of the words in .choices */
    SET_URL,      /* char[]: may hold a password; never echoed */
};

struct setting {
    const char *key;
    const char *env; /* the old workers' variable, or NULL */
    enum setting_type type;
    size_t offset;
    size_t size;         /* strings: buffer size */
    long min, max;       /* numbers and durations (ms) */
    const char *choices; /* SET_CHOICE: "a|b|c" */
    const char *def;     /* default, as it would be written in the file */
};

#define OFF(f) offsetof(struct config, f), sizeof(((struct config *)0)->f)

/* The hour is a reasonable upper bound for every duration sluice has. */
#define HOUR_MS (3600L * 1000)

static const struct setting settings[] = {
    {"redis_url", "REDIS_URL", SET_URL, OFF(redis_url), 0, 0, NULL,
     "redis://localhost:6379"},
    {"database_url", "DATABASE_URL", SET_URL, OFF(database_url), 0, 0, NULL,
     ""},
    {"stream_key", "REDIS_STREAM_KEY", SET_STRING, OFF(stream_key), 0, 0, NULL,
     "firehose:events"},
    {"consumer_group", "REDIS_CONSUMER_GROUP", SET_STRING, OFF(consumer_group),
     0, 0, NULL, "firehose-processors"},
    {"consumer_id", "CONSUMER_ID", SET_STRING, OFF(consumer_id), 0, 0, NULL,
     ""},
    {"group_start_id", NULL, SET_STRING, OFF(group_start_id), 0, 0, NULL, "0"},
    {"dead_letter_stream", NULL, SET_STRING, OFF(dead_letter_stream), 0, 0,
     NULL, ""},
    {"stream_maxlen", NULL, SET_LONG, OFF(stream_maxlen), 0, LONG_MAX, NULL,
     "500000"},
    {"parallel_consumers", "PARALLEL_CONSUMERS", SET_INT,
     OFF(parallel_consumers), 1, 64, NULL, "5"},
    {"db_pool_size", "DB_POOL_SIZE", SET_INT, OFF(db_pool_size), 1, 1000, NULL,
     "10"},
    {"batch_size", "BATCH_SIZE", SET_INT, OFF(batch_size), 1, 100000, NULL,
     "500"},
    {"batch_timeout_ms", NULL, SET_DURATION, OFF(batch_timeout_ms), 1, HOUR_MS,
     NULL, "20"},
    {"block_ms", NULL, SET_DURATION, OFF(block_ms), 1, HOUR_MS, NULL, "1000"},
    {"claim_idle_ms", NULL, SET_DURATION, OFF(claim_idle_ms), 100, 24 * HOUR_MS,
     NULL, "60000"},
    {"claim_interval_ms", NULL, SET_DURATION, OFF(claim_interval_ms), 10,
     HOUR_MS, NULL, "10000"},
    {"max_deliveries", NULL, SET_INT, OFF(max_deliveries), 1, 1000000, NULL,
     "5"},
    {"reconnect_delay_ms", NULL, SET_DURATION, OFF(reconnect_delay_ms), 1,
     HOUR_MS, NULL, "100"},
    {"reconnect_delay_max_ms", NULL, SET_DURATION, OFF(reconnect_delay_max_ms),
     1, HOUR_MS, NULL, "30000"},
    {"redis_timeout_ms", NULL, SET_DURATION, OFF(redis_timeout_ms), 100,
     HOUR_MS, NULL, "5000"},
    {"sink", NULL, SET_CHOICE, OFF(sink), 0, 0,
     "atproto|raw|function|table|plugin", "atproto"},
    {"input_format", NULL, SET_CHOICE, OFF(input_format), 0, 0,
     "stream|jetstream", "stream"},
    {"counter_fold_ms", NULL, SET_DURATION, OFF(counter_fold_ms), 10, HOUR_MS,
     NULL, "1000"},
    {"raw_table", NULL, SET_STRING, OFF(raw_table), 0, 0, NULL, "events"},
    {"function", NULL, SET_STRING, OFF(function), 0, 0, NULL, ""},
    {"table", NULL, SET_STRING, OFF(table), 0, 0, NULL, ""},
    {"table_key", NULL, SET_STRING, OFF(table_key), 0, 0, NULL, ""},
    {"table_on_conflict", NULL, SET_CHOICE, OFF(table_on_conflict), 0, 0,
     "nothing|update", "nothing"},
    {"table_create", NULL, SET_CHOICE, OFF(table_create), 0, 0, "no|yes", "no"},
    {"plugin", NULL, SET_STRING, OFF(plugin), 0, 0, NULL, ""},
    {"shards", NULL, SET_INT, OFF(shards), 1, 256, NULL, "1"},
    {"raw_type_field", NULL, SET_STRING, OFF(raw_type_field), 0, 0, NULL,
     "type"},
    {"relay_url", "RELAY_URL", SET_STRING, OFF(relay_url), 0, 0, NULL, ""},
    {"cursor_key", "REDIS_CURSOR_KEY", SET_STRING, OFF(cursor_key), 0, 0, NULL,
     "firehose:python_cursor"},
    {"stream_trim", NULL, SET_CHOICE, OFF(stream_trim), 0, 0, "acked|maxlen",
     "acked"},
    {"firehose_max_frame", NULL, SET_LONG, OFF(firehose_max_frame), 1024,
     1L << 30, NULL, "5242880"},
    {"firehose_max_block", NULL, SET_LONG, OFF(firehose_max_block), 1024,
     1L << 30, NULL, "1048576"},
    {"firehose_max_items", NULL, SET_LONG, OFF(firehose_max_items), 16,
     1L << 30, NULL, "100000"},
    {"firehose_max_depth", NULL, SET_INT, OFF(firehose_max_depth), 4, 1000,
     NULL, "32"},
    {"relay_idle_timeout_ms", NULL, SET_DURATION, OFF(relay_idle_timeout_ms),
     1000, 24 * HOUR_MS, NULL, "60000"},
    {"worker_timeout_ms", NULL, SET_DURATION, OFF(worker_timeout_ms), 1000,
     24 * HOUR_MS, NULL, "60000"},
    {"shutdown_timeout_ms", NULL, SET_DURATION, OFF(shutdown_timeout_ms), 100,
     HOUR_MS, NULL, "30000"},
    {"restart_delay_ms", NULL, SET_DURATION, OFF(restart_delay_ms), 10, HOUR_MS,
     NULL, "1000"},
    {"restart_delay_max_ms", NULL, SET_DURATION, OFF(restart_delay_max_ms), 10,
     HOUR_MS, NULL, "60000"},
    {"stats_interval_ms", NULL, SET_DURATION, OFF(stats_interval_ms), 0,
     24 * HOUR_MS, NULL, "10000"},
    {"pidfile", NULL, SET_STRING, OFF(pidfile), 0, 0, NULL, ""},
    {"stats_name", NULL, SET_STRING, OFF(stats_name), 0, 0, NULL, ""},
    {"user", NULL, SET_STRING, OFF(user), 0, 0, NULL, ""},
    {"http_listen", NULL, SET_STRING, OFF(http_listen), 0, 0, NULL, ""},
    {"ready_max_lag", NULL, SET_LONG, OFF(ready_max_lag), 0, LONG_MAX, NULL,
     "100000"},
    {"ready_max_idle_ms", NULL, SET_DURATION, OFF(ready_max_idle_ms), 100,
     24 * HOUR_MS, NULL, "60000"},
    {"log_level", "LOG_LEVEL", SET_LEVEL, OFF(log_level), 0, 0, NULL, "info"},
    {"log_target", NULL, SET_STRING, OFF(log_target), 0, 0, NULL, "stderr"},
};

#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))
_Static_assert(NSETTINGS <= CONFIG_KEYS_MAX,
               "CONFIG_KEYS_MAX is smaller than the settings table");

static const struct setting *
setting_find(const char *key, size_t keylen)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (strlen(settings[i].key) == keylen &&
            strncmp(settings[i].key, key, keylen) == 0)
            return &settings[i];
    return NULL;
}

/* The keys of the form PREFIX.NAME, each kind a list in struct config. */
struct pair_kind {
    const char *prefix; /* with its dot */
    size_t list, count; /* offsets of the array and of its count */
};

static const struct pair_kind pair_kinds[] = {
    {"column.", offsetof(struct config, columns),
     offsetof(struct config, ncolumns)},
    {"plugin.", offsetof(struct config, plugin_options),
     offsetof(struct config, nplugin_options)},
};

#define NPAIR_KINDS (sizeof(pair_kinds) / sizeof(pair_kinds[0]))

static const struct pair_kind *
pair_kind_find(const char *key, size_t keylen)
{
    for (size_t i = 0; i < NPAIR_KINDS; i++) {
        size_t n = strlen(pair_kinds[i].prefix);
        if (keylen > n && strncmp(key, pair_kinds[i].prefix, n) == 0)
            return &pair_kinds[i];
    }
    return NULL;
}

/* Format "WHERE: KEY: message" into err. Returns -1 for the caller. */
static int __attribute__((format(printf, 5, 6)))
config_error(char *err, size_t errlen, const char *where, const char *key,
             const char *fmt, ...)
{
    char msg[CONFIG_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(err, errlen, "%s: %s: %s", where, key, msg);
    return -1;
}

/*
 * Parse a duration in milliseconds: digits with an optional unit (ms, s,
 * m, h; none = ms). Returns 0, or -1 when it is not one.
 */
static int
parse_duration(const char *text, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (end == text || errno != 0 || v < 0 || !isdigit((unsigned char)text[0]))
        return -1;
    long mul;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
        mul = 60 * 1000;
    else if (strcmp(end, "h") == 0)
        mul = HOUR_MS;
    else
        return -1;
    if (v > LONG_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

/* Parse a whole decimal number (an optional '-' then digits). */
static int
parse_number(const char *text, long *out)
{
    char *end;
    const char *p = text[0] == '-' ? text + 1 : text;
    if (!isdigit((unsigned char)p[0]))
        return -1;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (*end != '\0' || errno != 0)
        return -1;
    *out = v;
    return 0;
}

/*
 * Add PREFIX.NAME = value to its list (line: where it was read, 0 for the
 * command line). A name set twice is an error, as for the other keys.
 */
static int
pair_add(struct config *cfg, const struct pair_kind *k, const char *key,
         const char *value, unsigned line, const char *where, char *err,
         size_t errlen)
{
    struct config_pair *list = (void *)((char *)cfg + k->list);
    int *count = (void *)((char *)cfg + k->count);
    const char *name = key + strlen(k->prefix);

    if (strlen(name) >= sizeof(list->name))
        return config_error(err, errlen, where, key,
                            "name too long (at most %zu bytes)",
                            sizeof(list->name) - 1);
    for (const char *p = name; *p; p++)
        if (iscntrl((unsigned char)*p) || *p == ' ')
            return config_error(err, errlen, where, key,
                                "blank or control character in the name");
    if (value[0] == '\0')
        return config_error(err, errlen, where, key, "empty");
    if (strlen(value) >= sizeof(list->value))
        return config_error(err, errlen, where, key,
                            "too long (at most %zu bytes)",
                            sizeof(list->value) - 1);
    for (const char *p = value; *p; p++)
        if (iscntrl((unsigned char)*p))
            return config_error(err, errlen, where, key,
                                "control character in the value");
    for (int i = 0; i < *count; i++)
        if (strcmp(list[i].name, name) == 0) {
            if (list[i].line != 0 && line != 0)
                return config_error(err, errlen, where, key,
                                    "set twice (first on line %u)",
                                    list[i].line);
            /* the command line overrides the file */
            strlcpy(list[i].value, value, sizeof(list[i].value));
            list[i].line = line;
            return 0;
        }
    if (*count == CONFIG_MAP_MAX)
        return config_error(err, errlen, where, key, "more than %d %s keys",
                            CONFIG_MAP_MAX, k->prefix);
    strlcpy(list[*count].name, name, sizeof(list->name));
    strlcpy(list[*count].value, value, sizeof(list->value));
    list[*count].line = line;
    (*count)++;
    return 0;
}

const char *
config_key_where(const struct config *cfg, const char *key, char *buf,
                 size_t buflen)
{
    const struct setting *s = setting_find(key, strlen(key));
    unsigned at = s != NULL ? cfg->set_at[s - settings] : CONFIG_FROM_DEFAULT;

    if (at == CONFIG_FROM_ENV)
        snprintf(buf, buflen, "environment");
    else if (at == CONFIG_FROM_OPTION)
        snprintf(buf, buflen, "command line");
    else if (at == CONFIG_FROM_DEFAULT || cfg->file[0] == '\0')
        snprintf(buf, buflen, "default");
    else
        snprintf(buf, buflen, "%s:%u", cfg->file, at);
    return buf;
}

const char *
config_pair_where(const struct config *cfg, const struct config_pair *p,
                  char *buf, size_t buflen)
{
    if (p->line == 0 || cfg->file[0] == '\0')
        snprintf(buf, buflen, "command line");
    else
        snprintf(buf, buflen, "%s:%u", cfg->file, p->line);
    return buf;
}

/* Set one setting from its text. where names the source for errors. */
static int
setting_apply(struct config *cfg, const struct setting *s, const char *value,
              const char *where, const char *name, char *err, size_t errlen)
{
    char *field = (char *)cfg + s->offset;
    long v;

    switch (s->type) {
    case SET_URL:
    case SET_STRING:
        if (strlen(value) >= s->size)
            return config_error(err, errlen, where, name,
                                "too long (at most %zu bytes)", s->size - 1);
        for (const char *p = value; *p; p++)
            if (iscntrl((unsigned char)*p))
                return config_error(err, errlen, where, name,
                                    "control character in the value");
        memcpy(field, value, strlen(value) + 1);
        return 0;
    case SET_CHOICE: {
        size_t n = strlen(value);
        const char *c = s->choices;
        while (n > 0 && *c) {
            size_t len = strcspn(c, "|");
            if (len == n && strncmp(c, value, n) == 0) {
                memcpy(field, value, n + 1);
                return 0;
            }
            c += len + (c[len] == '|');
        }
        return config_error(err, errlen, where, name, "'%s' is not one of %s",
                            value, s->choices);
    }
    case SET_LEVEL:
        if (log_level_parse(value, (enum log_level *)(void *)field) < 0)
            return config_error(err, errlen, where, name,
                                "'%s' is not one of "
                                "debug|info|notice|warn|error",
                                value);
        return 0;
    case SET_DURATION:
        if (parse_duration(value, &v) < 0)
            return config_error(err, errlen, where, name,
                                "not a duration: '%s' (a number of "
                                "milliseconds, or with ms, s, m or h)",
                                value);
        if (v < s->min || v > s->max)
            return config_error(err, errlen, where, name,
                                "%ld ms is out of range (%ld..%ld ms)", v,
                                s->min, s->max);
        *(long *)(void *)field = v;
        return 0;
    case SET_INT:
    case SET_LONG:
        if (parse_number(value, &v) < 0)
            return config_error(err, errlen, where, name, "not a number: '%s'",
                                value);
        if (v < s->min || v > s->max)
            return config_error(err, errlen, where, name,
                                "%ld is out of range (%ld..%ld)", v, s->min,
                                s->max);
        if (s->type == SET_INT)
            *(int *)(void *)field = (int)v;
        else
            *(long *)(void *)field = v;
        return 0;
    }
    return config_error(err, errlen, where, name, "unknown setting type");
}

void
config_defaults(struct config *cfg)
{
    char err[CONFIG_ERR_MAX];
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NSETTINGS; i++)
        if (setting_apply(cfg, &settings[i], settings[i].def, "default",
                          settings[i].key, err, sizeof(err)) < 0) {
            /* A bad default is a programming error the unit test shows. */
            fprintf(stderr, "sluice: %s\n", err);
            abort();
        }
    /* The consumer name prefix defaults to the short host name, as the old
     * workers' did. */
    char host[256];
    if (gethostname(host, sizeof(host)) == 0) {
        host[sizeof(host) - 1] = '\0';
        host[strcspn(host, ".")] = '\0';
    }
    if (host[0] == '\0')
        strcpy(host, "sluice");
    snprintf(cfg->consumer_id, sizeof(cfg->consumer_id), "%s", host);
}

/* Trim blanks at both ends in place; returns the start. */
static char *
trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

/*
 * Split "key = value" (the line is modified). A value in double quotes
 * loses them. Returns 0, or -1 with a reason in *why.
 */
static int
split_assignment(char *line, char **key, char **value, const char **why)
{
    char *eq = strchr(line, '=');
    if (eq == NULL) {
        *why = "expected 'key = value'";
        return -1;
    }
    *eq = '\0';
    *key = trim(line);
    *value = trim(eq + 1);
    if ((*key)[0] == '\0') {
        *why = "no key before '='";
        return -1;
    }
    size_t n = strlen(*value);
    if ((*value)[0] == '"') {
        if (n < 2 || (*value)[n - 1] != '"') {
            *why = "unterminated quoted value";
            return -1;
        }
        (*value)[n - 1] = '\0';
        (*value)++;
    }
    return 0;
}

/* The settings of the whole supervisor: refused inside a [pipeline]
 * section (one pidfile, one segment, one log, one reader). */
static const char *const global_keys[] = {
    "pidfile",
    "stats_name",
    "user",
    "http_listen",
    "log_level",
    "log_target",
    "relay_url",
    "cursor_key",
    "stream_trim",
    "firehose_max_frame",
    "firehose_max_block",
    "firehose_max_items",
    "firehose_max_depth",
    "relay_idle_timeout_ms",
    "stats_interval_ms",
    "shutdown_timeout_ms",
};

int
config_key_is_global(const char *key)
{
    for (size_t i = 0; i < sizeof(global_keys) / sizeof(global_keys[0]); i++)
        if (strcmp(global_keys[i], key) == 0)
            return 1;
    return 0;
}

/*
 * A section line "[pipeline NAME]" (the line trimmed, modified): 1 with
 * *name set, 0 when the line is no section, -1 with *why when it is a
 * malformed one.
 */
static int
section_header(char *p, char **name, const char **why)
{
    size_t n = strlen(p);

    if (p[0] != '[')
        return 0;
    if (n < 2 || p[n - 1] != ']') {
        *why = "a section is written [pipeline NAME]";
        return -1;
    }
    p[n - 1] = '\0';
    p = trim(p + 1);
    if (strncmp(p, "pipeline", 8) != 0 || (p[8] != ' ' && p[8] != '\t')) {
        *why = "the only section is [pipeline NAME]";
        return -1;
    }
    p = trim(p + 8);
    if (p[0] == '\0' || strlen(p) > CONFIG_PIPELINE_NAME_MAX) {
        *why = "a pipeline's name is 1 to 48 letters, digits, '_' or '-'";
        return -1;
    }
    for (const char *q = p; *q; q++)
        if (!isalnum((unsigned char)*q) && *q != '_' && *q != '-') {
            *why = "a pipeline's name is 1 to 48 letters, digits, '_' or '-'";
            return -1;
        }
    *name = p;
    return 1;
}

/*
 * Read path over cfg: the lines before the first section when section is
 * NULL, else only those of [pipeline section] (global keys refused
 * there). When names is not NULL it receives the sections' names in file
 * order (at most max; *nnames their count). Same error contract as
 * config_load_file().
 */
static int
config_read(struct config *cfg, const char *path, const char *section,
            char (*names)[CONFIG_PIPELINE_NAME_MAX + 1], int max, int *nnames,
            char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    strlcpy(cfg->file, path, sizeof(cfg->file));
    char line[4096], where[PATH_MAX + 32];
    unsigned seen_at[NSETTINGS] = {0};
    unsigned lineno = 0;
    int rc = 0, mine = section == NULL, nsections = 0;

    if (nnames != NULL)
        *nnames = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        snprintf(where, sizeof(where), "%s:%u", path, lineno);
        size_t len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n' && !feof(f)) {
            snprintf(err, errlen, "%s: line too long", where);
            rc = -1;
            break;
        }
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        char *p = trim(line), *key, *value, *name;
        const char *why;
        if (p[0] == '\0' || p[0] == '#')
            continue;
        int sec = section_header(p, &name, &why);
        if (sec < 0) {
            snprintf(err, errlen, "%s: %s", where, why);
            rc = -1;
            break;
        }
        if (sec > 0) {
            if (names != NULL) {
                for (int i = 0; i < *nnames; i++)
                    if (strcmp(names[i], name) == 0) {
                        snprintf(err, errlen,
                                 "%s: [pipeline %s]: a second section of "
                                 "that name",
                                 where, name);
                        rc = -1;
                        break;
                    }
                if (rc < 0)
                    break;
                if (*nnames == max) {
                    snprintf(err, errlen, "%s: more than %d pipelines", where,
                             max);
                    rc = -1;
                    break;
                }
                strlcpy(names[(*nnames)++], name, sizeof(names[0]));
            }
            nsections++;
            mine = section != NULL && strcmp(section, name) == 0;
            memset(seen_at, 0, sizeof(seen_at));
            continue;
        }
        if (!mine)
            continue;
        if (split_assignment(p, &key, &value, &why) < 0) {
            snprintf(err, errlen, "%s: %s", where, why);
            rc = -1;
            break;
        }
        const struct setting *s = setting_find(key, strlen(key));
        const struct pair_kind *pk;
        if (s == NULL && (pk = pair_kind_find(key, strlen(key))) != NULL) {
            if (pair_add(cfg, pk, key, value, lineno, where, err, errlen) < 0) {
                rc = -1;
                break;
            }
            continue;
        }
        if (s == NULL) {
            rc = config_error(err, errlen, where, key, "unknown setting");
            break;
        }
        if (section != NULL && config_key_is_global(key)) {
            rc = config_error(err, errlen, where, key,
                              "a setting of the whole supervisor: set it "
                              "before the first [pipeline] section");
            break;
        }
        size_t idx = (size_t)(s - settings);
        if (seen_at[idx] != 0) {
            rc = config_error(err, errlen, where, key,
                              "set twice (first on line %u)", seen_at[idx]);
            break;
        }
        seen_at[idx] = lineno;
        if (setting_apply(cfg, s, value, where, key, err, errlen) < 0) {
            rc = -1;
            break;
        }
        cfg->set_at[idx] = lineno;
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = -1;
    }
    fclose(f);
    return rc;
}

int
config_load_file(struct config *cfg, const char *path, char *err, size_t errlen)
{
    return config_read(cfg, path, NULL, NULL, 0, NULL, err, errlen);
}

int
config_load_section(struct config *cfg, const char *path, const char *name,
                    char *err, size_t errlen)
{
    return config_read(cfg, path, name, NULL, 0, NULL, err, errlen);
}

int
config_sections(const char *path, char (*names)[CONFIG_PIPELINE_NAME_MAX + 1],
                int max, int *n, char *err, size_t errlen)
{
    static struct config scratch; /* large: not on the stack */

    config_defaults(&scratch);
    return config_read(&scratch, path, NULL, names, max, n, err, errlen);
}

int
config_load_env(struct config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < NSETTINGS; i++) {
        const struct setting *s = &settings[i];
        char name[128];
        /* SLUICE_<KEY> first, then the old workers' name, which wins. */
        snprintf(name, sizeof(name), "SLUICE_%s", s->key);
        for (char *p = name; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        const char *names[2] = {name, s->env};
        for (int k = 0; k < 2; k++) {
            const char *value;
            if (names[k] == NULL || (value = getenv(names[k])) == NULL)
                continue;
            if (setting_apply(cfg, s, value, "environment", names[k], err,
                              errlen) < 0)
                return -1;
            cfg->set_at[i] = CONFIG_FROM_ENV;
        }
    }
    return 0;
}

int
config_set_option(struct config *cfg, const char *keyvalue, char *err,
                  size_t errlen)
{
    const char *eq = strchr(keyvalue, '=');
    if (eq == NULL) {
        snprintf(err, errlen, "command line: '%s': expected key=value",
                 keyvalue);
        return -1;
    }
    char key[128];
    size_t keylen = (size_t)(eq - keyvalue);
    snprintf(key, sizeof(key), "%.*s", (int)keylen, keyvalue);
    const struct setting *s = setting_find(keyvalue, keylen);
    const struct pair_kind *pk;
    if (s == NULL && keylen < sizeof(key) &&
        (pk = pair_kind_find(keyvalue, keylen)) != NULL)
        return pair_add(cfg, pk, key, eq + 1, 0, "command line", err, errlen);
    if (s == NULL)
        return config_error(err, errlen, "command line", key,
                            "unknown setting");
    if (setting_apply(cfg, s, eq + 1, "command line", key, err, errlen) < 0)
        return -1;
    cfg->set_at[s - settings] = CONFIG_FROM_OPTION;
    return 0;
}

/* 1 if s is a plain or schema-qualified SQL identifier we can use
 * unquoted. */
static int
sql_name_ok(const char *s)
{
    int parts = 0;
    for (;;) {
        if (!(isalpha((unsigned char)*s) || *s == '_'))
            return 0;
        while (isalnum((unsigned char)*s) || *s == '_')
            s++;
        parts++;
        if (*s == '\0')
            return 1;
        if (*s != '.' || parts == 2)
            return 0;
        s++;
    }
}

/* 1 if id is a valid stream ID to start a group at: "0", "$", "MS" or
 * "MS-SEQ". */
static int
stream_id_ok(const char *id)
{
    if (strcmp(id, "$") == 0)
        return 1;
    const char *p = id;
    if (!isdigit((unsigned char)*p))
        return 0;
    while (isdigit((unsigned char)*p))
        p++;
    if (*p == '\0')
        return 1;
    if (*p++ != '-' || !isdigit((unsigned char)*p))
        return 0;
    while (isdigit((unsigned char)*p))
        p++;
    return *p == '\0';
}

void
config_copy_firehose(struct config *dst, const struct config *src)
{
    memcpy(dst->relay_url, src->relay_url, sizeof(dst->relay_url));
    memcpy(dst->cursor_key, src->cursor_key, sizeof(dst->cursor_key));
    memcpy(dst->stream_trim, src->stream_trim, sizeof(dst->stream_trim));
    dst->firehose_max_frame = src->firehose_max_frame;
    dst->firehose_max_block = src->firehose_max_block;
    dst->firehose_max_items = src->firehose_max_items;
    dst->firehose_max_depth = src->firehose_max_depth;
    dst->relay_idle_timeout_ms = src->relay_idle_timeout_ms;
}

int
config_firehose_equal(const struct config *a, const struct config *b)
{
    static struct config x; /* large: not on the stack */

    x = *a;
    config_copy_firehose(&x, b);
    return config_same(&x, a);
}

int
config_same(const struct config *a, const struct config *b)
{
    static struct config x; /* large: not on the stack */

    /* where the values came from is no change: b's copy with a's */
    x = *b;
    memcpy(x.file, a->file, sizeof(x.file));
    memcpy(x.set_at, a->set_at, sizeof(x.set_at));
    for (int i = 0; i < CONFIG_MAP_MAX; i++) {
        x.columns[i].line = a->columns[i].line;
        x.plugin_options[i].line = a->plugin_options[i].line;
    }
    return memcmp(&x, a, sizeof(x)) == 0;
}

/* Every cross-field check but the ones that depend on the role. */
static int
validate_common(const struct config *cfg, char *err, size_t errlen)
{
    const char *where = "configuration";
    if (cfg->redis_url[0] == '\0')
        return config_error(err, errlen, where, "redis_url", "empty");
    if (cfg->stream_key[0] == '\0')
        return config_error(err, errlen, where, "stream_key", "empty");
    if (cfg->consumer_group[0] == '\0')
        return config_error(err, errlen, where, "consumer_group", "empty");
    if (cfg->consumer_id[0] == '\0')
        return config_error(err, errlen, where, "consumer_id", "empty");
    if (strpbrk(cfg->consumer_id, " \t") != NULL)
        return config_error(err, errlen, where, "consumer_id",
                            "must not contain blanks");
    if (!stream_id_ok(cfg->group_start_id))
        return config_error(err, errlen, where, "group_start_id",
                            "'%s' is not a stream ID (0, $, MS or MS-SEQ)",
                            cfg->group_start_id);
    if (strcmp(cfg->dead_letter_stream, cfg->stream_key) == 0)
        return config_error(err, errlen, where, "dead_letter_stream",
                            "must differ from stream_key");
    if (cfg->parallel_consumers > cfg->db_pool_size)
        return config_error(err, errlen, where, "parallel_consumers",
                            "%d workers need %d PostgreSQL connections, "
                            "more than db_pool_size (%d)",
                            cfg->parallel_consumers, cfg->parallel_consumers,
                            cfg->db_pool_size);
    if (cfg->reconnect_delay_max_ms < cfg->reconnect_delay_ms)
        return config_error(err, errlen, where, "reconnect_delay_max_ms",
                            "less than reconnect_delay_ms (%ld)",
                            cfg->reconnect_delay_ms);
    if (cfg->restart_delay_max_ms < cfg->restart_delay_ms)
        return config_error(err, errlen, where, "restart_delay_max_ms",
                            "less than restart_delay_ms (%ld)",
                            cfg->restart_delay_ms);
    if (!sql_name_ok(cfg->raw_table))
        return config_error(err, errlen, where, "raw_table",
                            "'%s' is not a table name ([schema.]name of "
                            "letters, digits and _)",
                            cfg->raw_table);
    if (cfg->raw_type_field[0] == '\0')
        return config_error(err, errlen, where, "raw_type_field", "empty");
    if (strcmp(cfg->sink, "function") == 0 && cfg->function[0] == '\0')
        return config_error(err, errlen, where, "function",
                            "required by sink = function");
    if (cfg->function[0] != '\0' && !sql_name_ok(cfg->function))
        return config_error(err, errlen, where, "function",
                            "'%s' is not a function name ([schema.]name of "
                            "letters, digits and _)",
                            cfg->function);
    if (strcmp(cfg->sink, "table") == 0) {
        if (cfg->table[0] == '\0')
            return config_error(err, errlen, where, "table",
                                "required by sink = table");
        if (cfg->table_key[0] == '\0')
            return config_error(err, errlen, where, "table_key",
                                "required by sink = table (the columns "
                                "that make a row unique, for ON CONFLICT)");
        if (cfg->ncolumns == 0)
            return config_error(err, errlen, where, "column.NAME",
                                "sink = table needs at least one column "
                                "mapping (column.NAME = SOURCE)");
    }
    if (cfg->table[0] != '\0' && !sql_name_ok(cfg->table))
        return config_error(err, errlen, where, "table",
                            "'%s' is not a table name ([schema.]name of "
                            "letters, digits and _)",
                            cfg->table);
    if (strcmp(cfg->sink, "plugin") == 0 && cfg->plugin[0] != '/')
        return config_error(err, errlen, where, "plugin",
                            cfg->plugin[0] == '\0'
                                ? "required by sink = plugin"
                                : "must be an absolute path");
    if (cfg->relay_url[0] != '\0' && strncmp(cfg->relay_url, "ws://", 5) != 0 &&
        strncmp(cfg->relay_url, "wss://", 6) != 0)
        return config_error(err, errlen, where, "relay_url",
                            "'%s' is not a ws:// or wss:// URL",
                            cfg->relay_url);
    if (cfg->relay_url[0] != '\0' && cfg->cursor_key[0] == '\0')
        return config_error(err, errlen, where, "cursor_key", "empty");
    if (cfg->firehose_max_block > cfg->firehose_max_frame)
        return config_error(err, errlen, where, "firehose_max_block",
                            "larger than firehose_max_frame (%ld)",
                            cfg->firehose_max_frame);
    if (strcmp(cfg->log_target, "stderr") != 0 &&
        strcmp(cfg->log_target, "syslog") != 0 && cfg->log_target[0] != '/')
        return config_error(err, errlen, where, "log_target",
                            "'%s' is not stderr, syslog or an absolute path",
                            cfg->log_target);
    if (cfg->http_listen[0] != '\0' && cfg->http_listen[0] != '/') {
        const char *colon = strrchr(cfg->http_listen, ':');
        char *end;
        long port = colon != NULL ? strtol(colon + 1, &end, 10) : 0;
        if (colon == NULL || colon == cfg->http_listen ||
            !isdigit((unsigned char)colon[1]) || *end != '\0' || port < 1 ||
            port > 65535)
            return config_error(err, errlen, where, "http_listen",
                                "'%s' is not host:port or an absolute path",
                                cfg->http_listen);
    }
    if (cfg->stats_name[0] != '\0' &&
        (cfg->stats_name[0] != '/' || strchr(cfg->stats_name + 1, '/')))
        return config_error(err, errlen, where, "stats_name",
                            "'%s' must be '/' followed by a name without '/'",
                            cfg->stats_name);
    return 0;
}

int
config_validate(const struct config *cfg, char *err, size_t errlen)
{
    if (cfg->database_url[0] == '\0')
        return config_error(err, errlen, "configuration", "database_url",
                            "required (or DATABASE_URL in the environment)");
    return validate_common(cfg, err, errlen);
}

/* The defaults, the file, the environment and the options, unchecked. */
int
config_load_unchecked(struct config *cfg, const char *path,
                      char *const *options, int noptions, char *err,
                      size_t errlen)
{
    config_defaults(cfg);
    if (path != NULL && config_load_file(cfg, path, err, errlen) < 0)
        return -1;
    if (config_load_env(cfg, err, errlen) < 0)
        return -1;
    for (int i = 0; i < noptions; i++)
        if (config_set_option(cfg, options[i], err, errlen) < 0)
            return -1;
    return 0;
}

int
config_load(struct config *cfg, const char *path, char *const *options,
            int noptions, char *err, size_t errlen)
{
    if (config_load_unchecked(cfg, path, options, noptions, err, errlen) < 0)
        return -1;
    return config_validate(cfg, err, errlen);
}

int
config_load_reader(struct config *cfg, const char *path, char *const *options,
                   int noptions, char *err, size_t errlen)
{
    if (config_load_unchecked(cfg, path, options, noptions, err, errlen) < 0)
        return -1;
    if (cfg->relay_url[0] == '\0')
        return config_error(err, errlen, "configuration", "relay_url",
                            "required by --firehose (or RELAY_URL in the "
                            "environment)");
    return validate_common(cfg, err, errlen);
}

const char *
config_dead_letter_stream(const struct config *cfg, char *buf, size_t buflen)
{
    if (cfg->dead_letter_stream[0] != '\0')
        return cfg->dead_letter_stream;
    snprintf(buf, buflen, "%s:dead", cfg->stream_key);
    return buf;
}

const char *
config_stats_name(const struct config *cfg, char *buf, size_t buflen)
{
    if (cfg->stats_name[0] != '\0') {
        snprintf(buf, buflen, "%s", cfg->stats_name);
        return buf;
    }
    /* "/sluice.<stream>.<group>", '/' and control characters replaced; a
     * name too long for shm_open (NAME_MAX) is cut and made unique again
     * with a hash of the whole. */
    char name[1200];
    snprintf(name, sizeof(name), "/sluice.%s.%s", cfg->stream_key,
             cfg->consumer_group);
    for (char *p = name + 1; *p; p++)
        if (*p == '/' || iscntrl((unsigned char)*p))
            *p = '_';
    if (strlen(name) > 200) {
        uint64_t h = 1469598103934665603ULL; /* FNV-1a */
        for (const char *p = name; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ULL;
        snprintf(name + 180, sizeof(name) - 180, ".%016llx",
                 (unsigned long long)h);
    }
    snprintf(buf, buflen, "%s", name);
    return buf;
}

/* Copy n bytes of src then "***" into the output, within bounds. */
static size_t
append(char *buf, size_t buflen, size_t at, const char *src, size_t n)
{
    for (size_t i = 0; i < n && at + 1 < buflen; i++)
        buf[at++] = src[i];
    if (buflen > 0)
        buf[at < buflen ? at : buflen - 1] = '\0';
    return at;
}

/* Redact password=VALUE in a conninfo string or a query string. */
static size_t
redact_password_params(const char *s, char *buf, size_t buflen, size_t at)
{
    static const char key[] = "password";
    while (*s) {
        const char *hit = strstr(s, key);
        if (hit == NULL)
            break;
        const char *after = hit + sizeof(key) - 1;
        while (*after == ' ')
            after++;
        int starts =
            hit == s || hit[-1] == ' ' || hit[-1] == '?' || hit[-1] == '&';
        if (!starts || *after != '=') {
            at = append(buf, buflen, at, s, (size_t)(after - s));
            s = after;
            continue;
        }
        after++;
        while (*after == ' ')
            after++;
        at = append(buf, buflen, at, s, (size_t)(after - s));
        at = append(buf, buflen, at, "***", 3);
        /* Skip the value: quoted (conninfo) or up to a separator. */
        if (*after == '\'') {
            after++;
            while (*after && *after != '\'') {
                if (*after == '\\' && after[1])
                    after++;
                after++;
            }
            if (*after)
                after++;
        } else {
            while (*after && *after != ' ' && *after != '&')
                after++;
        }
        s = after;
    }
    return append(buf, buflen, at, s, strlen(s));
}

const char *
config_redact_url(const char *url, char *buf, size_t buflen)
{
    size_t at = 0;
    if (buflen == 0)
        return buf;
    buf[0] = '\0';
    const char *scheme_end = strstr(url, "://");
    if (scheme_end == NULL)
        return (void)redact_password_params(url, buf, buflen, 0), buf;

    const char *auth = scheme_end + 3;
    size_t authlen = strcspn(auth, "/?#");
    const char *at_sign = NULL;
    for (const char *p = auth; p < auth + authlen; p++)
        if (*p == '@')
            at_sign = p; /* the last '@' ends the user information */
    at = append(buf, buflen, at, url, (size_t)(auth - url));
    if (at_sign != NULL) {
        const char *colon = memchr(auth, ':', (size_t)(at_sign - auth));
        int is_redis = strncmp(url, "postgres", 8) != 0;
        if (colon != NULL) {
            at = append(buf, buflen, at, auth, (size_t)(colon + 1 - auth));
            at = append(buf, buflen, at, "***", 3);
        } else if (is_redis) {
            /* redis://secret@host: a lone user part is the password to
             * Redis clients (PostgreSQL's is a user name); hide it. */
            at = append(buf, buflen, at, "***", 3);
        } else {
            at = append(buf, buflen, at, auth, (size_t)(at_sign - auth));
        }
        auth = at_sign;
    }
    redact_password_params(auth, buf, buflen, at);
    return buf;
}

void
config_print(const struct config *cfg, FILE *out)
{
    char buf[CONFIG_STR_MAX + 64];
    for (size_t i = 0; i < NSETTINGS; i++) {
        const struct setting *s = &settings[i];
        const char *field = (const char *)cfg + s->offset;
        switch (s->type) {
        case SET_URL:
            fprintf(out, "%s = %s\n", s->key,
                    config_redact_url(field, buf, sizeof(buf)));
            break;
        case SET_STRING:
        case SET_CHOICE:
            if (field[0] == '\0' || field[0] == ' ' ||
                field[strlen(field) - 1] == ' ')
                fprintf(out, "%s = \"%s\"\n", s->key, field);
            else
                fprintf(out, "%s = %s\n", s->key, field);
            break;
        case SET_LEVEL:
            fprintf(
                out, "%s = %s\n", s->key,
                log_level_name(*(const enum log_level *)(const void *)field));
            break;
        case SET_DURATION:
        case SET_LONG:
            fprintf(out, "%s = %ld\n", s->key,
                    *(const long *)(const void *)field);
            break;
        case SET_INT:
            fprintf(out, "%s = %d\n", s->key,
                    *(const int *)(const void *)field);
            break;
        }
    }
    for (size_t k = 0; k < NPAIR_KINDS; k++) {
        const struct config_pair *list =
            (const void *)((const char *)cfg + pair_kinds[k].list);
        int count = *(const int *)(const void *)((const char *)cfg +
                                                 pair_kinds[k].count);
        for (int i = 0; i < count; i++)
            fprintf(out, "%s%s = %s\n", pair_kinds[k].prefix, list[i].name,
                    list[i].value);
    }
}

void
config_print_settings(FILE *out)
{
    static const char *const types[] = {
        [SET_STRING] = "string", [SET_INT] = "int",
        [SET_LONG] = "long",     [SET_DURATION] = "duration",
        [SET_LEVEL] = "level",   [SET_CHOICE] = "choice",
        [SET_URL] = "url",
    };
    for (size_t i = 0; i < NSETTINGS; i++) {
        const struct setting *s = &settings[i];
        fprintf(out, "%s\t%s\t%s\t", s->key, types[s->type], s->def);
        if (s->type == SET_INT || s->type == SET_LONG ||
            s->type == SET_DURATION)
            fprintf(out, "%ld..%ld", s->min, s->max);
        else if (s->type == SET_CHOICE)
            fputs(s->choices, out);
        else if (s->type == SET_LEVEL)
            for (int l = LOG_LEVEL_DEBUG; l <= LOG_LEVEL_ERROR; l++)
                fprintf(out, "%s%s", l ? "|" : "",
                        log_level_name((enum log_level)l));
        /* the old workers' name, when there is one, wins over SLUICE_ */
        fputc('\t', out);
        if (s->env != NULL)
            fprintf(out, "%s ", s->env);
        fputs("SLUICE_", out);
        for (const char *p = s->key; *p; p++)
            fputc(toupper((unsigned char)*p), out);
        fputc('\n', out);
    }
}
